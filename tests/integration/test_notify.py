"""CONTRACT §11/§12 on a real runner: the notify socket, `entrypoint notify`, who is heard."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, wait_until
from control_helpers import ctl, ctl_env, services, start_runner, wait_states

pytestmark = pytest.mark.timeout(60)

PY = sys.executable


def notify_cmd(*args: str) -> str:
    return " ".join([PY, "-m", "entrypoint", "notify", *args])


def service_env(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
    return {k.decode(): v.decode() for k, v in pairs}


def test_notify_gates_dependent_ignores_stranger_and_shows_status(run_entrypoint, write_config,
                                                                   sock, tmp_path):
    go = tmp_path / "go"
    config = write_config(f"""
        [timeouts]
        service_shutdown_timeout = 3
        [[services]]
        name = "db"
        command = "sh"
        args = ["-c", "while [ ! -e {go} ]; do sleep 0.05; done; {notify_cmd('--ready', '--status', 'warm', '--progress', '3/10')} && exec sleep 1000"]
        ready = "notify"
        [[services]]
        name = "app"
        command = "sh"
        args = ["-c", "echo app up; env | grep -c NOTIFY_SOCKET; exec sleep 1000"]
        depends_on = "db"
    """)
    runner = start_runner(run_entrypoint, config, sock, env=ctl_env(sock, NOTIFY_SOCKET="/nowhere"),
                          db="STARTING")
    runner.wait_for(r"app: waiting for db")
    db_pid = services(sock)["db"]["pid"]
    env = service_env(db_pid)
    assert env["NOTIFY_SOCKET"] != "/nowhere" and os.path.exists(env["NOTIFY_SOCKET"])

    # A process outside db's session, with db's socket path: refused, counted, logged.
    stranger = subprocess.run([PY, "-m", "entrypoint", "notify", "--ready", "--status", "fake"],
                              env={**ctl_env(sock), "NOTIFY_SOCKET": env["NOTIFY_SOCKET"]},
                              capture_output=True, text=True, timeout=20)
    assert stranger.returncode == 1, stranger
    assert "refused" in stranger.stderr and "belongs to no service" in stranger.stderr
    runner.wait_for(r"notify socket: ignored a message \(READY=1.*from pid \d+")
    listed = json.loads(ctl(sock, "list", "--json").stdout)
    assert listed[0]["state"] == "STARTING" and listed[1]["state"] == "PENDING"
    go.touch()
    snaps = wait_states(sock, db="RUNNING", app="RUNNING")
    assert snaps["db"]["notify"]["ready"] is True       # and "fake" was never heard
    assert snaps["db"]["notify"]["status"] == "warm"
    assert snaps["db"]["notify"]["progress"]["done"] == 3
    assert snaps["db"]["notify"]["progress"]["percent"] == 30.0
    runner.wait_for(r"db: ready \(READY=1\)")
    shown = ctl(sock, "status", "db").stdout
    assert "ready:       notify (ready)" in shown and "status text: warm" in shown
    assert "progress:    3/10 (30%)" in shown
    lines = runner.lines
    ready_at = next(i for i, l in enumerate(lines) if "db: ready (READY=1)" in l)
    app_at = next(i for i, l in enumerate(lines) if "app: started" in l)
    assert ready_at < app_at
    # app has no notify socket of its own, and never the runner's.
    runner.wait_for(r"^app\s+\| 0$")


def runner_info(sock: str) -> dict:
    from entrypoint.control.client import call
    return call("list", sock)["runner"]


def test_runner_counts_refusals(run_entrypoint, write_config, sock):
    config = write_config("""
        [[services]]
        name = "svc"
        command = "sleep"
        args = ["1000"]
        ready = "notify"
        ready_timeout = 60
    """)
    runner = start_runner(run_entrypoint, config, sock, svc="STARTING")
    path = service_env(services(sock)["svc"]["pid"])["NOTIFY_SOCKET"]
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", path)          # from the test: a stranger
        s.sendto(b"x" * 5000, path)         # oversized
        s.sendto(b"lower=1", path)          # malformed
    wait_until(lambda: runner_info(sock)["notify"]["refused"] == 3, 10, what="3 refusals")
    counters = runner_info(sock)["notify"]
    assert (counters["stranger"], counters["oversized"], counters["malformed"]) == (1, 1, 1)
    assert counters["accepted"] == 0
    assert services(sock)["svc"]["state"] == "STARTING"
    runner.wait_for(r"notify socket: ignored")
