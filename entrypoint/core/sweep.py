"""Finding and signalling the processes left below the runner (the final sweep)."""

from __future__ import annotations

import os
from typing import Iterable

SWEEP_GRACE = 5.0   # leftover processes get this long between SIGTERM and SIGKILL


def descendants(root: int) -> list[int]:
    """Every live process below `root` (all others, when `root` is PID 1), from /proc.

    Raises FileNotFoundError when /proc is not mounted: "none" would be a lie."""
    if not os.path.exists("/proc/self"):
        raise FileNotFoundError("/proc is not mounted")
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


def leftovers_text() -> str:
    """`N leftover process(es): pid (comm), ...` for a last message; never raises."""
    try:
        pids = descendants(os.getpid())
    except OSError as exc:
        return f"leftover processes unknown ({exc})"
    if not pids:
        return "no leftover process"
    return f"{len(pids)} leftover process(es): " + ", ".join(f"{p} ({_comm(p)})" for p in pids[:10])


async def final_sweep(reaper, printer, loop, deadline: float, forced: bool) -> None:
    """TERM, then KILL, whatever descendant is left; return when no child is left.

    The SIGKILL comes after SWEEP_GRACE, or at `deadline` (global_shutdown_timeout)
    when that is sooner; at once when the shutdown was `forced`."""
    import asyncio
    import signal

    me = os.getpid()
    # No child at all means no descendant at all (orphans are re-parented to us, as
    # PID 1 or subreaper): skip reading every /proc/*/stat, ~2 ms on a busy host.
    try:
        leftovers = descendants(me) if reaper.has_children() else []
    except OSError as exc:
        # Without /proc we cannot find them to signal them; we still wait for our
        # children (the shutdown's bound ends the wait).
        printer.system(f"cannot look for leftover processes: {exc}", "warning")
        await reaper.wait_no_children()
        return
    grace = min(SWEEP_GRACE, deadline - loop.time())
    kill_now = forced or grace <= 0
    if leftovers:
        listing = ", ".join(f"{pid} ({_comm(pid)})" for pid in leftovers[:10])
        printer.system(f"{len(leftovers)} leftover process(es): {listing}; "
                       f"sending {'SIGKILL' if kill_now else 'SIGTERM'}", "warning")
    if leftovers and kill_now:
        _signal_all(leftovers, signal.SIGKILL)
    elif leftovers:
        _signal_all(leftovers, signal.SIGTERM)

        async def gone() -> None:
            # Every descendant, not only these: a TERM handler may start new ones.
            while descendants(me):
                await asyncio.sleep(0.05)

        try:
            await asyncio.wait_for(gone(), grace)
        except asyncio.TimeoutError:
            still = descendants(me)
            printer.system(f"sending SIGKILL to {len(still)} process(es)", "warning")
            _signal_all(still, signal.SIGKILL)
    for _ in range(2):
        try:
            await asyncio.wait_for(reaper.wait_no_children(), SWEEP_GRACE)
            return
        except asyncio.TimeoutError:
            # Something outlived the sweep (forked meanwhile): never exit leaving it.
            _signal_all(descendants(me), signal.SIGKILL)
    printer.system("some children could not be reaped; exiting anyway", "warning")
