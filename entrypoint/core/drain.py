"""Read a child's output fds until EOF, feeding each into its StreamOutput.

On Linux a PTY master read fails with EIO, not EOF, once the last slave fd closes; that
is EOF here. A service's exit counts as complete only when it is reaped AND its output is
drained, otherwise the lines it wrote just before dying would be lost.
"""

from __future__ import annotations

import asyncio
import errno
import os

PARTIAL_LINE_DELAY = 0.2     # a line with no newline yet is printed after this quiet time
_READ_SIZE = 65536
_BYTES_PER_WAKEUP = 1 << 20  # bound one fd's turn so others (and signals) get theirs


class Drain:
    """Drains `fds` ({stream: fd}) into `outputs` ({stream: StreamOutput})."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fds: dict[str, int], outputs: dict):
        self._loop = loop
        self._open: dict[str, int] = dict(fds)
        self._outputs = outputs
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._last_read: dict[str, float] = {}
        self.done: asyncio.Future[None] = loop.create_future()
        for stream, fd in fds.items():
            loop.add_reader(fd, self._readable, stream, fd)
        if not fds:
            self.done.set_result(None)

    def _readable(self, stream: str, fd: int) -> None:
        # Read until the fd is empty (or a bound), then feed everything as ONE chunk: a PTY
        # master returns at most 4 KiB per read, and each feed costs a prefixing pass and a
        # write to stdout, so one feed per wakeup instead of one per read is most of the
        # throughput (profiled: scripts/bench.py, docs/benchmarks.md).
        output = self._outputs[stream]
        chunks = []
        size = 0
        eof = False
        while size < _BYTES_PER_WAKEUP:
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EIO:   # EIO: the PTY's other side is closed
                    chunks.append(f"[entrypoint: read error: {exc.strerror}]\n".encode())
                data = b""
            if not data:
                eof = True
                break
            chunks.append(data)
            size += len(data)
            if len(data) < _READ_SIZE:
                break       # drained: no read that fails with EAGAIN (a PTY gives <= 4 KiB)
        if chunks:
            output.feed(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            self._last_read[stream] = self._loop.time()
        if eof:
            self._close(stream)
            return
        if output.has_partial and stream not in self._timers:
            self._timers[stream] = self._loop.call_later(PARTIAL_LINE_DELAY, self._flush, stream)

    def _flush(self, stream: str) -> None:
        # The partial line pending now may be younger than this timer (the line it was set
        # for got its newline since): flush only after PARTIAL_LINE_DELAY without a read,
        # otherwise a steady stream would see a line cut every PARTIAL_LINE_DELAY.
        self._timers.pop(stream, None)
        output = self._outputs.get(stream)
        if output is None or not output.has_partial or stream not in self._open:
            return
        quiet = self._loop.time() - self._last_read.get(stream, 0.0)
        if quiet < PARTIAL_LINE_DELAY:
            self._timers[stream] = self._loop.call_later(PARTIAL_LINE_DELAY - quiet,
                                                         self._flush, stream)
            return
        output.flush_partial()

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
