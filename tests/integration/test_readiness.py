"""CONTRACT §12 on real processes: ready = notify (redis, a script), fd:N, log:REGEX,
ready_timeout, the watchdog, and bad input (flood, oversized, typos)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import PYTHON, entrypoint_env, free_port, wait_until
from control_helpers import services, start_runner, wait_states

pytestmark = pytest.mark.timeout(90)

NOTIFY = f"{PYTHON} -m entrypoint notify"


@pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("redis-cli")),
                    reason="redis-server (Debian's redis-server package) not installed")
def test_redis_supervised_systemd_gates_dependent_and_cmd(run_entrypoint, write_config, tmp_path):
    port = free_port()
    config = write_config(f"""
        [timeouts]
        service_shutdown_timeout = 5
        [[services]]
        name = "redis"
        command = "redis-server"
        args = ["--port", "{port}", "--bind", "127.0.0.1", "--supervised", "systemd",
                "--save", "", "--appendonly", "no", "--dir", "{tmp_path}"]
        ready = "notify"
        ready_timeout = 30
        [[services]]
        name = "client"
        command = "redis-cli"
        args = ["-p", "{port}", "ping"]
        oneshot = true
        depends_on = "redis"
    """)
    runner = run_entrypoint("-c", config, "--", "redis-cli", "-p", str(port), "set", "k", "v")
    assert runner.wait(40) == 0, runner.output
    out = runner.output
    assert "redis: ready (READY=1)" in out
    # The dependent started after READY=1, and redis answered it: no connection refused.
    assert out.index("redis: ready (READY=1)") < out.index("client: started")
    assert "PONG" in out and "Connection refused" not in out
    # The CMD ran once redis was ready, with the terminal's stdout as it is: "OK".
    lines = out.splitlines()
    cmd_at = next(i for i, l in enumerate(lines) if "all services ready; running" in l)
    assert "OK" in lines[cmd_at + 1:]


def test_ready_timeout_fails_the_start_and_the_cmd_wait(run_entrypoint, write_config):
    config = write_config("""
        [timeouts]
        service_shutdown_timeout = 2
        [[services]]
        name = "mute"
        command = "sleep"
        args = ["1000"]
        ready = "notify"
        ready_timeout = 1
        restart = "no"
    """)
    runner = run_entrypoint("-c", config, "--", "true")
    assert runner.wait(30) == 1, runner.output
    out = runner.output
    assert "mute: not ready after 1s (ready_timeout): no READY=1; stopping it" in out
    assert "all services ready" not in out


@pytest.mark.parametrize("directory", [False, True], ids=["posix_spawn", "popen"])
def test_fd_notification_gates_dependent(run_entrypoint, write_config, sock, tmp_path, directory):
    go = tmp_path / "go"
    config = write_config(f"""
        [timeouts]
        service_shutdown_timeout = 2
        [[services]]
        name = "s6style"
        command = "sh"
        args = ["-c", "while [ ! -e {go} ]; do sleep 0.05; done; echo >&3; exec sleep 1000"]
        ready = "fd:3"
        {'directory = "/"' if directory else ''}
        [[services]]
        name = "after"
        command = "sleep"
        args = ["1000"]
        depends_on = "s6style"
    """)
    runner = start_runner(run_entrypoint, config, sock, s6style="STARTING")
    runner.wait_for("after: waiting for s6style")
    assert services(sock)["after"]["state"] == "PENDING"
    go.touch()
    wait_states(sock, s6style="RUNNING", after="RUNNING")
    runner.wait_for(r"s6style: ready \(newline on fd 3\)")


def test_log_line_gates_dependent(run_entrypoint, write_config, sock, tmp_path):
    go = tmp_path / "go"
    config = write_config(f"""
        [[services]]
        name = "web"
        command = "sh"
        args = ["-c", "echo booting; while [ ! -e {go} ]; do sleep 0.05; done; echo 'Listening on port 8123'; exec sleep 1000"]
        ready = 'log:Listening on port \\d+'
        [[services]]
        name = "after"
        command = "sleep"
        args = ["1000"]
        depends_on = "web"
    """)
    runner = start_runner(run_entrypoint, config, sock, web="STARTING")
    runner.wait_for(r"web\s+\| booting")
    assert services(sock)["after"]["state"] == "PENDING"
    go.touch()
    wait_states(sock, web="RUNNING", after="RUNNING")
    runner.wait_for(r"web: ready \(line matching")


def test_watchdog_kills_and_restarts(run_entrypoint, write_config, sock, tmp_path):
    count = tmp_path / "count"
    config = write_config(f"""
        [[services]]
        name = "hang"
        command = "sh"
        args = ["-c", "echo run >> {count}; {NOTIFY} --ready; {NOTIFY} WATCHDOG=1; {NOTIFY} WATCHDOG=1; exec sleep 1000"]
        ready = "notify"
        watchdog = "1500ms"
        restart_delay = 0.2
    """)
    runner = start_runner(run_entrypoint, config, sock)
    runner.wait_for(r"hang: watchdog: no WATCHDOG=1 within 1.5s; killing it", timeout=30)
    wait_until(lambda: count.read_text().count("run") >= 2, 20, what="a restart")
    snap = wait_states(sock, hang="RUNNING")["hang"]
    assert snap["restarts"] >= 1 and snap["trigger"] == "watchdog"
    assert "killed by SIGABRT" in runner.output


def test_bad_ready_values_are_located_errors(write_config):
    config = write_config("""
        [[services]]
        name = "a"
        command = "true"
        ready = "notfy"
        [[services]]
        name = "b"
        command = "true"
        ready = "fd:1"
        [[services]]
        name = "c"
        command = "true"
        ready = "log:(unclosed"
        [[services]]
        name = "d"
        command = "true"
        watchdog = "soon"
    """)
    done = subprocess.run([PYTHON, "-m", "entrypoint", "check", "-c", config],
                          env=entrypoint_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    err = done.stderr
    assert "Traceback" not in err
    assert 'services[0] "a": ready: unknown readiness protocol \'notfy\' (did you mean "notify"?' in err
    assert 'services[1] "b": ready: \'fd:1\': fd 1 is stdin, stdout or stderr' in err
    assert 'services[2] "c": ready: \'log:(unclosed\': invalid regular expression' in err
    assert 'services[3] "d": watchdog: expected seconds or a duration like "30s"' in err


FLOOD = r"""
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
path = os.environ["NOTIFY_SOCKET"]
s.sendto(b"READY=1", path)
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
began = time.monotonic()
sent = 0
while sent < rate * seconds:
    due = began + sent / rate
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    s.sendto(b"STATUS=item %d\nX_PROGRESS=%d/%d" % (sent, sent, rate * seconds), path)
    sent += 1
print("flood done: %d in %.2fs" % (sent, time.monotonic() - began), flush=True)
time.sleep(1000)
"""

TICKER = r"""
import time
for i in range(1000000):
    print("tick %d %.3f" % (i, time.time()), flush=True)
    time.sleep(0.01)
"""


@pytest.mark.timeout(120)
def test_flood_of_10000_per_second_for_10s(run_entrypoint, write_config, sock, tmp_path):
    (tmp_path / "flood.py").write_text(FLOOD)
    (tmp_path / "tick.py").write_text(TICKER)
    config = write_config(f"""
        [[services]]
        name = "flood"
        command = "{PYTHON}"
        args = ["{tmp_path / 'flood.py'}", "10000", "10"]
        ready = "notify"
        [[services]]
        name = "ticker"
        command = "{PYTHON}"
        args = ["{tmp_path / 'tick.py'}"]
    """)
    runner = start_runner(run_entrypoint, config, sock)
    began = time.monotonic()
    m = runner.wait_for(r"flood done: (\d+) in ([\d.]+)s", timeout=60)
    assert int(m[1]) == 100_000
    # The sender blocks when the socket's queue is full: it kept its pace only if the
    # runner kept up.
    assert float(m[2]) < 13.0, f"the runner fell behind: {m[0]}"
    from entrypoint.control.client import call
    wait_until(lambda: call("list", sock)["runner"]["notify"]["accepted"] >= 100_001, 10,
               what="every datagram accepted")
    snap = services(sock)["flood"]
    assert snap["notify"]["progress"]["done"] == 99_999
    # The other service's output kept flowing: no gap of a second between two ticks seen.
    ticks = [float(l.split()[-1]) for l in runner.lines if l.startswith("ticker") and "tick" in l]
    assert len(ticks) > 500
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert max(gaps) < 1.0, max(gaps)
    assert time.monotonic() - began < 60


UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]


def _can_unshare() -> bool:
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _can_unshare(), reason="cannot create a PID namespace here")
def test_notify_as_pid1_gates_the_cmd_and_ignores_outsiders(run_entrypoint, write_config,
                                                             tagged, tmp_path):
    from conftest import tagged_pids

    go = tmp_path / "go"
    config = write_config(f"""
        [timeouts]
        service_shutdown_timeout = 2
        [[services]]
        name = "db"
        command = "sh"
        args = ["-c", "while [ ! -e {go} ]; do sleep 0.05; done; {NOTIFY} --ready --status up && exec sleep 1000"]
        ready = "notify"
    """)
    runner = run_entrypoint("-c", config, "--", "sh", "-c", "echo the command ran",
                            prefix=UNSHARE, env=tagged)
    runner.wait_for(r"as PID 1")
    runner.wait_for(r"db: started")
    token = tagged["EP_TEST_TOKEN"]

    def db_socket():
        for pid in tagged_pids(token):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = dict(i.split(b"=", 1) for i in f.read().split(b"\0") if b"=" in i)
            except OSError:
                continue
            if b"NOTIFY_SOCKET" in env and b"sleep 0.05" in open(f"/proc/{pid}/cmdline", "rb").read():
                return env[b"NOTIFY_SOCKET"].decode()
        return None

    path = wait_until(db_socket, 10, what="db's NOTIFY_SOCKET")
    # From the host, outside the runner's PID namespace: the kernel says pid 0.
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", path)
    runner.wait_for(r"ignored a message \(READY=1\) from a process outside this PID namespace")
    assert "all services ready" not in runner.output
    go.touch()
    assert runner.wait(30) == 0
    out = runner.output
    assert out.index("db: ready (READY=1)") < out.index("all services ready; running")
    assert "the command ran" in out


def test_not_ready_in_time_is_a_failure_even_if_it_exits_0(run_entrypoint, write_config, tmp_path):
    count = tmp_path / "count"
    config = write_config(f"""
        [[services]]
        name = "polite"
        command = "sh"
        args = ["-c", "trap 'exit 0' TERM; echo run >> {count}; while :; do sleep 0.1; done"]
        ready = "notify"
        ready_timeout = 0.5
        restart_delay = 0.1
        restart_limit = 2
    """)
    runner = run_entrypoint("-c", config)
    assert runner.wait(30) == 1, runner.output
    assert count.read_text().count("run") == 2        # restarted once by on-failure
    assert "polite: gave up after 2 quick failures" in runner.output
    assert "not ready after 0.5s" in runner.output


SYSTEM_PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3")
                      if os.access(p, os.X_OK)), None)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd") or not SYSTEM_PYTHON,
                    reason="needs root, useradd and a system python3")
def test_service_of_another_user_reaches_its_notify_socket(run_entrypoint, write_config, sock):
    import uuid
    name = "epn" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        config = write_config(f"""
            [[services]]
            name = "other"
            command = "{SYSTEM_PYTHON}"
            args = ["-c", "import os, socket, time; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); time.sleep(1000)"]
            user = "{name}"
            ready = "notify"
            ready_timeout = 20
        """)
        runner = start_runner(run_entrypoint, config, sock, other="RUNNING")
        runner.wait_for(r"other: ready \(READY=1\)")
    finally:
        subprocess.run(["userdel", "-f", name], capture_output=True)
