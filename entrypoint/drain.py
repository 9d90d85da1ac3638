"""Read a child's output fds until EOF, feeding each into its StreamOutput.

On Linux a PTY master read fails with EIO, not EOF, once the last slave fd closes; that
is EOF here. A service's exit counts as complete only when it is reaped AND its output is
drained, otherwise the lines it wrote just before dying would be lost.
"""

from __future__ import annotations

import asyncio
import errno
import os

PARTIAL_LINE_DELAY = 0.2     # a line with no newline yet is printed after this long
_READ_SIZE = 65536
_READS_PER_WAKEUP = 16       # bound one fd's turn so others (and signals) get theirs


class Drain:
    """Drains `fds` ({stream: fd}) into `outputs` ({stream: StreamOutput})."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fds: dict[str, int], outputs: dict):
        self._loop = loop
        self._open: dict[str, int] = dict(fds)
        self._outputs = outputs
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.done: asyncio.Future[None] = loop.create_future()
        for stream, fd in fds.items():
            loop.add_reader(fd, self._readable, stream, fd)
        if not fds:
            self.done.set_result(None)

    def _readable(self, stream: str, fd: int) -> None:
        output = self._outputs[stream]
        for _ in range(_READS_PER_WAKEUP):
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EIO:   # EIO: the PTY's other side is closed
                    output.feed(f"[entrypoint: read error: {exc.strerror}]\n".encode())
                data = b""
            if not data:
                self._close(stream)
                return
            output.feed(data)
            if len(data) < _READ_SIZE:
                break
        if output.has_partial and stream not in self._timers:
            self._timers[stream] = self._loop.call_later(PARTIAL_LINE_DELAY, self._flush, stream)

    def _flush(self, stream: str) -> None:
        self._timers.pop(stream, None)
        self._outputs[stream].flush_partial()

    def _close(self, stream: str) -> None:
        fd = self._open.pop(stream, None)
        if fd is None:
            return
        self._loop.remove_reader(fd)
        os.close(fd)
        timer = self._timers.pop(stream, None)
        if timer is not None:
            timer.cancel()
        self._outputs[stream].close()
        if not self._open and not self.done.done():
            self.done.set_result(None)

    def drain_now(self) -> None:
        """Read whatever is already buffered on every open fd, without waiting."""
        for stream, fd in list(self._open.items()):
            self._readable(stream, fd)

    def close(self) -> None:
        """Stop reading (a descendant kept the fd open): keep what was read, drop the rest."""
        self.drain_now()
        for stream in list(self._open):
            self._close(stream)
