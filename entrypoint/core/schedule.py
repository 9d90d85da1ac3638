"""When a job runs next: pure logic over a wall clock and a monotonic clock (CONTRACT §11).

A cron `schedule` names wall-clock times in the job's timezone; `every` is a period of
real time. The runner's timers run on the loop's monotonic clock (`loop.call_at`), which
no `date -s` or NTP step moves. So a plan says both: `at`, the monotonic time to fire,
and `wall`, what it stands for (shown as `next_run`).

- cron: the next slot is computed from the wall clock *after each run* (or each fire),
  strictly after the last slot fired: a clock set back does not fire that slot again, a
  clock set forward fires once and plans from the new time (no burst of missed runs).
  DST follows cronsim (Debian cron): a time skipped by DST runs once just after the gap,
  a repeated time runs once (jobs with a fixed hour); `*` hours follow real time.
- every: slots on the monotonic clock, `last + every`, missed ones skipped (never a burst).

cronsim is imported here, and this module only when a config has a job.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime

from entrypoint.config.spec import JobSpec

CRON_ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
                "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
                "@annually": "0 0 1 1 *"}
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
EVERY_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
MAX_PERIOD = 366 * 86400


def parse_every(value) -> float:
    """`10`, `2.5`, `"90s"`, `"10m"`, `"1h"`, `"1d"` as seconds; ValueError saying why."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected seconds or a text like \"10m\", got {value!r}")
    if isinstance(value, str):
        m = EVERY_RE.fullmatch(value)
        if not m:
            raise ValueError(f"{value!r} is not a duration; use seconds or a number with "
                             f"s, m, h or d, e.g. \"30s\", \"10m\", \"1h\"")
        seconds = float(m[1]) * UNITS[m[2] or "s"]
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be more than 0 seconds, got {value!r}")
    if seconds > MAX_PERIOD:
        raise ValueError(f"{value!r} is more than a year; use a cron schedule")
    return seconds


def expand_cron(expr: str) -> str:
    return CRON_ALIASES.get(expr.strip().lower(), expr.strip())


def zone(name: str):
    """The tz database zone `name`; ValueError when there is none."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown timezone {name!r}; use a tz database name like "
                         f"\"UTC\" or \"Europe/Berlin\"") from None


def cron_problem(expr: str) -> str | None:
    """Why `expr` is not a usable cron schedule (a typo, an impossible date), or None."""
    from cronsim import CronSim, CronSimError

    text = expand_cron(expr)
    try:
        it = CronSim(text, datetime(2000, 1, 1))
        next(it)
    except CronSimError as exc:
        return f"{expr!r} is not a valid cron schedule: {exc}"
    except (StopIteration, ValueError, OverflowError) as exc:
        return f"{expr!r} never runs ({exc or 'no matching date'})"
    return None


@dataclass(frozen=True)
class Plan:
    at: float       # loop (monotonic) time to fire
    wall: float     # the wall-clock time it stands for
    slot: float     # what the next plan starts from: a cron slot (wall) or an every slot (monotonic)


class Schedule:
    def __init__(self, job: JobSpec):
        self.job = job
        self._tz = zone(job.timezone) if job.schedule else None
        self._cron = expand_cron(job.schedule) if job.schedule else None

    def describe(self) -> str:
        if self._cron is not None:
            tz = "" if self.job.timezone == "UTC" else f" {self.job.timezone}"
            return f"cron {self.job.schedule}{tz}"
        return f"every {self.job.every:g}s"

    def next(self, wall: float, mono: float, last: float | None) -> Plan:
        """The first planned run after now (`wall`, `mono`) and after slot `last`."""
        every = self.job.every
        if every is not None:
            if last is None:
                slot = mono + every
            else:
                slot = last + every
                if slot <= mono:        # missed slots (the loop was held up): skip them
                    slot = last + every * (math.floor((mono - last) / every) + 1)
            return Plan(slot, wall + (slot - mono), slot)
        from cronsim import CronSim

        after = wall if last is None else max(wall, last)
        start = datetime.fromtimestamp(after, self._tz)
        slot = next(CronSim(self._cron, start)).timestamp()
        while slot <= after:            # cronsim works in whole minutes
            start = datetime.fromtimestamp(slot, self._tz)
            slot = next(CronSim(self._cron, start)).timestamp()
        return Plan(mono + max(0.0, slot - wall), slot, slot)

    def retry(self, wall: float, mono: float, last: float | None) -> Plan:
        """After a failed run with `retry_every`: the retry, keeping the schedule's place."""
        delay = self.job.retry_every or 0.0
        slot = mono + delay if self.job.every is not None else (last if last is not None else wall)
        return Plan(mono + delay, wall + delay, slot)
