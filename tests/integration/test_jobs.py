"""Jobs on a real runner (CONTRACT §11): schedules, SCHEDULED, start NAME, overlap, timeout."""

from __future__ import annotations

import json

import pytest

from conftest import wait_until
from control_helpers import ctl, services, start_runner

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sock(tmp_path):
    return str(tmp_path / "ctl.sock")


def runs_of(runner, name: str) -> int:
    return sum(1 for line in runner.lines if f"{name}: started (pid" in line)


def test_an_every_job_runs_repeatedly_and_waits_scheduled(run_entrypoint, write_config, sock):
    config = write_config("""
        [[services]]
        name = "tick"
        command = "sh"
        args = ["-c", "echo tick"]
        every = "1s"
    """)
    runner = start_runner(run_entrypoint, config, sock, tick="SCHEDULED")
    wait_until(lambda: runs_of(runner, "tick") >= 3, 10, what="three runs")
    snap = services(sock)["tick"]
    assert snap["state"] in ("SCHEDULED", "STARTING", "RUNNING")
    assert snap["job"]["schedule"] == "every 1s"
    assert snap["next_run"] is not None
    table = ctl(sock, "list")
    assert "NEXT RUN" in table.stdout.splitlines()[0]
    # A config of jobs alone keeps the runner up between runs.
    assert runner.proc.poll() is None
    runner.signal(15)
    assert runner.wait() == 0


def test_start_runs_a_job_now_and_it_goes_back_to_scheduled(run_entrypoint, write_config, sock,
                                                            tmp_path):
    marker = tmp_path / "ran"
    config = write_config(f"""
        [[services]]
        name = "yearly"
        command = "sh"
        args = ["-c", "echo ran >> {marker}"]
        schedule = "@yearly"
    """)
    start_runner(run_entrypoint, config, sock, yearly="SCHEDULED")
    assert services(sock)["yearly"]["next_run"] > 0
    assert not marker.exists()
    done = ctl(sock, "start", "yearly")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: marker.exists() and services(sock)["yearly"]["state"] == "SCHEDULED", 10,
               what="the manual run")
    snap = services(sock)["yearly"]
    assert snap["last_run"]["trigger"] == "manual" and snap["last_run"]["ok"]
    assert marker.read_text() == "ran\n"


def test_a_failed_run_never_fails_the_job_and_retry_every_comes_early(run_entrypoint,
                                                                      write_config, sock):
    config = write_config("""
        [[services]]
        name = "flaky"
        command = "sh"
        args = ["-c", "echo failing; exit 3"]
        schedule = "@yearly"
        run_on_start = true
        retry_every = 1
    """)
    runner = start_runner(run_entrypoint, config, sock)
    wait_until(lambda: runs_of(runner, "flaky") >= 2, 10, what="a run and its retry")
    snap = services(sock)["flaky"]
    assert snap["state"] != "FAILED"
    assert any("run failed (exit status 3)" in line for line in runner.lines)


def test_timeout_stops_a_run_and_the_job_stays_scheduled(run_entrypoint, write_config, sock):
    config = write_config("""
        [timeouts]
        service_shutdown_timeout = 2
        [[services]]
        name = "stuck"
        command = "sleep 100"
        schedule = "@yearly"
        run_on_start = true
        timeout = 1
    """)
    runner = start_runner(run_entrypoint, config, sock)
    runner.wait_for(r"stuck: run took longer than its timeout \(1s\)")
    runner.wait_for(r"stuck: run failed \(timed out\)")
    wait_until(lambda: services(sock)["stuck"]["state"] == "SCHEDULED", 10, what="SCHEDULED")
    assert services(sock)["stuck"]["pid"] is None


@pytest.mark.parametrize("overlap", ["skip", "queue", "replace"])
def test_overlap(run_entrypoint, write_config, sock, overlap):
    config = write_config(f"""
        [timeouts]
        service_shutdown_timeout = 2
        [[services]]
        name = "long"
        command = "sh"
        args = ["-c", "echo run $$; sleep 2.5"]
        every = "1s"
        overlap = "{overlap}"
    """)
    runner = start_runner(run_entrypoint, config, sock)
    if overlap == "skip":
        runner.wait_for(r"long: schedule run skipped: the previous run \(pid \d+\) is still going")
        runner.wait_for(r"long: started \(pid", count=2, timeout=20)
    elif overlap == "queue":
        runner.wait_for(r"long: schedule run queued")
        # The queued run starts right after the first ends: no timer period in between.
        runner.wait_for(r"long: exited \(exit status 0\)", timeout=20)
        runner.wait_for(r"long: started \(pid", count=2, timeout=5)
        assert not any("skipped" in line for line in runner.lines)
    else:
        runner.wait_for(r"long: schedule run replaces the previous run")
        runner.wait_for(r"long: exited \(killed by SIGTERM\)")
        runner.wait_for(r"long: started \(pid", count=2, timeout=5)


def test_check_rejects_a_bad_job(run_entrypoint, write_config):
    from conftest import PYTHON, entrypoint_env
    import subprocess

    config = write_config("""
        [[services]]
        name = "job"
        command = "true"
        schedule = "0 0 30 2 *"
        timezone = "Nowhere/Land"
    """)
    done = subprocess.run([PYTHON, "-m", "entrypoint", "check", "-c", config], capture_output=True,
                          text=True, env=entrypoint_env(), timeout=30)
    assert done.returncode == 2
    assert 'services[0] "job": schedule:' in done.stderr
    assert 'services[0] "job": timezone: unknown timezone' in done.stderr
    assert "Traceback" not in done.stderr
