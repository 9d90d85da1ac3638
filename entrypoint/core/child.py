"""One handle per child process: spawn, pidfd, reaper registration, drain, stop, kill, reaped.

Services, hooks, exec health probes, the CMD and the reload validator all run through
`Child.spawn`, so the sequence that matters for a PID 1 is written once:

- the pid is registered with the reaper in the same loop callback as the spawn (no reap can
  run in between, so no exit status is lost or given to the wrong process);
- the reaper's callback marks the child reaped synchronously, in the very callback that
  collected it: from then on the handle sends no signal at all (the pid may be recycled);
- a stop is ONE task per child, awaited by every caller: a second SIGTERM makes many apps
  (nginx, gunicorn, postgres...) skip their graceful stop;
- an exit is complete when the status is reaped AND the output is drained.
"""

from __future__ import annotations

import asyncio
import os
import signal as _signal
from typing import Callable

from entrypoint.core.drain import Drain
from entrypoint.core.reaper import ExitStatus, Reaper
from entrypoint.core.spawn import Spawned, spawn

DRAIN_GRACE = 1.0   # after the exit, how long to wait for a descendant holding its output open

# Test seam, for tests only: a SIGKILL to the child labelled with this value (a service's
# name) is not sent, as if the process were in uninterruptible sleep (D state) and the kill pending.
# A real D state cannot be produced on demand in a test; this lets the bounded shutdown be
# tested. Unset in production.
_KILL_DOES_NOT_TAKE = os.environ.get("ENTRYPOINT_TEST_KILL_DOES_NOT_TAKE") or None


def _pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        # No pidfd (kernel < 5.3, or EMFILE): we fall back to kill() while the child is
        # known unreaped, which is as safe as long as we are the only reaper (DESIGN §2).
        return None


class Child:
    """A spawned process, watched by the reaper and (when it has output fds) drained."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reaper: Reaper, spawned: Spawned,
                 outputs: dict | None, *, group: bool = True, label: str = ""):
        self.pid = spawned.pid
        self.label = label
        self.group = group          # leads its own process group: stop signals go to all of it
        self._loop = loop
        self._spawned = spawned
        self.reaped = False
        self.status: ExitStatus | None = None
        self.exited: asyncio.Future[ExitStatus] = loop.create_future()
        self._pidfd = _pidfd_open(self.pid)
        reaper.watch(self.pid, self._on_reaped)      # same callback as the spawn
        self.drain = Drain(loop, spawned.fds, outputs or {}) if spawned.fds else None
        self._stop_task: asyncio.Task | None = None

    @classmethod
    def spawn(cls, loop: asyncio.AbstractEventLoop, reaper: Reaper, argv, *,
              outputs: dict | None = None, group: bool = True, label: str = "",
              spawner: Callable[..., Spawned] = spawn, **spawn_kwargs) -> "Child":
        """Start `argv` (see `spawn.spawn`) and register it; raises SpawnError."""
        return cls(loop, reaper, spawner(argv, **spawn_kwargs), outputs, group=group,
                   label=label or str(argv[0]))

    def _on_reaped(self, status: ExitStatus) -> None:
        # Called by the reaper in the callback that reaped the pid: nothing can signal
        # this pid between the reap and here, and nothing will after.
        self.reaped = True
        self.status = status
        self._spawned.mark_reaped(status.shell_status)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if not self.exited.done():
            self.exited.set_result(status)

    # -- signals ----------------------------------------------------------------------

    def signal(self, sig: int) -> bool:
        """Send `sig` (to the group for a group leader); False once the child is reaped."""
        if self.reaped:
            return False
        if sig == _signal.SIGKILL and self.label == _KILL_DOES_NOT_TAKE:
            return True
        if self.group:
            # The group's id is the leader's pid. While the leader is unreaped (alive or a
            # zombie) that number cannot be given to another process, so killpg reaches our
            # group only. Once the leader is reaped and the last member of its group gone,
            # the number may be recycled for an unrelated session leader, and we cannot
            # tell that moment from here: hence no group signal after the reap (leftovers
            # of the group are the final sweep's). The check and the kill run in one loop
            # callback, and only this loop reaps: no reap can slip in between.
            try:
                os.killpg(self.pid, sig)
                return True
            except ProcessLookupError:
                pass        # it left its group (setpgid): signal the process itself
            except PermissionError:
                return False
        try:
            if self._pidfd is not None:
                _signal.pidfd_send_signal(self._pidfd, sig)
            else:
                os.kill(self.pid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def kill(self) -> None:
        self.signal(_signal.SIGKILL)

    # -- stopping and waiting ---------------------------------------------------------

    def stop(self, sig: int, timeout: float,
             on_timeout: Callable[[], None] | None = None) -> "asyncio.Future[ExitStatus]":
        """Send `sig`, then SIGKILL after `timeout`; the one stop of this child.

        Every caller gets the same task: the signal is sent once whoever asks again."""
        if self._stop_task is None:
            self._stop_task = self._loop.create_task(self._stop(sig, timeout, on_timeout))
        return asyncio.shield(self._stop_task)

    @property
    def stopping(self) -> bool:
        return self._stop_task is not None

    async def _stop(self, sig: int, timeout: float, on_timeout) -> ExitStatus:
        self.signal(sig)
        try:
            return await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        except asyncio.TimeoutError:
            if on_timeout is not None:
                on_timeout()
            self.kill()
            return await asyncio.shield(self.exited)

    async def finished(self, drain_grace: float = DRAIN_GRACE) -> ExitStatus:
        """The exit status, once the output is drained too (or `drain_grace` after the exit,
        when a descendant keeps the output open: what was read is kept)."""
        status = await asyncio.shield(self.exited)
        if self.drain is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.drain.done), drain_grace)
            except asyncio.TimeoutError:
                self.drain.close()
        return status

    async def run_bounded(self, timeout: float) -> ExitStatus | None:
        """Wait up to `timeout` for the exit (drained); on timeout kill it, reap it, return
        None. If the waiting task is cancelled, the child is killed too: it is never left
        running behind a probe or hook nobody waits for any more."""
        try:
            return await asyncio.wait_for(self.finished(), timeout)
        except asyncio.TimeoutError:
            self.kill()
            await self.finished()
            return None
        except asyncio.CancelledError:
            self.kill()
            self.exited.add_done_callback(lambda _: self.drain and self.drain.close())
            raise
