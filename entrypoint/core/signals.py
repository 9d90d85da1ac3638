"""Which signals the runner handles and how: shutdown, reload, forwarded to the CMD; and
the signal dispositions and mask entrypoint was started with, which the CMD inherits."""

from __future__ import annotations

import signal

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# Ours: shutdown, reload (SIGHUP), the reaper (SIGCHLD), and the two no one can catch.
RESERVED_SIGNALS = frozenset((*SHUTDOWN_SIGNALS, signal.SIGHUP, signal.SIGCHLD,
                              signal.SIGKILL, signal.SIGSTOP))


def _cache_valid_signals() -> None:
    """asyncio checks each add/remove_signal_handler against `signal.valid_signals()`,
    which converts all ~65 signal numbers to enum members on every call. The runner
    installs and later removes 46 handlers (most for the real-time signals it forwards):
    6.3 ms with the stock function, 0.4 ms with this cache (measured, 2-core VM): ~3 ms
    of a shutdown that takes ~17 ms in all for 50 services. The set cannot change while
    the process lives, so compute it once (a fresh copy per call, as the stock one)."""
    if getattr(signal.valid_signals, "_entrypoint_cached", False):
        return
    valid = frozenset(signal.valid_signals())

    def valid_signals() -> set:
        return set(valid)

    valid_signals._entrypoint_cached = True
    valid_signals.__doc__ = signal.valid_signals.__doc__
    signal.valid_signals = valid_signals


_cache_valid_signals()
CATCHABLE = tuple(sorted(int(s) for s in signal.valid_signals()
                         if s not in (signal.SIGKILL, signal.SIGSTOP)))
# Every other signal goes to the CMD (CONTRACT §6): job control (the CMD owns the
# terminal; we never stop), the synchronous ones sent from outside (SEGV, ILL, ... would
# otherwise kill a runner that is not PID 1 and orphan the CMD), XCPU/XFSZ, real-time.
FORWARDED_SIGNALS = tuple(s for s in CATCHABLE if s not in RESERVED_SIGNALS)
# CPython sets these to SIG_IGN before any of our code runs: their true original
# disposition cannot be known; SIG_DFL is what nearly every parent leaves (and what
# Popen's restore_signals assumes).
_PYTHON_IGNORES = frozenset((signal.SIGPIPE, signal.SIGXFSZ))
# Raised by the kernel on a fault of our own, or sent by someone with kill(): the runner
# forwards only the latter, and keeps them blocked until its loop handles them.
SYNCHRONOUS = frozenset((signal.SIGILL, signal.SIGTRAP, signal.SIGABRT, signal.SIGBUS,
                         signal.SIGFPE, signal.SIGSEGV, signal.SIGSYS))
_PR_SET_CHILD_SUBREAPER = 36


class Original:
    """The dispositions and mask entrypoint was started with: what the CMD inherits."""

    ignored: frozenset[int] = frozenset()
    mask: frozenset[int] = frozenset()
    recorded = False


def record_original() -> None:
    """Note which signals were ignored and blocked at start, before any handler of ours.

    Call first thing. SIGINT: CPython installs its KeyboardInterrupt handler only when
    SIGINT was not ignored, so SIG_IGN here means our parent ignored it."""
    if Original.recorded:
        return
    Original.recorded = True
    ignored = set()
    for sig in CATCHABLE:
        if sig in _PYTHON_IGNORES:
            continue
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                ignored.add(sig)
        except (OSError, ValueError):
            pass
    Original.ignored = frozenset(ignored)
    Original.mask = frozenset(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, ()))


def child_sigdef() -> tuple[int, ...]:
    """Signals to reset to SIG_DFL in the CMD: all but those ignored at our start."""
    return tuple(s for s in CATCHABLE if s not in Original.ignored)


def restore_in_child() -> None:
    """In a forked child before exec: the dispositions and mask we were started with."""
    for sig in CATCHABLE:
        try:
            signal.signal(sig, signal.SIG_IGN if sig in Original.ignored else signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, Original.mask)


def become_subreaper() -> bool:
    """Not PID 1: ask the kernel to re-parent orphaned descendants to us instead."""
    try:
        import ctypes       # here: ~3 ms of import, paid only when not PID 1

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
