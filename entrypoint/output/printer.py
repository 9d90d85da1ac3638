"""Bytes from services -> whole lines -> `name | line` on stdout, log files and rings.

The default text path does no per-line Python work: a fed chunk is split once at its last
newline (`rfind`), prefixed with one `bytes.replace`, and queued as one block on the
non-blocking writer (writer.py), so lines of different services are never cut or
interleaved. Only `--log-format json` looks at single lines. Output errors never
propagate: PID 1 must not die or hang because nobody reads its stdout any more.
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Callable, Iterable, Mapping

from entrypoint.output.writer import StdoutWriter

RUNNER = "entrypoint"
RESET = "\x1b[0m"
RUNNER_COLOR = "\x1b[1m"        # bold, default foreground: not in the palette below
LEVEL_COLORS = {"error": "\x1b[31m", "warning": "\x1b[33m"}
# Readable on dark and light backgrounds; no red (that is for the runner's errors).
PALETTE = tuple(f"\x1b[{c}m" for c in (
    "36", "33", "32", "35", "34", "96", "93", "92", "95", "94", "38;5;208", "38;5;141"))
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

    Each block goes whole to a StdoutWriter (a private non-blocking open of `fd` with a
    byte-bounded queue), so a reader that stalls never blocks the loop: its `full` is the
    back-pressure signal the drains pause on. `dropped` counts lines never written
    (output gone, queue over its limit, or still queued when `finish` gave up).
    """

    quiet = False                 # --quiet: the runner's info lines are not printed

    def __init__(self, fd: int = 1, *, color: bool = False, timestamps: bool = False,
                 log_format: str = "text", writer: StdoutWriter | None = None):
        if log_format not in ("text", "json"):
            raise ValueError(f"invalid log format {log_format!r}: use text or json")
        self.json = log_format == "json"
        self.color = color and not self.json
        self.timestamps = timestamps
        self.clock: Callable[[], float] = time.time
        self.writer = writer if writer is not None else StdoutWriter(fd)
        self._width = len(RUNNER)
        self._prefixes: dict[str, tuple[bytes, bytes]] = {}

    @property
    def gone(self) -> bool:
        """The reader is gone for good (EPIPE, ...): everything is dropped silently."""
        return self.writer.gone

    @property
    def dropped(self) -> int:
        return self.writer.dropped

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
            self.writer.dropped += block.count(b"\n")     # counted, never prefixed
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
        """Print a runner message under the name `entrypoint` (with `quiet`: only
        warnings and errors)."""
        if self.quiet and level == "info":
            return
        if self.gone:
            self.writer.dropped += message.rstrip("\n").count("\n") + 1
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
        self.writer.write(data)
