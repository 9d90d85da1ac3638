"""`entrypoint enable|disable NAME...` on a real runner (CONTRACT §11): a disabled job's
schedule pauses; the choice outlives a reload, and a restart of the runner with state_dir."""

from __future__ import annotations

import pytest

from conftest import pid_alive, wait_until
from control_helpers import ctl, services, start_runner, wait_states

pytestmark = pytest.mark.timeout(60)

JOBS = """
    {state}
    [[services]]
    name = "tick"
    command = "sh"
    args = ["-c", "echo tick"]
    every = "0.5s"
    [[services]]
    name = "daemon"
    command = "sleep 1000"
"""


def runs(runner) -> int:
    return sum(1 for line in runner.lines if "tick: started (pid" in line)


def test_disable_pauses_a_job_across_a_reload_and_enable_resumes_it(run_entrypoint, write_config,
                                                                   sock):
    runner = start_runner(run_entrypoint, write_config(JOBS.format(state="")), sock,
                          daemon="RUNNING")
    wait_until(lambda: runs(runner) >= 2, 10, what="two runs")
    done = ctl(sock, "disable", "tick")
    assert done.returncode == 0, done.stderr
    snap = services(sock)["tick"]
    assert snap["state"] == "DISABLED" and snap["next_run"] is None and not snap["enabled"]
    assert ctl(sock, "reload").returncode == 0
    before = runs(runner)
    # Four periods later: still no run (the runner announces every run it starts).
    runner.wait_for("reload")
    with pytest.raises(AssertionError):
        wait_until(lambda: runs(runner) > before, 2.0, what="a run while disabled")
    assert services(sock)["tick"]["state"] == "DISABLED"
    done = ctl(sock, "enable", "tick")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: runs(runner) > before, 10, what="a run after enable")


def test_disabling_the_last_service_keeps_the_runner_up(run_entrypoint, write_config, sock):
    config = write_config("""
        [[services]]
        name = "daemon"
        command = "sleep 1000"
    """)
    runner = start_runner(run_entrypoint, config, sock, daemon="RUNNING")
    pid = services(sock)["daemon"]["pid"]
    assert ctl(sock, "disable", "daemon").returncode == 0
    wait_until(lambda: not pid_alive(pid), 10, what="the daemon to stop")
    assert services(sock)["daemon"]["state"] == "DISABLED"
    assert runner.proc.poll() is None
    assert ctl(sock, "enable", "daemon").returncode == 0
    assert services(sock)["daemon"]["state"] == "RUNNING"


def test_disable_outlives_a_restart_with_state_dir(run_entrypoint, write_config, sock, tmp_path):
    config = write_config(JOBS.format(state=f'state_dir = "{tmp_path / "state"}"'))
    first = start_runner(run_entrypoint, config, sock, daemon="RUNNING", tick="SCHEDULED")
    assert ctl(sock, "disable", "daemon", "tick").returncode == 0
    first.signal(15)
    assert first.wait() == 0
    second = start_runner(run_entrypoint, config, sock)
    wait_states(sock, daemon="DISABLED", tick="DISABLED")
    assert not any("daemon: started" in line for line in second.lines)
    assert ctl(sock, "enable", "daemon").returncode == 0
    wait_states(sock, daemon="RUNNING", tick="DISABLED")


def test_enable_and_disable_name_unknown_services(run_entrypoint, write_config, sock):
    start_runner(run_entrypoint, write_config(JOBS.format(state="")), sock, daemon="RUNNING")
    done = ctl(sock, "disable", "nope")
    assert done.returncode == 1 and "daemon" in done.stderr and "Traceback" not in done.stderr
    usage = ctl(sock, "enable")
    assert usage.returncode == 2
