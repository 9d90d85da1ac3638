"""The only code that waits for children.

As PID 1, or as a child subreaper, orphans of services are re-parented to us and must be
collected with `waitpid(-1)`. Anything else that waits for a specific child would race
this loop and read a wrong status, so every child we spawn is registered here with
`watch()` in the same loop callback that spawned it, before the loop can run `reap()`.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: `code` for a normal exit, `signal` when a signal killed it."""

    code: int | None
    signal: int | None = None

    @classmethod
    def from_wait_status(cls, status: int) -> "ExitStatus":
        if os.WIFSIGNALED(status):
            return cls(None, os.WTERMSIG(status))
        return cls(os.WEXITSTATUS(status))

    @property
    def success(self) -> bool:
        return self.code == 0

    @property
    def shell_status(self) -> int:
        """The status a shell would report: the code, or 128+N for signal N."""
        return self.code if self.code is not None else 128 + (self.signal or 0)

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        return f"exit status {self.code}"


class Reaper:
    """Collects every exited child and hands its status to whoever watched its pid."""

    def __init__(self) -> None:
        self._watchers: dict[int, Callable[[ExitStatus], None]] = {}
        self.orphans_reaped = 0     # reaped for nobody: orphans re-parented to us
        self._loop: asyncio.AbstractEventLoop | None = None
        self._no_children_waiters: list[asyncio.Future] = []

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        # Children may have exited before the handler existed.
        loop.call_soon(self.reap)

    def uninstall(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)

    def watch(self, pid: int, callback: Callable[[ExitStatus], None]) -> None:
        """Call `callback(status)` when `pid` is reaped, from the callback that reaped it.

        Call it in the loop callback that spawned `pid`: no reap can run in between, so a
        status is never missed (a status reaped for nobody is an orphan's, never ours).
        """
        self._watchers[pid] = callback

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._wake_no_children()
                return
            if pid == 0:
                return
            exit_status = ExitStatus.from_wait_status(status)
            callback = self._watchers.pop(pid, None)
            if callback is not None:
                callback(exit_status)
            else:
                self.orphans_reaped += 1

    @staticmethod
    def has_children() -> bool:
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return True

    async def wait_no_children(self) -> None:
        """Return once we have no child left at all (every one reaped)."""
        assert self._loop is not None
        while self.has_children():
            future = self._loop.create_future()
            self._no_children_waiters.append(future)
            # SIGCHLD wakes reap(); poll too, in case the last exit raced the check.
            try:
                await asyncio.wait_for(asyncio.shield(future), 0.2)
            except asyncio.TimeoutError:
                self.reap()

    def _wake_no_children(self) -> None:
        waiters, self._no_children_waiters = self._no_children_waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)
