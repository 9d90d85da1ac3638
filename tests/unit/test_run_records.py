"""The run record, the in-memory history and the SQLite writer's SQL (pure logic)."""

from __future__ import annotations

import sqlite3

import pytest

from entrypoint.core.reaper import ExitStatus
from entrypoint.store import writer
from entrypoint.store.history import History, Run

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize("status, flags, outcome", [
    (ExitStatus(0), {}, "ok"), (ExitStatus(3), {}, "failed"), (ExitStatus(None, 9), {}, "failed"),
    (ExitStatus(None, 15), {"stopped": True}, "stopped"),
    (ExitStatus(None, 15), {"timed_out": True}, "timeout"),
    (ExitStatus(None, 15), {"replaced": True}, "replaced"), (None, {}, "not started")])
def test_a_run_says_how_it_ended(status, flags, outcome):
    error = "cannot start: no such file" if status is None else ""
    run = Run("svc", "start", 100.0).finish(status, error, **flags)
    assert run.outcome == outcome and run.duration >= 0
    if status is None:
        assert run.why == "cannot start: no such file" and run.exit_code is None


def test_a_run_that_exited_0_but_was_never_ready_failed():
    run = Run("svc", "start", 100.0).finish(ExitStatus(0), "not ready within 5s (ready_timeout)")
    assert run.outcome == "failed" and run.why.startswith("not ready within 5s")
    assert run.exit_code == 0


def test_memory_keeps_the_last_runs_per_service_and_saves_only_finished_ones():
    saved = []
    h = History(keep=3)
    h.listeners.append(saved.append)
    for i in range(5):
        run = Run("a", "restart", float(i))
        h.add(run, False)
        h.add(run.finish(ExitStatus(1), ""), True)
    h.add(Run("b", "start", 2.5), False)
    assert [r["start"] for r in h.query(["a"], 10)] == [2.0, 3.0, 4.0]
    assert [r["service"] for r in h.query(None, 10)] == ["a", "b", "a", "a"]
    assert len(saved) == 5 and h.query(None, 0) == []


def test_the_writer_prunes_the_oldest_runs_of_a_service(monkeypatch):
    monkeypatch.setattr(writer, "KEEP_PER_SERVICE", 3)
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript(writer.SCHEMA)
    for i in range(5):
        writer.apply(db, {"t": "run", "run": Run("a", "schedule", float(i)).as_dict()})
    writer.apply(db, {"t": "run", "run": Run("b", "start", 9.0).as_dict()})
    writer.apply(db, {"t": "enabled", "service": "a", "enabled": False})
    assert [r[0] for r in db.execute("SELECT start FROM runs WHERE service = 'a'")] == [2.0, 3.0, 4.0]
    assert db.execute("SELECT count(*) FROM runs WHERE service = 'b'").fetchone() == (1,)
    assert db.execute("SELECT enabled FROM enabled").fetchall() == [(0,)]
