"""Run history on a real runner (CONTRACT §11): every run recorded, in memory and, with
state_dir, in SQLite that outlives the runner; a bad state_dir is refused, never fatal."""

from __future__ import annotations

import json
import sqlite3

import pytest

from conftest import wait_until
from control_helpers import ctl, start_runner

pytestmark = pytest.mark.timeout(60)


def history(sock: str, *args: str) -> list[dict]:
    done = ctl(sock, "history", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


CRASHER = """
    {state}
    [[services]]
    name = "crasher"
    command = "sh"
    args = ["-c", "echo boom; exit 7"]
    restart_delay = 0.1
    restart_delay_max = 0.1
    restart_limit = 3
    [[services]]
    name = "steady"
    command = "sleep 1000"
"""


def test_history_explains_a_crash_loop(run_entrypoint, write_config, sock):
    runner = start_runner(run_entrypoint, write_config(CRASHER.format(state="")), sock,
                          crasher="FAILED", steady="RUNNING")
    runs = history(sock, "crasher")
    assert [r["trigger"] for r in runs] == ["start", "restart", "restart"]
    assert all(r["outcome"] == "failed" and r["exit_code"] == 7 for r in runs)
    assert all(r["end"] >= r["start"] and r["duration"] >= 0 for r in runs)
    table = ctl(sock, "history", "crasher").stdout.splitlines()
    assert table[0].split() == ["START", "SERVICE", "TRIGGER", "DURATION", "EXIT", "OUTCOME", "WHY"]
    assert len(table) == 4 and all("exit status 7" in line for line in table[1:])
    assert len(history(sock, "-n", "1")) == 1
    unknown = ctl(sock, "history", "nope")
    assert unknown.returncode == 1 and "crasher" in unknown.stderr
    # A manual restart and its trigger; the stopped run of "steady" says it was stopped.
    assert ctl(sock, "restart", "steady").returncode == 0
    steady = history(sock, "steady")
    assert [(r["trigger"], r["outcome"]) for r in steady] == [("start", "stopped"),
                                                              ("manual", "running")]
    assert steady[1]["ready"] is not None and steady[1]["end"] is None
    runner.signal(15)
    assert runner.wait() == 0


def test_history_survives_a_restart_of_the_runner(run_entrypoint, write_config, sock, tmp_path):
    state = tmp_path / "state"
    config = write_config(CRASHER.format(state=f'state_dir = "{state}"'))
    first = start_runner(run_entrypoint, config, sock, crasher="FAILED", steady="RUNNING")
    first.signal(15)
    assert first.wait() == 0
    rows = sqlite3.connect(state / "entrypoint.sqlite").execute(
        "SELECT service, trigger, outcome FROM runs ORDER BY id").fetchall()
    assert ("steady", "start", "stopped") in rows and rows.count(("crasher", "restart", "failed")) == 2

    second = start_runner(run_entrypoint, config, sock, crasher="FAILED", steady="RUNNING")
    runs = history(sock, "crasher")
    assert len(runs) == 6 and [r["trigger"] for r in runs].count("start") == 2
    second.signal(15)
    assert second.wait() == 0
    assert "Traceback" not in second.stderr


def test_a_corrupt_state_file_is_refused_and_history_stays_in_memory(run_entrypoint, write_config,
                                                                    sock, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    garbage = b"this is not an sqlite database, but someone's notes\n" * 100
    (state / "entrypoint.sqlite").write_bytes(garbage)
    config = write_config(CRASHER.format(state=f'state_dir = "{state}"'))
    runner = start_runner(run_entrypoint, config, sock, crasher="FAILED", steady="RUNNING")
    runner.wait_for(r"state_dir: .*entrypoint.sqlite\" cannot be read .*kept in memory only")
    assert len(history(sock, "crasher")) == 3
    runner.signal(15)
    assert runner.wait() == 0
    assert (state / "entrypoint.sqlite").read_bytes() == garbage     # not clobbered
    assert "Traceback" not in runner.output + runner.stderr


def test_a_read_only_state_dir_is_refused(run_entrypoint, write_config, sock, tmp_path):
    # Root ignores file modes: a read-only bind mount in a mount namespace of its own.
    state = tmp_path / "state"
    state.mkdir()
    config = write_config(CRASHER.format(state=f'state_dir = "{state}"'))
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
              f'mount --bind -o ro "{state}" "{state}" && exec "$0" "$@"']
    runner = run_entrypoint("-c", config, "--socket", sock, prefix=prefix,
                            env=__import__("control_helpers").ctl_env(sock))
    runner.wait_for(r"state_dir: state_dir \".*\" is not writable .*kept in memory only")
    wait_until(lambda: len(history(sock, "crasher")) == 3, 15, what="three runs in memory")
    runner.signal(15)
    assert runner.wait() == 0
    assert list(state.iterdir()) == []
