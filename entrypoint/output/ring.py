"""The last lines of each service, kept in memory for `entrypoint logs`."""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Callable

_arrivals = itertools.count()   # orders blocks of all rings that share a timestamp
MAX_BYTES = 1 << 20             # per service: 1,000 lines of 100 KB must not hold 100 MB


class LogRing:
    """The last `max_lines` lines of one service, at most `max_bytes`, as whole-line blocks.

    Each block keeps when it arrived, so `logs` can merge several services in order.
    Lines are split only when `tail` asks; subscribers (`logs -f`) get each new block.
    One ring per service name outlives the service's restarts. The newest line is always
    kept, even when it alone is longer than `max_bytes`.
    """

    def __init__(self, max_lines: int = 1000, max_bytes: int = MAX_BYTES):
        self.max_lines = max(1, max_lines)
        self.max_bytes = max_bytes
        # (arrival time, arrival number, block, line count)
        self._blocks: deque[tuple[float, int, bytes, int]] = deque()
        self._lines = 0
        self._bytes = 0
        self.total = 0          # lines ever appended (the metrics' log_lines_total)
        self._subscribers: list[Callable[[bytes], None]] = []

    def __len__(self) -> int:
        return self._lines

    def append(self, block: bytes, count: int | None = None) -> None:
        """Keep `block` (whole lines); `count`, its number of lines, when already known."""
        if count is None:
            count = block.count(b"\n")
        self._blocks.append((time.time(), next(_arrivals), block, count))
        self._lines += count
        self._bytes += len(block)
        self.total += count
        if self._lines > self.max_lines or self._bytes > self.max_bytes:
            self._trim()
        for callback in list(self._subscribers):
            try:
                callback(block)
            except Exception:           # a broken follower must not break the output
                self._drop(callback)

    def _trim(self) -> None:
        # Whole old blocks go first; then the oldest block left loses its first lines.
        blocks = self._blocks
        while len(blocks) > 1:
            count, size = blocks[0][3], len(blocks[0][2])
            if self._lines - count < self.max_lines and self._bytes - size < self.max_bytes:
                break
            blocks.popleft()
            self._lines -= count
            self._bytes -= size
        at, number, block, count = blocks[0]
        drop = max(0, self._lines - self.max_lines)
        excess = self._bytes - self.max_bytes
        if excess > 0:      # the lines up to the one holding the excess-th byte
            drop = max(drop, block.count(b"\n", 0, block.find(b"\n", excess - 1) + 1))
        drop = min(drop, count - 1)     # the newest line stays
        if drop <= 0:
            return
        cut = _line_start(block, count, drop)
        blocks[0] = (at, number, block[cut:], count - drop)
        self._lines -= drop
        self._bytes -= cut

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


def _line_start(block: bytes, count: int, k: int) -> int:
    """Offset of line `k` (from 0) of `block`, which holds `count` whole lines.

    Searched from whichever end is nearer: a ring trims a burst of thousands of lines
    down to its last few on every append.
    """
    if k <= count - k:
        pos = 0
        for _ in range(k):
            pos = block.find(b"\n", pos) + 1
        return pos
    pos = len(block) - 1                # the last newline
    for _ in range(count - k):
        pos = block.rfind(b"\n", 0, pos)
    return pos + 1
