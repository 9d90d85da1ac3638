"""CPU and memory of each service, summed over its process group, read from /proc
(CONTRACT §9): `cpu_seconds`, `cpu_percent` and `rss_bytes` in `list --json` and `status`.

Each service leads its own process group (its pid is the group's id), so one pass over
/proc/*/stat finds every process of every service, its forks included. CPU percent is
the CPU time used since the previous reading, over the wall time between (100 = one core).
"""

from __future__ import annotations

import os
import time

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def read_groups(pgids: set[int], proc: str = "/proc") -> dict[int, tuple[float, int]]:
    """{pgid: (cpu seconds, rss bytes)} summed over every process of each group in `pgids`."""
    totals: dict[int, list] = {pgid: [0, 0] for pgid in pgids}
    if not pgids:
        return {}
    try:
        entries = os.listdir(proc)
    except OSError:
        return {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue            # gone meanwhile
        fields = parse_stat(data)
        if fields is None:
            continue
        pgrp, ticks, rss_pages = fields
        total = totals.get(pgrp)
        if total is not None:
            total[0] += ticks
            total[1] += rss_pages
    return {pgid: (t[0] / _TICKS, t[1] * _PAGE) for pgid, t in totals.items()}


def parse_stat(data: bytes) -> tuple[int, int, int] | None:
    """(pgrp, utime + stime in ticks, rss in pages) from one /proc/PID/stat line."""
    # The command name (field 2) is in parentheses and may hold spaces and ')': split
    # after the last ')'.
    end = data.rfind(b")")
    if end < 0:
        return None
    rest = data[end + 2:].split()
    try:
        # rest[0] is field 3 (state): pgrp is field 5, utime 14, stime 15, rss 24.
        return int(rest[2]), int(rest[11]) + int(rest[12]), int(rest[21])
    except (IndexError, ValueError):
        return None


class ResourceMeter:
    """Adds cpu_seconds, cpu_percent and rss_bytes to service snapshots."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._last: dict[int, tuple[float, float]] = {}    # pgid -> (clock, cpu seconds)

    def annotate(self, snapshots: list[dict]) -> list[dict]:
        pgids = {s["pid"] for s in snapshots if s.get("pid")}
        usage = read_groups(pgids)
        now = self.clock()
        last, self._last = self._last, {}
        for snap in snapshots:
            pid = snap.get("pid")
            if not pid or pid not in usage:
                snap.update(cpu_seconds=None, cpu_percent=None, rss_bytes=None)
                continue
            cpu, rss = usage[pid]
            self._last[pid] = (now, cpu)
            snap.update(cpu_seconds=round(cpu, 2), rss_bytes=rss,
                        cpu_percent=self._percent(last.get(pid), now, cpu, snap.get("uptime")))
        return snapshots

    @staticmethod
    def _percent(previous, now: float, cpu: float, uptime: float | None) -> float | None:
        if previous is not None and now - previous[0] >= 0.05:
            return round(max(0.0, cpu - previous[1]) / (now - previous[0]) * 100, 1)
        if uptime:      # no earlier reading: the average over the run so far
            return round(cpu / max(uptime, 0.05) * 100, 1)
        return None
