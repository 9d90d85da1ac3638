"""Which signals the runner handles and how: shutdown, reload, forwarded to the CMD."""

from __future__ import annotations

import ctypes
import signal

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


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
# Every other asynchronous signal goes to the CMD (as tini does). Several would otherwise
# kill a runner that is not PID 1 (PWR, VTALRM, PROF, IO, real-time), orphaning services.
# Not: job control (ignored, the CMD owns the terminal), synchronous faults, XCPU/XFSZ
# (about the runner's own limits), CHLD (the reaper).
FORWARDED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGWINCH,
                     signal.SIGPWR, signal.SIGURG, signal.SIGCONT, signal.SIGVTALRM,
                     signal.SIGPROF, signal.SIGIO,
                     *range(signal.SIGRTMIN, signal.SIGRTMAX + 1))
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Not PID 1: ask the kernel to re-parent orphaned descendants to us instead."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
