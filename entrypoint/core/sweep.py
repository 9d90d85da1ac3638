"""Finding and signalling the processes left below the runner (the final sweep)."""

from __future__ import annotations

import os
from typing import Iterable

SWEEP_GRACE = 5.0   # leftover processes get this long between SIGTERM and SIGKILL


def descendants(root: int) -> list[int]:
    """Every live process below `root` (all others, when `root` is PID 1), from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if fields[0] == b"Z":
            continue   # a zombie: the reaper collects it
        parents[int(entry)] = int(fields[1])
    if root == 1:
        return sorted(pid for pid in parents if pid != 1)
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return sorted(found)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
