"""`--report FILE`: the JSON summary of a run (time to ready, restarts, exits, last lines)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from conftest import entrypoint_env

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def env(tmp_path):
    return entrypoint_env(ENTRYPOINT_SOCKET=str(tmp_path / "ctl.sock"))


def read_report(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def by_name(report: dict) -> dict[str, dict]:
    return {s["name"]: s for s in report["services"]}


def test_report_after_a_cmd(run_entrypoint, write_config, tmp_path, env):
    cfg = write_config("""
        [[services]]
        name = "db"
        command = "sh"
        args = ["-c", "echo db up; exec sleep 30"]

        [[services]]
        name = "migrate"
        command = "sh"
        args = ["-c", "echo migrated"]
        oneshot = true
        depends_on = "db"

        [[services]]
        name = "off"
        command = "sleep 30"
        enabled = false
    """)
    report = tmp_path / "out" / "report.json"
    report.parent.mkdir()
    r = run_entrypoint("-c", cfg, "--report", str(report), "--", "sh", "-c", "exit 5", env=env)
    assert r.wait() == 5
    r.wait_for(r"report written to .*report\.json")
    data = read_report(report)
    assert data["version"] == 1
    assert data["exit_status"] == 5
    assert data["command"] == ["sh", "-c", "exit 5"]
    assert data["command_exit"]["status"] == 5
    assert "the command ended" in data["reason"]
    assert data["ready_after"] is not None and 0 <= data["ready_after"] < 10
    services = by_name(data)
    assert services["db"]["state"] == "STOPPED"
    assert services["db"]["exit"]["signal"] == signal.SIGTERM
    assert services["migrate"]["state"] == "COMPLETED"
    assert services["migrate"]["ready_condition"] == "completed"
    # migrate waited for db: it became ready later
    assert services["migrate"]["ready_after"] >= services["db"]["ready_after"]
    assert services["off"]["state"] == "DISABLED"
    assert services["off"]["ready_after"] is None
    for s in services.values():
        assert s["restarts"] == 0
        assert s["last_lines"] == []       # nothing failed
    assert not [n for n in os.listdir(report.parent) if n.startswith(".report-")]


def test_report_names_what_never_became_ready(run_entrypoint, write_config, tmp_path, env):
    cfg = write_config("""
        [[services]]
        name = "fine"
        command = "sleep 30"

        [[services]]
        name = "slow"
        command = "sh"
        args = ["-c", "echo still warming up; echo not listening yet; exec sleep 30"]
        healthcheck = { tcp = "127.0.0.1:9", interval = 0.2, retries = 100 }
    """)
    report = tmp_path / "report.json"
    r = run_entrypoint("-c", cfg, "--ready-timeout", "1.5", "--report", str(report),
                       "--", "true", env=env)
    assert r.wait() == 1
    # The message names the service, its state and condition, and shows its last lines.
    r.wait_for(r"services not ready after 1\.5s \(--ready-timeout\): slow \(STARTING, wants healthy\)")
    r.wait_for(r"slow \| not listening yet")
    data = read_report(report)
    assert data["exit_status"] == 1
    assert data["command_exit"] is None
    assert data["ready_after"] is None
    services = by_name(data)
    assert services["fine"]["ready_after"] is not None
    assert services["fine"]["last_lines"] == []
    assert services["slow"]["ready_after"] is None
    assert services["slow"]["last_lines"] == ["still warming up", "not listening yet"]


def test_report_counts_restarts_and_keeps_failed_lines(run_entrypoint, write_config, tmp_path,
                                                       env):
    cfg = write_config("""
        [[services]]
        name = "flaky"
        command = "sh"
        args = ["-c", "echo attempt; echo giving up >&2; exit 3"]
        restart = "on-failure"
        restart_delay = 0.1
        restart_limit = 3

        [[services]]
        name = "steady"
        command = "sleep 30"
    """)
    report = tmp_path / "report.json"
    r = run_entrypoint("-c", cfg, "--report", str(report), env=env)
    r.wait_for(r"flaky: gave up after 3 quick failures")
    r.signal(signal.SIGTERM)
    assert r.wait() == 0
    data = read_report(report)
    assert data["exit_status"] == 0
    assert data["reason"] == "SIGTERM"
    flaky = by_name(data)["flaky"]
    assert flaky["state"] == "FAILED"
    assert flaky["restarts"] == 2            # three runs: two restarts, then it gave up
    assert flaky["exit"]["code"] == 3
    assert "gave up" in flaky["error"]
    assert flaky["last_lines"][-2:] == ["attempt", "giving up"]
    assert by_name(data)["steady"]["last_lines"] == []


def test_unwritable_report_is_a_warning_not_a_failure(run_entrypoint, write_config, tmp_path, env):
    cfg = write_config("""
        [[services]]
        name = "one"
        command = "true"
        oneshot = true
    """)
    missing = tmp_path / "no-such-dir" / "report.json"
    r = run_entrypoint("-c", cfg, "--report", str(missing), env=env)
    assert r.wait() == 0
    r.wait_for(r"--report .*report\.json: directory .* is not writable")
    r.wait_for(r"--report .*report\.json: not written")
    assert not missing.exists()


def test_report_from_the_environment(run_entrypoint, write_config, tmp_path):
    cfg = write_config("""
        [[services]]
        name = "one"
        command = "true"
        oneshot = true
    """)
    report = tmp_path / "env-report.json"
    env = entrypoint_env(ENTRYPOINT_SOCKET=str(tmp_path / "ctl.sock"),
                         ENTRYPOINT_REPORT=str(report))
    r = run_entrypoint("-c", cfg, env=env)
    assert r.wait() == 0
    data = read_report(report)
    assert data["exit_status"] == 0
    assert data["reason"].startswith("every service has ended")
    assert by_name(data)["one"]["state"] == "COMPLETED"


def test_the_ci_example_runs_as_documented(run_entrypoint, tmp_path):
    """README "Use it in CI": `entrypoint -c services.toml --ready-timeout 60 --report ... -- pytest`
    in scripts/ci-example (copied, so that the run writes nothing into the checkout)."""
    import shutil
    import sys

    from conftest import ROOT, free_port

    example = tmp_path / "ci-example"
    shutil.copytree(ROOT / "scripts" / "ci-example", example)
    port = free_port()
    env = entrypoint_env(ENTRYPOINT_SOCKET=str(tmp_path / "ctl.sock"), API_PORT=str(port))
    r = run_entrypoint("-c", "services.toml", "--ready-timeout", "60",
                       "--report", "entrypoint-report.json",
                       "--", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       "test_e2e.py", cwd=str(example), env=env)
    assert r.wait(timeout=60) == 0, r.output + r.stderr
    r.wait_for(r"3 passed")
    data = read_report(example / "entrypoint-report.json")
    assert data["exit_status"] == 0
    assert data["command_exit"]["status"] == 0
    services = by_name(data)
    assert services["seed"]["state"] == "COMPLETED"
    assert services["api"]["ready_after"] >= services["seed"]["ready_after"]


def test_a_failing_ci_run_reports_the_failure(run_entrypoint, tmp_path):
    """The same example whose API cannot start: no test runs, exit 1, and the report keeps
    the API's last lines."""
    import shutil
    import socket

    from conftest import ROOT

    example = tmp_path / "ci-example"
    shutil.copytree(ROOT / "scripts" / "ci-example", example)
    with socket.socket() as busy:           # the API's port is taken: it cannot bind
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = entrypoint_env(ENTRYPOINT_SOCKET=str(tmp_path / "ctl.sock"), API_PORT=str(port))
        r = run_entrypoint("-c", "services.toml", "--ready-timeout", "20",
                           "--report", "entrypoint-report.json",
                           "--", "sh", "-c", "echo the tests ran; exit 0", cwd=str(example),
                           env=env)
        status = r.wait(timeout=60)
    assert status != 0
    assert "the tests ran" not in r.output
    data = read_report(example / "entrypoint-report.json")
    api = by_name(data)["api"]
    assert api["state"] == "FAILED"
    assert api["ready_after"] is None
    assert any("Address already in use" in line for line in api["last_lines"]), api
