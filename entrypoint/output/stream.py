"""One stream of one service: raw bytes in, whole-line blocks out."""

from __future__ import annotations

from entrypoint.output.logfile import RotatingLog
from entrypoint.output.printer import Printer
from entrypoint.output.ring import LogRing

MAX_LINE = 1 << 20          # longest line printed whole (bytes, its newline not counted)
CUT_MARK = b" [cut]"        # ends each piece of a longer line but the last


def cut_long_lines(data: bytes, limit: int = MAX_LINE) -> bytes:
    """`data` with every line longer than `limit` bytes split after `limit` bytes.

    Each piece but the last ends with CUT_MARK and a newline. The cut backs off to a UTF-8
    character boundary. A final "\r" (maybe half of a "\r\n" split across reads) is
    not counted, so a PTY's line of exactly `limit` bytes is not cut. Lines are not
    looked at one by one: each step jumps to the last newline within `limit` bytes.
    """
    end = len(data) - data.endswith(b"\r")
    if end <= limit:
        return data
    pieces: list[bytes] = []
    start = pos = 0
    while end - pos > limit:
        nl = data.rfind(b"\n", pos, pos + limit + 1)
        if nl >= 0:
            pos = nl + 1
            continue
        cut = pos + limit
        for back in range(4):       # never split a UTF-8 sequence (continuation: 10xxxxxx)
            if data[cut - back] & 0xC0 != 0x80:
                cut -= back
                break
        pieces += [data[start:cut], CUT_MARK, b"\n"]
        start = pos = cut
    pieces.append(data[start:])
    return b"".join(pieces)


class StreamOutput:
    """One stream of one service: raw bytes in, whole-line blocks out.

    Feeds are normalised (`\\r\\n` -> `\\n`, also across chunk boundaries), cut after the
    last newline, and each block goes to the printer, the log file and the ring. A partial
    line waits for `flush_partial()` (the reader's idle timer, EOF); a line longer than
    MAX_LINE is cut there, marked, the same way under a PTY and on pipes.
    """

    def __init__(self, printer: Printer, name: str, stream: str = "stdout",
                 log: RotatingLog | None = None, ring: LogRing | None = None):
        self.printer, self.name, self.stream, self.log, self.ring = printer, name, stream, log, ring
        self._pending = bytearray()
        self._after_cr = False      # a forced flush dropped a final \r: skip a following \n
        self.tap = None             # ready = "log:REGEX": called with each block until ready

    @property
    def has_partial(self) -> bool:
        return bool(self._pending)

    @property
    def gate(self):
        """The writer whose back-pressure the drain obeys (None: never pause)."""
        return getattr(self.printer, "writer", None)

    def feed(self, data: bytes) -> None:
        """Take a chunk read from the service; emit its complete lines as one block."""
        if self._after_cr:
            self._after_cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if not data:
            return
        if self._pending:
            if b"\n" not in data and len(self._pending) + len(data) <= MAX_LINE:
                self._pending += data
                return
            data = bytes(self._pending) + data
            self._pending.clear()
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        if len(data) > MAX_LINE:
            data = cut_long_lines(data)
        end = data.rfind(b"\n") + 1
        if end == len(data):
            self._emit(data)
            return
        if end:
            self._emit(data[:end])
        self._pending += data[end:]

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
        if self.tap is not None:
            self.tap(block)
        count = self.printer.write_lines(self.name, self.stream, block)
        if self.log is not None:
            self.log.write(block)
        if self.ring is not None:
            self.ring.append(block, count)
