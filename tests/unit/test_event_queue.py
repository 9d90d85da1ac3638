"""Pure logic of §9: the bounded event queue of a subscriber, /proc stat parsing."""

from __future__ import annotations

import asyncio

from entrypoint.control.events import Subscriber
from entrypoint.control.resources import ResourceMeter, parse_stat


def _event(name: str, n: int) -> dict:
    return {"service": name, "state": "RUNNING", "n": n}


def test_a_slow_subscriber_keeps_a_bounded_queue_and_learns_it_fell_behind():
    sub = Subscriber(None, limit=10)
    for n in range(25):
        sub.put(_event("web", n))
    assert len(sub.queue) <= 10
    events, dropped = asyncio.run(sub.get())
    assert dropped + len(events) == 25 and dropped > 0
    assert events[-1]["n"] == 24        # the newest is never the one dropped
    sub.put(_event("web", 25))
    assert asyncio.run(sub.get()) == ([_event("web", 25)], 0)


def test_a_subscriber_hears_only_its_services_and_ends():
    sub = Subscriber(frozenset({"db"}))
    sub.put(_event("web", 1))
    sub.put(_event("db", 2))
    sub.end()
    assert asyncio.run(sub.get()) == ([_event("db", 2)], 0)
    assert asyncio.run(sub.get()) == ([], 0)


def test_parse_stat_survives_odd_command_names():
    fields = ["S", "1", "4242", "4242"] + ["0"] * 7 + ["150", "50"] + ["0"] * 8 + ["321"]
    line = b"4243 (a) b (c)) " + " ".join(fields).encode()
    assert parse_stat(line) == (4242, 200, 321)
    assert parse_stat(b"garbage") is None
    assert parse_stat(b"1 (x) S 1") is None


def test_cpu_percent_is_the_delta_between_readings():
    now = [100.0]
    meter = ResourceMeter(clock=lambda: now[0])
    assert meter._percent(None, 100.0, 5.0, 10.0) == 50.0       # average over the run
    assert meter._percent((99.0, 4.0), 100.0, 4.5, 10.0) == 50.0
    assert meter._percent((99.0, 4.0), 101.0, 6.0, 10.0) == 100.0
    assert meter._percent(None, 100.0, 1.0, None) is None
