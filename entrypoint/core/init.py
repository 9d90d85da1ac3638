"""The plain init: a CMD and no services, as tini does it, in a small synchronous loop.

No asyncio, no config models, no output machinery: every catchable signal stays blocked
from the start of `cmd_run` and is taken one at a time with sigwaitinfo (a signal that
arrives during start-up waits, pending, instead of killing us or being lost). Shutdown
signals go to the CMD, then SIGKILL after the stop timeout or a second TERM/INT; every
other signal, SIGHUP included (there is no config to reload), goes to the CMD; SIGCHLD
reaps every zombie. When the CMD has ended, any process still left below us gets
SIGTERM, then SIGKILL, and we exit with the CMD's status (128+N if signal N ended it)
only once no child is left. Nothing of ours goes to stdout; warnings go to stderr.
"""

from __future__ import annotations

import os
import signal
import time

from entrypoint.core import cmd as cmd_mod
from entrypoint.core import signals

STOP_TIMEOUT = 15.0     # as the default service_shutdown_timeout, for the CMD


def block_signals() -> None:
    """Hold every catchable signal pending until `run` (or the runner) takes it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, signals.CATCHABLE)


def _warn(message: str) -> None:
    try:
        os.write(2, f"entrypoint: warning: {message}\n".encode("utf-8", "replace"))
    except OSError:
        pass


def _status(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


class PlainInit:
    def __init__(self, argv: list[str], environ: dict[str, str], stop_timeout: float):
        self.argv, self.environ, self.stop_timeout = argv, environ, stop_timeout
        self.pid: int | None = None        # the CMD, while it runs
        self.status: int | None = None     # its exit status, once reaped
        self.stopping = False
        self.forced = False                 # a second TERM/INT: no more grace for anyone
        self.deadline: float | None = None  # when the next escalation is due

    def run(self) -> int:
        # Blocked signals whose disposition is SIG_IGN are discarded by the kernel: CPython
        # ignores PIPE and XFSZ, and SIGCHLD must not be ignored or children reap
        # themselves. Others ignored at our start stay ignored, as tini leaves them.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        if os.getpid() != 1:
            signals.become_subreaper()
        # Keep the child: a Popen that is garbage-collected polls its pid and would
        # reap the CMD's status before we do.
        self.child = cmd_mod.spawn_cmd(self.argv, env=self.environ)
        self.pid = self.child.pid
        while self.status is None:
            self._next_signal()
        cmd_mod.take_terminal_back()
        self._sweep()
        return self.status

    def _wait(self, timeout: float | None):
        if timeout is None:
            return signal.sigwaitinfo(signals.CATCHABLE)
        return signal.sigtimedwait(signals.CATCHABLE, max(timeout, 0.0))

    def _next_signal(self) -> None:
        timeout = None if self.deadline is None else self.deadline - time.monotonic()
        info = self._wait(timeout)
        if info is None:                        # the stop timeout passed
            _warn(f"the command did not stop within {self.stop_timeout:g}s; SIGKILL")
            cmd_mod.forward(self.pid, signal.SIGKILL)
            self.deadline = None
            return
        sig = info.si_signo
        if sig == signal.SIGCHLD:
            self._reap()
        elif info.si_pid == os.getpid():    # ours: a SIGPIPE from a write to stderr
            return
        elif sig in signals.SHUTDOWN_SIGNALS and self.stopping:
            if sig in (signal.SIGTERM, signal.SIGINT):     # again: kill at once
                cmd_mod.forward(self.pid, signal.SIGKILL)
                self.deadline = None
                self.forced = True
        elif sig in signals.SHUTDOWN_SIGNALS:
            self.stopping = True
            self.deadline = time.monotonic() + self.stop_timeout
            cmd_mod.forward(self.pid, sig)
        else:
            cmd_mod.forward(self.pid, sig)

    def _reap(self) -> bool:
        """Collect every exited child; True when none is left at all."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                return False
            if pid == self.pid:
                self.status = _status(wait_status)
                self.child.mark_reaped(self.status)

    def _sweep(self) -> None:
        """What is left below us (daemons the CMD started): TERM, then KILL; then reap."""
        if self._reap():
            return
        from entrypoint.core.sweep import SWEEP_GRACE, descendants   # here: typing, ~3 ms

        me = os.getpid()
        for pid in descendants(me):
            cmd_mod.forward(pid, signal.SIGKILL if self.forced else signal.SIGTERM)
        deadline = time.monotonic() + (0 if self.forced else SWEEP_GRACE)
        while not self._reap():
            left = deadline - time.monotonic()
            if left <= 0:
                still = descendants(me)
                if not self.forced:
                    _warn(f"{len(still)} process(es) left after the command ended did not "
                          f"stop on SIGTERM within {SWEEP_GRACE:g}s; SIGKILL")
                self.forced = True
                for pid in still:
                    cmd_mod.forward(pid, signal.SIGKILL)
                deadline = time.monotonic() + 0.5     # again, for any forked meanwhile
                continue
            info = self._wait(min(left, 0.5))
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                deadline, self.forced = 0.0, True     # asked again: SIGKILL what is left


def run(argv: list[str], *, stop_timeout: float = STOP_TIMEOUT) -> int:
    """Run `argv` as a plain init would; return its exit status. CmdError if it cannot start."""
    return PlainInit(argv, dict(os.environ), stop_timeout).run()
