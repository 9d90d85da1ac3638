"""A job's life between and around its runs: timer, triggers, overlap, timeout (CONTRACT §11).

A job is a `Service` whose run task, once its dependencies are ready, is `Job.main()`
instead of the restart loop: `SCHEDULED` until due, one run (`Service._run_once`: the
same hooks, spawn and drain as any service), `SCHEDULED` again. A failed run never makes
the job FAILED and is never restarted by a policy; `retry_every` plans an earlier run.

The timer is one `loop.call_at` per planned run, on the monotonic clock, re-planned from
the wall clock each time it fires (`core/schedule.py`): between runs the runner sleeps
(no periodic wake-up), and clock jumps neither burst nor stop the schedule. The timer
keeps running during a run, so that a time missed while the job still runs meets the
`overlap` rule: skip (default, with a line), queue (at most one waits), replace.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from entrypoint.core.schedule import Plan, Schedule
from entrypoint.core.state import State


@dataclass
class Trigger:
    why: str                   # "schedule", "start" (run_on_start), "manual", "retry"
    planned: float             # the wall time it was due (lateness = start - planned)


class Job:
    def __init__(self, service):
        self.service = service
        self.spec = service.spec.job
        self.schedule = Schedule(self.spec)
        self.plan: Plan | None = None
        self._slot: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pending: Trigger | None = None     # the run that waits (at most one)
        self._wakeup = asyncio.Event()
        self.running: Trigger | None = None
        self.timed_out = False
        self.replacing = False
        self._timeout: asyncio.TimerHandle | None = None
        self.runs = 0              # runs started since the runner began (for `start`)
        self.results: dict[str, int] = {}    # finished runs by result (metrics)
        self.last_success: float | None = None
        self.skipped = 0
        self.last_late = 0.0       # how late the last scheduled run started, in seconds
        self.paused = False        # disabled: the timer is not armed
        self.planned: float | None = None    # when the current run was due (scheduled runs)
        self.dynamic = False       # the armed plan came from X_NEXT_RUN: no retry replaces it

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.service.rt.loop

    @property
    def next_run(self) -> float | None:
        """Wall time of the next planned run (None while paused or stopped)."""
        if self._pending is not None and self.running is None:
            return self._pending.planned
        return self.plan.wall if self.plan is not None and self._timer is not None else None

    # -- the timer ----------------------------------------------------------------------

    def _arm(self, plan: Plan, why: str = "schedule") -> None:
        self._disarm()
        self.plan = plan
        self._timer = self.loop.call_at(plan.at, self._fire, why)
        self.service.rt.on_change(self.service)      # next_run changed: list/events show it

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm_next(self) -> None:
        self._arm(self.schedule.next(self.service.rt.wall(), self.loop.time(), self._slot))

    def _fire(self, why: str) -> None:
        self._timer = None
        self.dynamic = False
        plan = self.plan
        self._slot = plan.slot
        self._arm_next()                # the next time is planned now, from the wall clock
        self.trigger(Trigger(why, plan.wall))

    # -- triggers -----------------------------------------------------------------------

    def trigger(self, trigger: Trigger) -> None:
        """A run is due: start it, or apply `overlap` while a run is still going."""
        service = self.service
        if self.running is None:
            self._pending = trigger
            self._wakeup.set()
            return
        overlap = self.spec.overlap
        if overlap == "skip":
            self.skipped += 1
            service.say(f"{trigger.why} run skipped: the previous run (pid {service.pid}) is "
                        f"still going (overlap = \"skip\")", "warning")
        elif overlap == "queue":
            if self._pending is None:
                service.say(f"{trigger.why} run queued: it starts when the previous run ends")
            self._pending = trigger
        else:
            service.say(f"{trigger.why} run replaces the previous run (overlap = \"replace\")",
                        "warning")
            self._pending = trigger
            self.replacing = True
            self._stop_run("replaced by a new run")

    def run_now(self, why: str = "manual") -> None:
        self.trigger(Trigger(why, self.service.rt.wall()))

    def _stop_run(self, reason: str) -> None:
        child = self.service._child
        if child is not None and not child.reaped:
            self.loop.create_task(self.service._terminate(child, reason))

    def next_run_said(self, at: float | None) -> None:
        """`X_NEXT_RUN=` / `entrypoint notify --next-run`: the next run at `at` (a Unix
        time), once; the schedule takes over again after it (CONTRACT §11)."""
        service = self.service
        service.notify.next_run = None       # applied once, here
        if at is None or self.paused:
            return
        now = service.rt.wall()
        if at <= now:
            service.say(f"X_NEXT_RUN {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))} "
                        f"is in the past; the schedule stays", "warning")
            return
        self.dynamic = True
        self._arm(Plan(self.loop.time() + (at - now), at, self._slot), "schedule")
        service.say(f"next run moved by X_NEXT_RUN: {self._when()}")

    # -- pause (disable) --------------------------------------------------------------

    def pause(self) -> None:
        self.paused = True
        self._disarm()
        self._pending = None

    # -- the run task -------------------------------------------------------------------

    async def main(self) -> None:
        """The job's run task: runs when due until a stop is requested."""
        service = self.service
        self.paused = False
        service._set_state(State.SCHEDULED, self.schedule.describe())
        if self.spec.run_on_start and self._pending is None and self.runs == 0:
            self._pending = Trigger("start", service.rt.wall())
        if self._timer is None:
            self._arm_next()
        try:
            while not service.stop_requested:
                if self._pending is None:
                    self._wakeup.clear()
                    waits = [asyncio.ensure_future(self._wakeup.wait()),
                             asyncio.ensure_future(service._wake.wait())]
                    try:
                        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for w in waits:
                            w.cancel()
                    continue
                trigger, self._pending = self._pending, None
                await self._run(trigger)
        finally:
            self._disarm()
            self.plan = None
        service._set_state(State.STOPPED, "stopped")

    def spawned(self, child) -> None:
        """Called by the service right after the spawn: bound the run by `timeout`."""
        if self.spec.timeout:
            self._timeout = self.loop.call_later(self.spec.timeout, self._on_timeout, child)

    def _on_timeout(self, child) -> None:
        self._timeout = None
        if child.reaped:
            return
        self.timed_out = True
        self.service.say(f"run took longer than its timeout ({self.spec.timeout:g}s); "
                         f"stopping it", "warning")
        self.loop.create_task(self.service._terminate(child, "timeout"))

    async def _run(self, trigger: Trigger) -> None:
        service = self.service
        self.running = trigger
        self.timed_out = self.replacing = False
        self.runs += 1
        self.planned = trigger.planned if trigger.why in ("schedule", "retry") else None
        service.trigger = "manual" if trigger.why == "manual" else (
            "start" if trigger.why == "start" else "schedule")
        started = service.rt.wall()
        if trigger.why == "schedule":
            self.last_late = max(0.0, started - trigger.planned)
        service._set_state(State.STARTING, f"{trigger.why} run")
        try:
            attempt = await service._run_once()
        finally:
            if self._timeout is not None:
                self._timeout.cancel()
                self._timeout = None
            self.running = None
        # A run stopped by `stop`, `disable` or the shutdown did not fail.
        failed = not service.stop_requested and (
            attempt.exit is None or not attempt.exit.success or self.timed_out)
        what = ("stopped" if service.stop_requested else "timed out" if self.timed_out else
                attempt.exit.describe() if attempt.exit is not None else attempt.error)
        service.last_run = {"trigger": trigger.why, "started": started, "ended": time.time(),
                            "ok": not failed, "why": what}
        result = "stopped" if service.stop_requested else "failed" if failed else "ok"
        self.results[result] = self.results.get(result, 0) + 1
        if result == "ok":
            self.last_success = service.last_run["ended"]
        if service.stop_requested:
            return
        if failed and self.spec.retry_every and self._pending is None and not self.dynamic:
            self._arm(self.schedule.retry(service.rt.wall(), self.loop.time(), self._slot),
                      "retry")
        reason = f"last run {'failed' if failed else 'ok'} ({what})"
        service._set_state(State.SCHEDULED, reason)
        if failed:
            service.say(f"run failed ({what}); next run {self._when()}", "warning")

    def _when(self) -> str:
        at = self.next_run
        if at is None:
            return "not planned"
        return time.strftime("at %Y-%m-%d %H:%M:%S", time.localtime(at))

    def snapshot(self) -> dict:
        return {"schedule": self.schedule.describe(), "next_run": self.next_run,
                "overlap": self.spec.overlap, "runs": self.runs, "skipped": self.skipped,
                "last_late": self.last_late, "paused": self.paused,
                "running_since": None if self.running is None else self.running.planned}


def on_notify(service, said: set[str]) -> None:
    """A notify datagram of any service: a job's X_NEXT_RUN moves its next run."""
    if service.job is not None and "X_NEXT_RUN" in said:
        service.job.next_run_said(service.notify.next_run)
