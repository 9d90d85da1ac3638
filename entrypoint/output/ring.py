"""The last lines of each service, kept in memory for `entrypoint logs`."""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Callable

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
        self.total += count
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
