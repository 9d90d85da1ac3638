"""Read a child's output fds until EOF, feeding each into its StreamOutput.

On Linux a PTY master read fails with EIO, not EOF, once the last slave fd closes; that
is EOF here. A service's exit counts as complete only when it is reaped AND its output is
drained, otherwise the lines it wrote just before dying would be lost.

Back-pressure: when stdout's queue is full (an output's `gate`, the StdoutWriter), a
stream stops being read until the queue has room again. The service then blocks on its
own full PTY or pipe, which is the honest outcome: nothing is dropped, and the runner's
loop stays free for signals, reaping and the control socket.
"""

from __future__ import annotations

import asyncio
import errno
import os

PARTIAL_LINE_DELAY = 0.2     # a line with no newline yet is printed after this quiet time
_READ_SIZE = 65536
# A PTY master read returns at most 4095 bytes (the line discipline's buffer, less one);
# one that full means more is likely waiting: read on, so that one feed and one write
# carry many reads (a fifth less runner CPU per line under a PTY, same throughput;
# measured against reading once per wakeup).
_PTY_FULL_READ = 4095
_BYTES_PER_WAKEUP = 1 << 20  # bound one fd's turn so others (and signals) get theirs


class Drain:
    """Drains `fds` ({stream: fd}) into `outputs` ({stream: StreamOutput})."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fds: dict[str, int], outputs: dict):
        self._loop = loop
        self._open: dict[str, int] = dict(fds)
        self._outputs = outputs
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._last_read: dict[str, float] = {}
        self._paused: set[str] = set()
        self.done: asyncio.Future[None] = loop.create_future()
        for stream, fd in fds.items():
            loop.add_reader(fd, self._readable, stream, fd)
        if not fds:
            self.done.set_result(None)

    def _readable(self, stream: str, fd: int, force: bool = False) -> None:
        # Read until the fd is empty (or a bound), then feed everything as ONE chunk: a PTY
        # master returns at most 4 KiB per read, and each feed costs a prefixing pass and a
        # write to stdout, so one feed per wakeup instead of one per read is most of the
        # throughput (profiled: scripts/bench.py, docs/benchmarks.md).
        output = self._outputs[stream]
        gate = getattr(output, "gate", None)
        budget = _BYTES_PER_WAKEUP
        if gate is not None and not force:
            if gate.full:
                self._pause(stream, fd, gate)
                return
            budget = min(budget, max(_READ_SIZE, gate.room))
        chunks = []
        size = 0
        eof = False
        while size < budget:
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
            if len(data) < _READ_SIZE and len(data) != _PTY_FULL_READ:
                break       # drained: no read that fails with EAGAIN
        if chunks:
            output.feed(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            self._last_read[stream] = self._loop.time()
        if eof:
            self._close(stream)
            return
        if output.has_partial and stream not in self._timers:
            self._timers[stream] = self._loop.call_later(PARTIAL_LINE_DELAY, self._flush, stream)

    def _pause(self, stream: str, fd: int, gate) -> None:
        # Stop reading until stdout has room; the partial-line timer waits too, since a
        # service we do not read is not a quiet service.
        self._paused.add(stream)
        self._loop.remove_reader(fd)
        gate.call_when_room(lambda: self._resume(stream))

    def _resume(self, stream: str) -> None:
        self._paused.discard(stream)
        fd = self._open.get(stream)
        if fd is None:
            return
        self._loop.add_reader(fd, self._readable, stream, fd)
        self._readable(stream, fd)

    def _flush(self, stream: str) -> None:
        # The partial line pending now may be younger than this timer (the line it was set
        # for got its newline since): flush only after PARTIAL_LINE_DELAY without a read,
        # otherwise a steady stream would see a line cut every PARTIAL_LINE_DELAY.
        self._timers.pop(stream, None)
        output = self._outputs.get(stream)
        if (output is None or not output.has_partial or stream not in self._open
                or stream in self._paused):
            return      # a paused stream re-arms this timer when it is read again
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
        self._paused.discard(stream)
        self._loop.remove_reader(fd)
        os.close(fd)
        timer = self._timers.pop(stream, None)
        if timer is not None:
            timer.cancel()
        self._outputs[stream].close()
        if not self._open and not self.done.done():
            self.done.set_result(None)

    def drain_now(self) -> None:
        """Read whatever is already buffered on every open fd, without waiting.

        Back-pressure does not hold this read: it comes once, when the service is gone.
        """
        for stream, fd in list(self._open.items()):
            self._readable(stream, fd, force=True)

    def close(self) -> None:
        """Stop reading (a descendant kept the fd open): keep what was read, drop the rest."""
        self.drain_now()
        for stream in list(self._open):
            self._close(stream)
