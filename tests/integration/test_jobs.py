"""Jobs on a real runner (CONTRACT §11): schedules, SCHEDULED, start NAME, overlap, timeout."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import wait_until
from control_helpers import ctl, services, start_runner

pytestmark = pytest.mark.timeout(60)


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
    # What the dashboard and the metrics read: counts by result, the last success.
    assert snap["job_runs"]["ok"] >= 2 and snap["last_success"] > 0
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


NOTIFY = f"{__import__('sys').executable} -m entrypoint notify"


def test_progress_shows_in_list_and_status_and_stays_in_the_history(run_entrypoint, write_config,
                                                                   sock, tmp_path):
    go = tmp_path / "go"
    config = write_config(f"""
        [[services]]
        name = "cleanup"
        command = "sh"
        args = ["-c", "{NOTIFY} --status 'cleaning /tmp' --progress 40/200 --failed 2 && while [ ! -e {go} ]; do sleep 0.05; done"]
        schedule = "@yearly"
        run_on_start = true
    """)
    start_runner(run_entrypoint, config, sock)
    wait_until(lambda: (services(sock)["cleanup"].get("notify") or {}).get("progress"), 15,
               what="the progress report")
    table = ctl(sock, "list").stdout
    assert "20% cleaning /tmp" in table, table
    status = ctl(sock, "status", "cleanup").stdout
    assert "40/200 (20%), 2 failed" in status and "cleaning /tmp" in status, status
    go.touch()
    wait_until(lambda: services(sock)["cleanup"]["state"] == "SCHEDULED", 15, what="the end")
    assert not (services(sock)["cleanup"]["notify"] or {}).get("progress")     # cleared
    run = json.loads(ctl(sock, "history", "--json", "cleanup").stdout)[-1]
    assert run["status"] == "cleaning /tmp" and run["outcome"] == "ok"
    assert (run["progress"]["done"], run["progress"]["total"], run["progress"]["failed"]) == (40, 200, 2)


def test_a_job_moves_its_next_run_once(run_entrypoint, write_config, sock):
    config = write_config(f"""
        [[services]]
        name = "poller"
        command = "sh"
        args = ["-c", "echo polling; {NOTIFY} --next-run +2"]
        schedule = "@yearly"
        run_on_start = true
    """)
    runner = start_runner(run_entrypoint, config, sock)
    runner.wait_for(r"poller: next run moved by X_NEXT_RUN")
    snap = services(sock)["poller"]
    assert snap["next_run"] - __import__("time").time() < 3
    # The moved run happens (a scheduled run), then the schedule takes over again: the
    # second run asks again, so a third comes; without the message it would be a year.
    runner.wait_for(r"poller: started \(pid", count=2, timeout=10)
    runs = json.loads(ctl(sock, "history", "--json", "poller").stdout)
    assert [r["trigger"] for r in runs][:2] == ["start", "schedule"]


@pytest.mark.parametrize("when, said", [("+-30", r"in the past; the schedule stays"),
                                        ("1000", r"in the past; the schedule stays"),
                                        ("tomorrowish", r"not a time")])
def test_a_next_run_in_the_past_or_garbage_changes_nothing(run_entrypoint, write_config, sock,
                                                           when, said):
    config = write_config(f"""
        [[services]]
        name = "poller"
        command = "sh"
        args = ["-c", "{NOTIFY} X_NEXT_RUN={when}; echo sent"]
        schedule = "@yearly"
        run_on_start = true
    """)
    runner = start_runner(run_entrypoint, config, sock)
    runner.wait_for(said)
    wait_until(lambda: services(sock)["poller"]["state"] == "SCHEDULED", 10, what="SCHEDULED")
    assert services(sock)["poller"]["next_run"] - __import__("time").time() > 86400
    assert "Traceback" not in runner.output + runner.stderr


def _switches(pid: int) -> int:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            total += sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
    return total


def test_no_wake_up_between_runs(run_entrypoint, write_config, sock):
    """Ten jobs due hourly: the runner sleeps until one is due (its context switches, read
    from /proc without talking to it, do not move)."""
    config = write_config("".join(f"""
        [[services]]
        name = "hourly{i}"
        command = "true"
        schedule = "@hourly"
    """ for i in range(10)))
    runner = start_runner(run_entrypoint, config, sock,
                          **{f"hourly{i}": "SCHEDULED" for i in range(10)})
    if time.time() % 3600 > 3600 - 15:
        pytest.skip("an hourly run would fall into the window")
    time.sleep(1.0)                   # the last reply of the control socket settles
    before = _switches(runner.pid)
    time.sleep(3.0)                   # the measurement itself: a quiet window
    assert _switches(runner.pid) - before == 0


def test_jobs_as_pid1_are_reaped_and_a_sigterm_ends_the_run(run_entrypoint, write_config, sock):
    """A job's runs under a runner that is PID 1 of its namespace: each run (and the
    orphan it leaves behind) is reaped, and SIGTERM ends the run with 0."""
    import subprocess

    from control_helpers import ctl_env

    unshare = ["unshare", "--pid", "--fork", "--mount-proc"]
    if subprocess.run([*unshare, "true"], capture_output=True, timeout=10).returncode != 0:
        pytest.skip("cannot create a PID namespace here")
    config = write_config("""
        [[services]]
        name = "orphaner"
        command = "sh"
        args = ["-c", "sleep 0.2 & echo run"]
        every = "0.5s"
    """)
    runner = run_entrypoint("-c", config, "--socket", sock, prefix=unshare, env=ctl_env(sock))
    runner.wait_for(r"as PID 1")
    wait_until(lambda: runs_of(runner, "orphaner") >= 4, 15, what="four runs")
    init = int(open(f"/proc/{runner.pid}/task/{runner.pid}/children").read().split()[0])

    def zombies() -> list[int]:
        found = []
        for task in os.listdir(f"/proc/{init}/task"):
            for child in open(f"/proc/{init}/task/{task}/children").read().split():
                try:
                    with open(f"/proc/{child}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                            found.append(int(child))
                except OSError:
                    pass
        return found

    # Zombies live only between an exit and its reap: none stays for long.
    wait_until(lambda: not zombies(), 5, what="no zombie left")
    os.kill(init, 15)
    assert runner.wait(20) == 0


def test_jobs_in_the_metrics_and_the_api(run_entrypoint, write_config, sock):
    from web_helpers import have_web, http, web_stack

    if not have_web():
        pytest.skip("needs entrypoint[web]")
    runner, base = web_stack(run_entrypoint, write_config, sock, """
        [[services]]
        name = "tick"
        command = "sh"
        args = ["-c", "echo tick"]
        every = "0.5s"
        [[services]]
        name = "broken"
        command = "sh"
        args = ["-c", "exit 1"]
        every = "0.5s"
    """)
    wait_until(lambda: runs_of(runner, "broken") >= 2 and runs_of(runner, "tick") >= 2, 15,
               what="runs")
    metrics = http(base, "/metrics").body.decode()
    assert 'entrypoint_job_runs_total{service="tick",result="ok"}' in metrics
    assert 'entrypoint_job_runs_total{service="broken",result="failed"}' in metrics
    assert 'entrypoint_job_last_success_timestamp_seconds{service="tick"}' in metrics
    history = http(base, "/api/v1/services/broken/history").json
    assert history["runs"] and history["runs"][0]["outcome"] == "failed"
    assert http(base, "/api/v1/services/tick").json["next_run"] > 0
    assert http(base, "/api/v1/services/tick/disable", "POST").status == 200
    assert services(sock)["tick"]["state"] == "DISABLED"
    assert http(base, "/api/v1/services/tick/enable", "POST").status == 200
    assert services(sock)["tick"]["state"] in ("SCHEDULED", "STARTING", "RUNNING")
