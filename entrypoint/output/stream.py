"""One stream of one service: raw bytes in, whole-line blocks out."""

from __future__ import annotations

from entrypoint.output.logfile import RotatingLog
from entrypoint.output.printer import Printer
from entrypoint.output.ring import LogRing

MAX_PARTIAL = 64 * 1024


class StreamOutput:
    """One stream of one service: raw bytes in, whole-line blocks out.

    Feeds are normalised (`\\r\\n` -> `\\n`, also across chunk boundaries), cut after the
    last newline, and each block goes to the printer, the log file and the ring. A partial
    line waits for `flush_partial()` (the reader's idle timer, EOF) or for 64 KiB.
    """

    def __init__(self, printer: Printer, name: str, stream: str = "stdout",
                 log: RotatingLog | None = None, ring: LogRing | None = None):
        self.printer, self.name, self.stream, self.log, self.ring = printer, name, stream, log, ring
        self._pending = bytearray()
        self._after_cr = False      # a forced flush dropped a final \r: skip a following \n

    @property
    def has_partial(self) -> bool:
        return bool(self._pending)

    def feed(self, data: bytes) -> None:
        """Take a chunk read from the service; emit its complete lines as one block."""
        if self._after_cr:
            self._after_cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if not data:
            return
        if self._pending:
            if b"\n" not in data:
                self._pending += data
                if len(self._pending) > MAX_PARTIAL:
                    self.flush_partial()
                return
            data = bytes(self._pending) + data
            self._pending.clear()
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n") + 1
        if end == len(data):
            self._emit(data)
            return
        if end:
            self._emit(data[:end])
        self._pending += data[end:]
        if len(self._pending) > MAX_PARTIAL:
            self.flush_partial()

    def flush_partial(self) -> None:
        """Emit the pending partial line as a complete line."""
        if not self._pending:
            return
        line = bytes(self._pending)
        self._pending.clear()
        if line.endswith(b"\r"):        # maybe half of a \r\n split across reads
            line = line[:-1]
            self._after_cr = True
        self._emit(line + b"\n")

    def close(self) -> None:
        self.flush_partial()

    def _emit(self, block: bytes) -> None:
        count = self.printer.write_lines(self.name, self.stream, block)
        if self.log is not None:
            self.log.write(block)
        if self.ring is not None:
            self.ring.append(block, count)
