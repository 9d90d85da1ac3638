"""The run history (CONTRACT §11): one record per run of every service, the last
`KEEP` per service in memory. Standard library only.

A run is begun when its process is spawned (or its start failed), marked ready when it
is up (RUNNING, healthy, or a job's run), and finished with its exit; the record keeps
the trigger, times, exit, outcome, why, and the last status text and progress.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field

KEEP = 100          # runs per service in memory
TRIGGERS = ("start", "restart", "schedule", "manual", "health", "watchdog", "reload")


@dataclass
class Run:
    service: str
    trigger: str
    start: float
    ready: float | None = None
    end: float | None = None
    duration: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    outcome: str = "running"     # ok | failed | timeout | watchdog | stopped | replaced | not started
    why: str = ""
    status: str = ""             # the last STATUS= text
    progress: dict | None = field(default=None)   # done, total, failed at the end
    planned: float | None = None  # a scheduled run: the time it was due (start - planned: late)

    def finish(self, exit_status, error: str, *, stopped: bool = False,
               timed_out: bool = False, replaced: bool = False,
               watchdog: bool = False) -> "Run":
        self.end = time.time()
        self.duration = self.end - self.start
        if exit_status is None:
            self.outcome, self.why = "not started", error
            return self
        self.exit_code, self.signal = exit_status.code, exit_status.signal
        self.why = exit_status.describe()
        if timed_out:
            self.outcome, self.why = "timeout", f"timed out; {self.why}"
        elif watchdog:
            self.outcome, self.why = "watchdog", f"killed by its watchdog; {self.why}"
        elif replaced:
            self.outcome = "replaced"
        elif stopped:
            self.outcome = "stopped"
        elif error:      # it ran, but failed whatever its exit (not ready in time)
            self.outcome, self.why = "failed", f"{error}; {self.why}"
        else:
            self.outcome = "ok" if exit_status.success else "failed"
        return self

    def as_dict(self) -> dict:
        return asdict(self)


class History:
    """The last KEEP runs of each service, oldest first."""

    def __init__(self, keep: int = KEEP):
        self.keep = keep
        self._runs: dict[str, deque[Run]] = {}
        self.listeners: list = []        # called with each finished run (the SQLite writer)

    def add(self, run: Run, finished: bool = True, *, persist: bool = True) -> None:
        """A run began (shown as running) or ended (`finished`: then saved by listeners)."""
        runs = self._runs.setdefault(run.service, deque(maxlen=self.keep))
        if not runs or runs[-1] is not run:
            runs.append(run)
        if finished and persist:
            for listener in self.listeners:
                listener(run)

    def names(self) -> list[str]:
        return list(self._runs)

    def query(self, names: list[str] | None = None, n: int = 20) -> list[dict]:
        """The last `n` runs of `names` (all services when None), oldest first."""
        runs = [r for name, rs in self._runs.items() if names is None or name in names for r in rs]
        runs.sort(key=lambda r: r.start)
        return [r.as_dict() for r in runs[-n:]] if n else []


def note_progress(service, said: set[str]) -> None:
    """A notify datagram (core/notify.py): keep its status text and progress in the
    current run's record, so that they outlive the end of the run (CONTRACT §11)."""
    run = service.current_run
    if run is None or not said & {"STATUS", "X_PROGRESS", "X_FAILED"}:
        return
    said_json = service.notify.to_json()
    if said_json.get("status"):
        run.status = said_json["status"]
    if said_json.get("progress") is not None:
        run.progress = said_json["progress"]
