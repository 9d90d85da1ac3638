"""Bytes from services -> whole lines -> `name | line` on stdout, log files and rings.

The default text path does no per-line Python work: a fed chunk is split once at its last
newline (`rfind`), prefixed with one `bytes.replace`, and written with one `os.write`
loop, so lines of different services are never cut or interleaved. Only `--log-format
json` looks at single lines. Output errors never propagate: PID 1 must not die or hang
because nobody reads its stdout any more.
"""

from __future__ import annotations

import errno
import json
import os
import select
import time
import zlib
from typing import Callable, Iterable, Mapping

RUNNER = "entrypoint"
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

    quiet = False                 # --quiet: the runner's info lines are not printed

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
        """Print a runner message under the name `entrypoint` (with `quiet`: only
        warnings and errors)."""
        if self.gone or (self.quiet and level == "info"):
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
