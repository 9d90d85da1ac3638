"""CONTRACT §13 on real processes: replicas (names, REPLICA/PORT, control, reload) and ports."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request

import pytest

from conftest import PYTHON, entrypoint_env, free_port, wait_until
from control_helpers import ctl, services, start_runner, wait_states

pytestmark = pytest.mark.timeout(90)


def web_config(port: int, replicas: int) -> str:
    return f"""
        [timeouts]
        service_shutdown_timeout = 3
        [[services]]
        name = "web"
        command = "sh"
        args = ["-c", "echo replica $$ENTRYPOINT_REPLICA on $$PORT; exec {PYTHON} -u -m http.server --bind 127.0.0.1 $$PORT"]
        replicas = {replicas}
        port = {port}
        ready = "log:Serving HTTP"
        [[services]]
        name = "app"
        command = "sleep"
        args = ["1000"]
        depends_on = "web"
    """


def free_ports(n: int) -> int:
    """A base port with n free ports from it (checked by binding each)."""
    for _ in range(50):
        base = free_port()
        if base + n > 65535:
            continue
        try:
            held = []
            for p in range(base, base + n):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise AssertionError("no run of free ports")


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_replicas_names_env_control_and_reload(run_entrypoint, write_config, sock, tmp_path):
    base = free_ports(4)
    config = write_config(web_config(base, 3))
    runner = start_runner(run_entrypoint, config, sock, **{"web.1": "RUNNING", "web.2": "RUNNING",
                                                           "web.3": "RUNNING", "app": "RUNNING"})
    for i in (1, 2, 3):
        runner.wait_for(rf"web\.{i}\s+\| replica {i} on {base + i - 1}$")
        assert answers(base + i - 1)
    snap = services(sock)
    assert [n for n in snap] == ["web.1", "web.2", "web.3", "app"]
    assert snap["web.2"]["replica_of"] == "web" and snap["web.2"]["port"] == base + 1
    # The dependent started after every replica was ready.
    lines = runner.lines
    app_at = next(i for i, l in enumerate(lines) if "app: started" in l)
    assert all(next(i for i, l in enumerate(lines) if f"web.{r}: ready" in l) < app_at
               for r in (1, 2, 3))

    # NAME.i acts on one replica, NAME on all of them.
    assert ctl(sock, "stop", "web.2").returncode == 0
    snap = services(sock)
    assert snap["web.2"]["state"] == "STOPPED" and snap["web.1"]["state"] == "RUNNING"
    wait_until(lambda: not answers(base + 1), 10, what="web.2 gone")
    done = ctl(sock, "restart", "web")
    assert done.returncode == 0, done.stderr
    snap = wait_states(sock, **{"web.1": "RUNNING", "web.2": "RUNNING", "web.3": "RUNNING"})
    assert all(answers(base + i) for i in range(3))

    # Reload from 3 to 2 then 4 replicas: only the difference stops or starts.
    pids = {n: s["pid"] for n, s in snap.items()}
    with open(config, "w") as f:
        import textwrap
        f.write(textwrap.dedent(web_config(base, 2)))
    done = ctl(sock, "reload")
    assert done.returncode == 0, done.stderr
    snap = services(sock)
    assert "web.3" not in snap
    assert {n: snap[n]["pid"] for n in ("web.1", "web.2", "app")} == \
        {n: pids[n] for n in ("web.1", "web.2", "app")}
    with open(config, "w") as f:
        f.write(textwrap.dedent(web_config(base, 4)))
    done = ctl(sock, "reload")
    assert done.returncode == 0, done.stderr
    snap = wait_states(sock, **{"web.3": "RUNNING", "web.4": "RUNNING"})
    assert {n: snap[n]["pid"] for n in ("web.1", "web.2", "app")} == \
        {n: pids[n] for n in ("web.1", "web.2", "app")}
    assert answers(base + 3)


def test_port_taken_at_start_names_the_holder(run_entrypoint, write_config, sock):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        config = write_config(f"""
            [[services]]
            name = "web"
            command = "sleep"
            args = ["1000"]
            port = {port}
            restart = "no"
        """)
        runner = run_entrypoint("-c", config)
        assert runner.wait(30) == 1
        m = runner.wait_for(rf"web: cannot start: port {port} is already in use by pid (\d+) \((.+)\)")
        assert int(m[1]) == os.getpid()       # this test holds it
    finally:
        squatter.close()


def test_duplicate_ports_rejected_by_check(write_config):
    config = write_config("""
        [[services]]
        name = "a"
        command = "true"
        replicas = 2
        port = 9000
        [[services]]
        name = "b"
        command = "true"
        port = 9001
    """)
    done = subprocess.run([PYTHON, "-m", "entrypoint", "check", "-c", config],
                          env=entrypoint_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert 'services[1] "b": port: port 9001 of "b" is already declared by "a.2"' in done.stderr
