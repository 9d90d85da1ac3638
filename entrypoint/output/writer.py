"""The runner's stdout: a private non-blocking writer with a byte-bounded queue.

A blocking `os.write` to a pipe nobody reads would freeze the whole loop: signals,
reaping, the control socket and the shutdown. So the runner never writes fd 1 itself: it
opens the same pipe or terminal again, privately, with O_NONBLOCK (the CMD shares fd 1's
open file description, so setting O_NONBLOCK on fd 1 would hand the CMD EAGAINs), and
what does not fit waits in a queue written out by `loop.add_writer`.

The queue is the back-pressure signal: above `high_water` bytes it is `full`, and the
readers of the services' PTYs and pipes pause (`call_when_room`), so the services block
on their own full buffers instead of output being dropped. Only past `limit` bytes
(runner lines piling up behind a reader that never comes back) or at exit (`finish`) is
output dropped, and then counted in `dropped` (lines).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import select
import socket
import stat
from collections import deque
from typing import Callable

HIGH_WATER = 1 << 20        # queued bytes above which the services' readers pause
LIMIT = 16 << 20            # queued bytes above which new output is dropped (memory of PID 1)
FINAL_STALL = 1.0           # at exit: give up the final flush after this long without progress
_PIPE_BUF = 4096            # a write this small fits once poll says a pipe has room
PIPE_SIZE = 1 << 20         # stdout pipes grow to this (pipe-max-size allows it unprivileged)
_F_GETPIPE_SZ, _F_SETPIPE_SZ = 1032, 1031
# The reader is gone for good: drop everything from now on.
_GONE = frozenset({errno.EPIPE, errno.EBADF, errno.EIO, errno.ENXIO, errno.ECONNRESET})


def open_private(fd: int) -> tuple[int, str]:
    """A private fd writing where `fd` writes, and how to write it without blocking.

    Modes: "nonblock" (a pipe, FIFO or terminal re-opened through /proc with O_NONBLOCK),
    "socket" (a dup written with MSG_DONTWAIT: a socket cannot be re-opened), "file" (a
    dup: a regular file never blocks, and a re-open would lose O_APPEND's shared offset)
    and "guarded" (no /proc: a dup written only when poll says there is room, at most
    PIPE_BUF bytes at a time). Raises OSError when `fd` is unusable.
    """
    mode = os.fstat(fd).st_mode
    if stat.S_ISFIFO(mode):
        _grow_pipe(fd)
    if stat.S_ISSOCK(mode):
        return os.dup(fd), "socket"
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
        return os.dup(fd), "file"
    try:
        # O_NOCTTY: opening a terminal must not make it our controlling terminal.
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY
                       | os.O_CLOEXEC), "nonblock"
    except OSError as exc:
        if exc.errno == errno.ENXIO:      # a pipe whose reader is gone
            raise
    return os.dup(fd), "guarded"


def _guard_size(fd: int) -> int:
    # What surely fits once poll says "writable": PIPE_BUF for a pipe; for a terminal the
    # line discipline signals room from 256 bytes (WAKEUP_CHARS) on.
    return 256 if os.isatty(fd) else _PIPE_BUF


def _grow_pipe(fd: int) -> None:
    # A 64 KiB pipe fills within one burst: every EAGAIN then costs a turn of the loop and
    # two epoll_ctl calls, about a fifth of the log throughput on pipes (measured). A
    # larger buffer only changes how much the pipe holds, for the CMD too; never shrink it.
    try:
        if fcntl.fcntl(fd, _F_GETPIPE_SZ) < PIPE_SIZE:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass        # EPERM past pipe-max-size or the user's pipe quota: keep the default


class StdoutWriter:
    """Writes byte blocks to `fd` in order, never blocking the loop; see the module doc."""

    def __init__(self, fd: int, *, high_water: int = HIGH_WATER, limit: int = LIMIT):
        self.high_water, self.limit = high_water, max(limit, high_water)
        self.gone = False
        self.dropped = 0                    # lines (or pieces of lines) never written
        self.queued = 0                     # bytes waiting
        self._queue: deque[memoryview] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching = False
        self._waiters: list[Callable[[], None]] = []
        self._progress: asyncio.Event | None = None
        self.on_first_drop: Callable[[], None] | None = None
        try:
            self.fd, self.mode = open_private(fd)
        except OSError:
            self.fd, self.mode, self.gone = -1, "gone", True
        self._guard_size = _guard_size(self.fd) if self.mode == "guarded" else 0

    @property
    def full(self) -> bool:
        """True while the queue is above high water: readers of services should pause."""
        return self.queued >= self.high_water and not self.gone

    @property
    def room(self) -> int:
        """Bytes that may still be queued before the queue is full."""
        return max(0, self.high_water - self.queued)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write what waits from `loop` from now on."""
        self._loop = loop
        self._progress = asyncio.Event()
        self._pump()

    def write(self, data: bytes) -> None:
        """Queue `data` (whole lines) and write as much as fits now."""
        if not data:
            return
        if self.gone or self.queued + len(data) > self.limit:
            self._drop(data)
            return
        self._queue.append(memoryview(data))
        self.queued += len(data)
        if not self._watching:      # the fast path: nothing waits, so write at once
            self._pump()

    def call_when_room(self, callback: Callable[[], None]) -> None:
        """Call `callback()` once the queue has gone down to half of high water."""
        self._waiters.append(callback)

    def _pump(self) -> None:
        queue = self._queue
        wrote = False
        while queue:
            head = queue[0]
            try:
                n = self._send(head)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _GONE:
                    self.gone = True
                    for block in queue:
                        self._drop(block)
                    queue.clear()
                    self.queued = 0
                    break
                self._drop(queue.popleft())   # ENOSPC on a file: lose this block only
                self.queued -= len(head)
                continue
            if n == 0:
                break
            wrote = True
            self.queued -= n
            if n == len(head):
                queue.popleft()
            else:
                queue[0] = head[n:]
        if wrote and self._progress is not None:
            self._progress.set()
        self._watch(bool(queue) and not self.gone)
        if self._waiters and (self.gone or self.queued <= self.high_water // 2):
            waiters, self._waiters = self._waiters, []
            for callback in waiters:
                if self._loop is not None:
                    self._loop.call_soon(callback)
                else:
                    callback()

    def _send(self, view: memoryview) -> int:
        if self.mode == "socket":
            return _sock_send(self.fd, view)
        if self.mode == "guarded":
            poller = select.poll()
            poller.register(self.fd, select.POLLOUT)
            if not poller.poll(0):
                raise BlockingIOError
            view = view[:self._guard_size]
        return os.write(self.fd, view)

    def _watch(self, on: bool) -> None:
        if self._loop is None or on == self._watching or self._loop.is_closed():
            return
        if on:
            self._loop.add_writer(self.fd, self._pump)
        else:
            self._loop.remove_writer(self.fd)
        self._watching = on

    def _drop(self, data) -> None:
        if not self.dropped and self.on_first_drop is not None and not self.gone:
            self.on_first_drop()
        self.dropped += max(1, bytes(data).count(b"\n"))

    async def finish(self, deadline: float | None = None) -> None:
        """Final flush at exit: write what waits while the reader keeps taking it.

        Gives up after FINAL_STALL seconds without progress, or at `deadline` (loop time)
        when that is later still; what is left then is dropped and counted. Detaches.
        """
        loop = self._loop
        if loop is not None:
            give_up = loop.time() + FINAL_STALL
            if deadline is not None:
                give_up = max(give_up, deadline)
            while self._queue and not self.gone:
                self._progress.clear()
                try:
                    await asyncio.wait_for(self._progress.wait(),
                                           min(FINAL_STALL, give_up - loop.time()))
                except asyncio.TimeoutError:
                    break
                if loop.time() >= give_up:
                    break
        self.close()

    def close(self) -> None:
        """Stop writing: drop (and count) what still waits, release the private fd."""
        self._watch(False)
        self._loop = None
        for block in self._queue:
            self._drop(block)
        self._queue.clear()
        self.queued = 0
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd, self.gone = -1, True


def _sock_send(fd: int, view: memoryview) -> int:
    # MSG_DONTWAIT makes this one send non-blocking without touching the shared file's flags.
    sock = socket.socket(fileno=fd)
    try:
        return sock.send(view, socket.MSG_DONTWAIT)
    finally:
        sock.detach()


def write_now(fd: int, data: bytes) -> bool:
    """Write `data` to `fd` if it fits at once, never blocking (for the runner's stderr).

    True when all of it was written. Used for the few lines that must reach the user even
    when stdout is stalled: stderr may be a stalled pipe too.
    """
    try:
        private = StdoutWriter(fd, limit=len(data))
    except OSError:
        return False
    private.write(data)
    written = not private.queued and not private.dropped
    private._queue.clear()
    private.queued = 0
    private.close()
    return written
