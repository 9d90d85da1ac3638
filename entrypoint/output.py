"""Bytes from services -> whole lines -> `name | line` on stdout, log files and rings.

The default text path does no per-line Python work: a fed chunk is split once at its last
newline (`rfind`), prefixed with one `bytes.replace`, and written with one `os.write`
loop, so lines of different services are never cut or interleaved. Only `--log-format
json` looks at single lines. Output errors never propagate: PID 1 must not die or hang
because nobody reads its stdout any more.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import select
import time
import zlib
from collections import deque
from typing import Callable, Iterable, Mapping

RUNNER = "entrypoint"
MAX_PARTIAL = 64 * 1024
RESET = "\x1b[0m"
RUNNER_COLOR = "\x1b[1m"        # bold, default foreground: not in the palette below
LEVEL_COLORS = {"error": "\x1b[31m", "warning": "\x1b[33m"}
# Readable on dark and light backgrounds; no red (that is for the runner's errors).
PALETTE = tuple(f"\x1b[{c}m" for c in (
    "36", "33", "32", "35", "34", "96", "93", "92", "95", "94", "38;5;208", "38;5;141"))
_GONE = frozenset({errno.EPIPE, errno.EBADF, errno.EIO, errno.ENXIO, errno.ECONNRESET})
_jstr = json.JSONEncoder(ensure_ascii=False).encode


def use_color(flag: str | None, environ: Mapping[str, str], isatty: bool) -> bool:
    """Colour policy: `--color` flag, then non-empty FORCE_COLOR, then NO_COLOR, then tty."""
    if flag in ("always", "never"):
        return flag == "always"
    if flag not in (None, "", "auto"):
        raise ValueError(f"invalid colour mode {flag!r}: use always, never or auto")
    if environ.get("FORCE_COLOR"):
        return True
    return not environ.get("NO_COLOR") and isatty


def color_for(name: str) -> str:
    """A stable ANSI colour for a service name (the same across restarts and runs)."""
    if name == RUNNER:
        return RUNNER_COLOR
    return PALETTE[zlib.crc32(name.encode("utf-8", "replace")) % len(PALETTE)]


def utc_timestamp(t: float) -> str:
    """ISO-8601 UTC with milliseconds and Z: `2026-11-22T01:02:03.456Z`."""
    ms = int(t * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


class Printer:
    """Writes prefixed whole-line blocks to one fd (stdout), as text or JSON lines.

    Each `write_lines` call is a single write of whole lines, retried over partial writes.
    On EAGAIN it polls until the fd is writable; if it makes no progress for
    `stall_timeout` seconds it drops output (counted in `dropped`) until the fd drains, so
    a frozen reader cannot freeze the loop. EPIPE/EBADF/EIO mean the output is gone:
    `gone` becomes True and everything is dropped silently from then on.
    """

    def __init__(self, fd: int = 1, *, color: bool = False, timestamps: bool = False,
                 log_format: str = "text", stall_timeout: float = 30.0):
        if log_format not in ("text", "json"):
            raise ValueError(f"invalid log format {log_format!r}: use text or json")
        self.fd = fd
        self.json = log_format == "json"
        self.color = color and not self.json
        self.timestamps = timestamps
        self.stall_timeout = stall_timeout
        self.clock: Callable[[], float] = time.time
        self.gone = False
        self.dropped = 0              # blocks (or block remainders) not written
        self._stalled = self._cut = False   # _cut: a failed write ended mid-line
        self._width = len(RUNNER)
        self._prefixes: dict[str, tuple[bytes, bytes]] = {}

    def set_names(self, names: Iterable[str]) -> None:
        """Pad prefixes to the longest of `names` and "entrypoint"."""
        self._width = max([len(RUNNER), *map(len, names)])
        self._prefixes.clear()

    def _pair(self, name: str) -> tuple[bytes, bytes]:
        text = name.ljust(self._width) + " |"
        if self.color:
            text = color_for(name) + text + RESET
        p = (text + " ").encode("utf-8", "replace")
        self._prefixes[name] = pair = (p, b"\n" + p)
        return pair

    def prefix(self, name: str) -> bytes:
        """`name` padded to the width + ` | `, coloured in colour mode (cached)."""
        return (self._prefixes.get(name) or self._pair(name))[0]

    def write_lines(self, name: str, stream: str, block: bytes) -> int | None:
        """Write `block` (one or more complete lines, each ending in b"\\n") for `name`.

        Returns the number of lines when it was worked out on the way (None otherwise):
        the prefixing pass yields it for free, and `bytes.count` would scan the block
        once more (~4 us per 4 KiB PTY read, a third of the cost of a block; profiled).
        """
        if self.gone or not block:
            return None
        if self.json:
            lines = block.decode("utf-8", "replace").split("\n")
            lines.pop()
            self._write_json(name, stream, lines)
            return len(lines)
        p, nlp = self._prefixes.get(name) or self._pair(name)
        if self.timestamps:             # one instant per block: its lines arrived together
            p = utc_timestamp(self.clock()).encode() + b" " + p
            nlp = b"\n" + p
        body = block.replace(b"\n", nlp)
        out = p + body
        self._write(memoryview(out)[:len(out) - len(p)])
        return (len(body) - len(block)) // len(p)      # each newline grew by len(p)

    def _write_json(self, name: str, stream: str, lines: list[str], extra: str = "") -> None:
        head = '{"ts": "%s", "service": %s, "stream": %s, %s"line": ' % (
            utc_timestamp(self.clock()), _jstr(name), _jstr(stream), extra)
        out = "".join([head + _jstr(line) + "}\n" for line in lines])
        self._write(out.encode("utf-8", "replace"))

    def system(self, message: str, level: str = "info") -> None:
        """Print a runner message under the name `entrypoint`."""
        if self.gone:
            return
        lines = message.rstrip("\n").split("\n")
        if self.json:
            self._write_json(RUNNER, "system", lines, '"level": %s, ' % _jstr(level))
            return
        p = self.prefix(RUNNER).decode()
        if self.timestamps:
            p = utc_timestamp(self.clock()) + " " + p
        col = LEVEL_COLORS.get(level) if self.color else None
        if col:
            lines = [col + line + RESET for line in lines]
        self._write("".join([p + line + "\n" for line in lines]).encode("utf-8", "replace"))

    def _write(self, data: bytes | memoryview) -> None:
        if self._stalled:           # drop whole blocks until the reader makes room again
            if not self._writable(0):
                self.dropped += 1
                return
            self._stalled = False
        if self._cut:               # never glue a line to the remains of a cut one
            self._cut = False
            self._write(b"\n")
        view = memoryview(data)
        total = len(view)
        while view:
            try:
                view = view[os.write(self.fd, view):]
                continue
            except BlockingIOError:
                if self._writable(self.stall_timeout):
                    continue
                self._stalled = True
            except OSError as e:    # other errors (ENOSPC on a file): lose this block only
                if e.errno in _GONE:
                    self.gone = True
            self._cut = len(view) < total
            self.dropped += 1
            return

    def _writable(self, timeout: float) -> bool:
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        try:
            return bool(poller.poll(timeout * 1000))
        except OSError:
            return True         # let os.write report the real error


class RotatingLog:
    """Append-only log file rotated by size, like logging.handlers.RotatingFileHandler.

    `app.log` -> `app.log.1` -> ... -> `app.log.<backups>`; `backups=0` truncates in place.
    Rotation happens only between blocks, so a rotated file never ends mid-line. Errors
    are reported once through `on_error(exc)` and never raised.
    """

    def __init__(self, path: str, max_bytes: int, backups: int,
                 on_error: Callable[[Exception], None] | None = None):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = max(0, backups)
        self.on_error = on_error
        self.failed = False
        self._fd: int | None = None
        self._size = 0
        self._open()

    def _open(self) -> bool:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o644)
            self._size = os.fstat(self._fd).st_size
            return True
        except OSError as e:
            self._fail(e)
            return False

    def _fail(self, exc: Exception) -> None:
        if not self.failed and self.on_error is not None:
            self.on_error(exc)
        self.failed = True

    def _rotate(self) -> None:
        if self.backups == 0:
            os.ftruncate(self._fd, 0)
            self._size = 0
            return
        os.close(self._fd)
        self._fd = None
        for i in range(self.backups - 1, 0, -1):
            if os.path.exists(f"{self.path}.{i}"):
                os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
        os.replace(self.path, self.path + ".1")
        self._open()

    def write(self, block: bytes) -> None:
        """Append `block` (whole lines), rotating at line ends so no file passes max_bytes.

        A block may hold megabytes (one drained read burst): it is split at the last
        newline that still fits. Only a single line longer than max_bytes overflows.
        """
        if self._fd is None and not self._open():
            return
        while 0 < self.max_bytes < self._size + len(block):
            # A block that fits a fresh file starts one; a larger one fills this file first.
            room = self.max_bytes - self._size if len(block) > self.max_bytes else 0
            cut = block.rfind(b"\n", 0, room) + 1 if room > 0 else 0
            if cut == 0 and self._size == 0:
                cut = block.find(b"\n") + 1 or len(block)   # one over-long line: alone
            if cut:
                self._append(block[:cut])
                block = block[cut:]
            if not block or self._fd is None:
                return
            try:
                self._rotate()
            except OSError as e:
                self._fail(e)
                return
            if self._fd is None:
                return
        self._append(block)

    def _append(self, block: bytes) -> None:
        if self._fd is None:
            return
        try:
            view = memoryview(block)
            while view:
                n = os.write(self._fd, view)
                view, self._size = view[n:], self._size + n
        except OSError as e:
            self._fail(e)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


_arrivals = itertools.count()   # orders blocks of all rings that share a timestamp


class LogRing:
    """The last `max_lines` lines of one service, kept as whole-line blocks.

    Each block keeps when it arrived, so `logs` can merge several services in order.
    Lines are split only when `tail` asks; subscribers (`logs -f`) get each new block.
    One ring per service name outlives the service's restarts.
    """

    def __init__(self, max_lines: int = 1000):
        self.max_lines = max_lines
        # (arrival time, arrival number, block, line count)
        self._blocks: deque[tuple[float, int, bytes, int]] = deque()
        self._lines = 0
        self._subscribers: list[Callable[[bytes], None]] = []

    def __len__(self) -> int:
        return self._lines

    def append(self, block: bytes, count: int | None = None) -> None:
        """Keep `block` (whole lines); `count`, its number of lines, when already known."""
        if count is None:
            count = block.count(b"\n")
        self._blocks.append((time.time(), next(_arrivals), block, count))
        self._lines += count
        while len(self._blocks) > 1 and self._lines - self._blocks[0][3] >= self.max_lines:
            self._lines -= self._blocks.popleft()[3]
        for callback in list(self._subscribers):
            try:
                callback(block)
            except Exception:           # a broken follower must not break the output
                self._drop(callback)

    def tail(self, n: int | None = None) -> list[str]:
        """The last `n` lines (all kept lines if None), decoded, without newlines."""
        return [line for _, line in self.tail_stamped(n)]

    def tail_stamped(self, n: int | None = None) -> list[tuple[tuple[float, int, int], str]]:
        """The last `n` lines, each with a sort key (arrival time, arrival number, index)."""
        n = self._lines if n is None else n
        if n <= 0:
            return []
        out: list[tuple[tuple[float, int, int], str]] = []
        for at, number, block, count in reversed(self._blocks):
            lines = block.decode("utf-8", "replace").split("\n")[:-1]
            out += [((at, number, i), line) for i, line in reversed(list(enumerate(lines)))]
            if len(out) >= n:
                break
        return out[:n][::-1]

    def subscribe(self, callback: Callable[[bytes], None]) -> Callable[[], None]:
        """Call `callback(block)` for every new block; returns the unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._drop(callback)

    def _drop(self, callback: Callable[[bytes], None]) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)


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


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain left-aligned columns, two spaces apart (no trailing newline)."""
    table = [[str(c) for c in row] for row in [headers, *rows]]
    ncols = max(map(len, table))
    table = [row + [""] * (ncols - len(row)) for row in table]
    widths = [max(len(row[i]) for row in table) for i in range(ncols)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)
