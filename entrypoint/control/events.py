"""State and health changes as events (CONTRACT §9): `entrypoint events`, `wait`, the
HTTP API's event stream.

The hub is fed by the supervisor's change listeners (one call per state or health
change) and fans each change out to subscribers. A subscriber's queue is bounded: a
reader that does not keep up never slows the runner; when its queue is full, what was
queued is dropped and the subscriber is told it fell behind (then gets a fresh
snapshot, so it is consistent again).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from entrypoint.core.state import TERMINAL, State

QUEUE_LIMIT = 1000          # events queued for one subscriber before it "fell behind"
CONDITIONS = ("started", "healthy", "completed")


def event_of(service) -> dict:
    """The event for `service` as it is now: time, service, state, health, pid, exit, reason."""
    exit_status = service.last_exit
    reason = service.history[-1][2] if service.history else ""
    return {"time": time.time(), "service": service.name, "state": service.state.value,
            "health": service.health, "pid": service.pid,
            "exit": None if exit_status is None else exit_status.describe(),
            "reason": reason}


class Subscriber:
    """One reader's bounded queue of events; `get()` waits for the next batch."""

    def __init__(self, names: frozenset[str] | None, limit: int = QUEUE_LIMIT):
        self.names = names
        self.limit = limit
        self.queue: deque[dict] = deque()
        self.dropped = 0            # events lost since the reader last caught up
        self.ended = False
        self._wake = asyncio.Event()

    def put(self, event: dict) -> None:
        if self.names is not None and event["service"] not in self.names:
            return
        if len(self.queue) >= self.limit:
            self.dropped += len(self.queue)
            self.queue.clear()
        self.queue.append(event)
        self._wake.set()

    def end(self) -> None:
        self.ended = True
        self._wake.set()

    async def get(self) -> tuple[list[dict], int]:
        """(events, how many were dropped before them); ([], 0) once ended."""
        while not self.queue and not self.ended:
            self._wake.clear()
            await self._wake.wait()
        events, dropped = list(self.queue), self.dropped
        self.queue.clear()
        self.dropped = 0
        return events, dropped


class EventHub:
    """Every state or health change of every service, to every subscriber."""

    def __init__(self, supervisor):
        self.sup = supervisor
        self._subscribers: list[Subscriber] = []

    def on_change(self, service) -> None:
        if not self._subscribers:
            return
        event = event_of(service)
        for subscriber in self._subscribers:
            subscriber.put(event)

    def snapshot(self, names: list[str] | None = None) -> list[dict]:
        return [event_of(s) for s in self.sup.services.values() if not names or s.name in names]

    def subscribe(self, names: list[str] | None = None, limit: int = QUEUE_LIMIT) -> Subscriber:
        subscriber = Subscriber(frozenset(names) if names else None, limit)
        self._subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def close(self) -> None:
        for subscriber in self._subscribers:
            subscriber.end()


def check_condition(service, condition: str | None) -> tuple[bool | None, str]:
    """(True, _) met, (False, why) can no longer be met, (None, _) not yet.

    Judged on the service as it is now: a service that started once but is STOPPED now
    does not count as started (a script waiting for it would talk to nothing).
    """
    cond = condition or service.ready_condition
    state = service.state
    if state == State.FAILED:
        return False, f"{service.name} FAILED ({service.last_error or 'no reason given'})"
    if cond in ("completed", "started") and service.completed_once and state == State.COMPLETED:
        return True, ""     # a oneshot that ran to completion has started, too
    if state in TERMINAL:
        return False, f"{service.name} is {state.value}; it will not become {cond} by itself"
    if cond == "started" and (state == State.RUNNING
                              or state == State.STARTING and service.pid is not None):
        return True, ""     # the process is up (a healthcheck may still be pending)
    if cond == "healthy" and state == State.RUNNING and service.health == "healthy":
        return True, ""
    return None, ""


async def wait_for(services: list, condition: str | None, timeout: float | None) -> dict:
    """Wait until each service meets `condition` (its ready condition when None).

    Returns {"ok": True} when all do, or {"ok": False, "service": NAME, "error": WHY}
    as soon as one cannot, or when `timeout` seconds passed (naming those not there).
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        pending = []
        for service in services:
            met, why = check_condition(service, condition)
            if met is False:
                return {"ok": False, "service": service.name, "error": why}
            if met is None:
                pending.append(service)
        if not pending:
            return {"ok": True}
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            names = ", ".join(f"{s.name} ({s.state.value}, health {s.health})" for s in pending)
            cond = condition or "ready"
            return {"ok": False, "service": pending[0].name,
                    "error": f"timed out after {timeout:g}s waiting for {cond}: {names}"}
        changes = [asyncio.ensure_future(s.changed()) for s in pending]
        try:
            await asyncio.wait(changes, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for change in changes:
                change.cancel()
