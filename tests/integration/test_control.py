"""CONTRACT §8 on a real runner: the socket, the commands, the limits, the small things."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import ROOT, pid_alive, wait_until
from control_helpers import ctl, ctl_env, raw_exchange, replies, services, start_runner

pytestmark = pytest.mark.timeout(60)

BASIC = """
    [timeouts]
    service_shutdown_timeout = 3
    [[services]]
    name = "web"
    command = "sh"
    args = ["-c", "echo web says hello; exec sleep 1000"]
    [[services]]
    name = "worker"
    command = "sh"
    args = ["-c", "echo worker ready; exec sleep 1000"]
    depends_on = "web"
    env = { GREETING = "hi there" }
    [[services]]
    name = "init"
    command = "sh"
    args = ["-c", "echo init done"]
    oneshot = true
"""


@pytest.fixture
def basic(run_entrypoint, write_config, sock):
    runner = start_runner(run_entrypoint, write_config(BASIC), sock,
                          web="RUNNING", worker="RUNNING", init="COMPLETED")
    for line in ("web says hello", "worker ready", "init done"):
        runner.wait_for(line)       # in the rings too, then
    return runner


def test_list_table_and_json(basic, sock):
    done = ctl(sock, "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "HEALTH", "PID", "UPTIME", "RESTARTS", "EXIT"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["web"][1:3] == ["RUNNING", "-"] and rows["web"][3].isdigit()
    assert re.fullmatch(r"\d+s", rows["web"][4]) and rows["web"][5:] == ["0", "-"]
    assert rows["init"][1:] == ["COMPLETED", "-", "-", "-", "0", "0"]

    snaps = json.loads(ctl(sock, "list", "--json").stdout)
    assert [s["name"] for s in snaps] == ["web", "worker", "init"]
    assert str(snaps[0]["pid"]) == rows["web"][3]
    assert pid_alive(snaps[0]["pid"])


def test_status_details(basic, sock):
    done = ctl(sock, "status", "worker")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("worker: RUNNING, pid ")
    assert "echo worker ready" in out and "depends on:" in out and "web (started)" in out
    assert "restarts:    0" in out and "history:" in out
    assert re.search(r"STARTING.*\n.*RUNNING\s+pid \d+", out)

    one = json.loads(ctl(sock, "status", "worker", "--json").stdout)
    assert one["name"] == "worker" and one["state"] == "RUNNING"
    assert [h["state"] for h in one["history"]][-2:] == ["STARTING", "RUNNING"]
    every = ctl(sock, "status")
    assert every.returncode == 0
    assert all(f"{name}: " in every.stdout for name in ("web", "worker", "init"))


def test_socket_is_0600_and_removed_at_exit(basic, sock):
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    done = ctl(sock, "shutdown")
    assert done.returncode == 0 and "shutting down" in done.stdout
    assert basic.wait(20) == 0
    assert not os.path.exists(sock)


def test_stale_socket_replaced_live_socket_refused(run_entrypoint, write_config, sock):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock)            # bound, never listening, then closed: a dead runner's socket
    stale.close()
    config = write_config(BASIC)
    first = start_runner(run_entrypoint, config, sock, web="RUNNING")
    first.wait_for("removed a stale control socket")

    second = run_entrypoint("-c", config, "--socket", sock, env=ctl_env(sock))
    assert second.wait(15) == 1
    assert f"another entrypoint (pid {first.pid}) is already listening on {sock}" in second.stderr
    assert "--socket" in second.stderr and "ENTRYPOINT_SOCKET" in second.stderr
    assert "web says hello" not in second.output      # it started nothing
    assert services(sock)["web"]["state"] == "RUNNING"  # and the first one is untouched


def test_a_regular_file_is_not_replaced(run_entrypoint, write_config, sock):
    with open(sock, "w") as f:
        f.write("precious")
    runner = run_entrypoint("-c", write_config(BASIC), "--socket", sock, env=ctl_env(sock))
    assert runner.wait(15) == 1
    assert "exists and is not a socket" in runner.stderr
    assert open(sock).read() == "precious"


def test_start_stop_restart_wait_for_the_state(basic, sock, tmp_path):
    before = services(sock)
    done = ctl(sock, "stop", "web", "worker")
    assert done.returncode == 0, done.stderr
    assert "web: STOPPED" in done.stdout and "worker: STOPPED" in done.stdout
    after = services(sock)
    assert after["web"]["state"] == "STOPPED" and after["web"]["pid"] is None
    assert not pid_alive(before["web"]["pid"])
    # Stopped by hand, the services do not end the run.
    time.sleep(0.3)
    assert basic.proc.poll() is None

    done = ctl(sock, "start", "worker", "web")
    assert done.returncode == 0, done.stderr
    now = services(sock)
    assert now["web"]["state"] == now["worker"]["state"] == "RUNNING"
    assert now["web"]["pid"] != before["web"]["pid"]

    done = ctl(sock, "restart", "worker")
    assert done.returncode == 0, done.stderr
    assert re.search(r"worker: RUNNING \(pid \d+\)", done.stdout)
    again = services(sock)
    assert again["worker"]["pid"] != now["worker"]["pid"]
    assert again["web"]["pid"] == now["web"]["pid"]             # not touched
    # A oneshot restarts to COMPLETED.
    done = ctl(sock, "restart", "init")
    assert done.returncode == 0 and "init: COMPLETED" in done.stdout


def test_restart_that_fails_says_why(run_entrypoint, write_config, sock, tmp_path):
    flag = tmp_path / "broken"
    config = write_config(f"""
        [[services]]
        name = "app"
        command = "sh"
        args = ["-c", "if [ -e {flag} ]; then echo cannot open database; exit 3; fi; exec sleep 1000"]
        restart = "no"
    """)
    start_runner(run_entrypoint, config, sock, app="RUNNING")
    flag.touch()
    done = ctl(sock, "restart", "app")
    assert done.returncode == 1
    assert "restart failed: app: FAILED: exit status 3" in done.stderr
    assert "app | cannot open database" in done.stderr       # the last lines of its output


def test_unknown_name_lists_known_names_and_does_nothing(basic, sock):
    before = services(sock)
    done = ctl(sock, "restart", "web", "wrker")
    assert done.returncode == 1
    assert 'unknown service "wrker" (did you mean "worker"?)' in done.stderr
    assert "known services: web, worker, init" in done.stderr
    assert services(sock)["web"]["pid"] == before["web"]["pid"]
    assert ctl(sock, "status", "nope").returncode == 1
    assert ctl(sock, "logs", "nope").returncode == 1


def test_logs_tail_merge_prefix_and_survive_a_restart(basic, sock):
    one = ctl(sock, "logs", "web")
    assert one.returncode == 0 and one.stdout == "web says hello\n"      # one name: no prefix
    every = ctl(sock, "logs").stdout.splitlines()
    assert "web    | web says hello" in every and "init   | init done" in every
    # Merged in arrival order: the order the runner printed them in (worker waits only for
    # web to be started, not for its line, so either may come first).
    printed = [line for line in basic.lines if line in every]
    assert printed == [line for line in every if line in printed], (printed, every)
    assert ctl(sock, "restart", "web").returncode == 0
    wait_until(lambda: ctl(sock, "logs", "web").stdout == "web says hello\nweb says hello\n",
               10, what="the restarted web's line in its ring")
    assert ctl(sock, "logs", "web", "-n", "1").stdout == "web says hello\n"
    assert ctl(sock, "logs", "web", "-n", "x").returncode == 2


def test_log_ring_size_is_configurable(run_entrypoint, write_config, sock):
    config = write_config("""
        [[services]]
        name = "counter"
        command = "sh"
        args = ["-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; done; exec sleep 1000"]
    """)
    start_runner(run_entrypoint, config, sock, "--log-lines", "4", counter="RUNNING")
    wait_until(lambda: "line 10" in ctl(sock, "logs", "counter").stdout, 10, what="line 10")
    assert ctl(sock, "logs", "counter", "-n", "100").stdout.split("\n")[:-1][-4:] == [
        "line 7", "line 8", "line 9", "line 10"]
    assert len(ctl(sock, "logs", "counter", "-n", "100").stdout.splitlines()) <= 10


def test_logs_follow_streams_until_the_runner_exits(run_entrypoint, write_config, sock, tmp_path):
    config = write_config("""
        [[services]]
        name = "ticker"
        command = "python3"
        args = ["-u", "-c", "import time\\nfor i in range(1000):\\n    print('tick', i)\\n    time.sleep(0.1)"]
    """)
    runner = start_runner(run_entrypoint, config, sock, ticker="RUNNING")
    follower = subprocess.Popen([sys.executable, "-m", "entrypoint", "logs", "-f", "-n", "0"],
                                env=ctl_env(sock), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    try:
        seen = []
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            seen.append(follower.stdout.readline())
        assert all(line.startswith("ticker | tick ") for line in seen), seen
        runner.signal(signal.SIGTERM)
        assert follower.wait(20) == 0
        assert runner.wait(20) == 0
    finally:
        follower.kill()
        follower.wait()


def test_health_for_a_docker_healthcheck(basic, sock):
    done = ctl(sock, "health")
    assert (done.returncode, done.stdout) == (0, "healthy\n")
    assert ctl(sock, "stop", "worker").returncode == 0
    done = ctl(sock, "health")
    assert done.returncode == 1 and "unhealthy: worker: STOPPED" in done.stdout
    assert json.loads(ctl(sock, "health", "--json").stdout)["healthy"] is False


def test_health_follows_the_healthcheck(run_entrypoint, write_config, sock, tmp_path):
    flag = tmp_path / "ok"
    config = write_config(f"""
        [[services]]
        name = "api"
        command = "sleep"
        args = ["1000"]
        healthcheck = {{ exec = ["test", "-e", "{flag}"], interval = 0.2, retries = 1 }}
    """)
    start_runner(run_entrypoint, config, sock)
    wait_until(lambda: services(sock)["api"]["health"] == "unhealthy", 10, what="unhealthy")
    done = ctl(sock, "health")
    assert done.returncode == 1 and "unhealthy: api: RUNNING but unhealthy" in done.stdout
    flag.touch()
    wait_until(lambda: ctl(sock, "health").returncode == 0, 10, what="healthy")
    assert "last check:  ok" in ctl(sock, "status", "api").stdout


def test_no_runner_exits_3_naming_the_socket(tmp_path):
    path = str(tmp_path / "nobody-here.sock")
    done = ctl(path, "list")
    assert done.returncode == 3
    assert path in done.stderr and "ENTRYPOINT_SOCKET" in done.stderr


def test_malformed_oversized_and_slow_requests(basic, sock):
    before = services(sock)
    cases = {
        b"hello\n": "bad_request",
        b"\xff\xfe\x00\n": "bad_request",
        b"[1, 2]\n": "bad_request",
        b'{"op": "list"}\n': "unsupported_version",
        b'{"v": 2, "op": "list"}\n': "unsupported_version",
        b'{"v": 1}\n': "bad_request",
        b'{"v": 1, "op": "frobnicate"}\n': "unknown_operation",
        b'{"v": 1, "op": "stop", "args": {"names": [1]}}\n': "bad_request",
        b'{"v": 1, "op": "logs", "args": {"lines": -1}}\n': "bad_request",
        b"[" * 30000 + b"\n": "bad_request",
        b'{"v": 1, "op": "list", "pad": "' + b"x" * 70000 + b'"}\n': "too_large",
    }
    for data, code in cases.items():
        got = replies(raw_exchange(sock, data))
        assert len(got) == 1 and got[0]["ok"] is False and got[0]["code"] == code, (data[:40], got)
        assert got[0]["v"] == 1 and got[0]["error"]
    # Slow: half a request, then nothing: an error after the time limit, and the close.
    began = time.monotonic()
    got = replies(raw_exchange(sock, b'{"v": 1, "op": '))
    assert got[0]["code"] == "timeout" and 4 < time.monotonic() - began < 10
    # Many idle connections do not block the others.
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(20)]
    try:
        for s in idle:
            s.connect(sock)
        assert ctl(sock, "list").returncode == 0
    finally:
        for s in idle:
            s.close()
    # Two requests on one connection, with an id echoed back.
    got = replies(raw_exchange(sock, b'{"v":1,"op":"version","id":7}\n{"v":1,"op":"health"}\n'))
    assert got[0]["id"] == 7 and got[0]["result"]["protocol"] == 1
    assert got[1]["result"]["healthy"] is True
    assert {n: s["pid"] for n, s in services(sock).items()} == \
        {n: s["pid"] for n, s in before.items()}
    assert basic.proc.poll() is None


def test_sigusr1_prints_the_table_in_the_log(basic, sock):
    basic.signal(signal.SIGUSR1)
    basic.wait_for(r"entrypoint \| NAME\s+STATE\s+HEALTH\s+PID\s+UPTIME\s+RESTARTS\s+EXIT")
    basic.wait_for(r"entrypoint \| worker\s+RUNNING\s+-\s+\d+")


def test_process_title(basic, sock):
    pytest.importorskip("setproctitle")
    expected = "entrypoint: 3 services, 2 running"
    wait_until(lambda: open(f"/proc/{basic.pid}/cmdline", "rb").read()
               .rstrip(b"\0").decode() == expected, 10, what=expected)
    assert ctl(sock, "stop", "web", "worker").returncode == 0
    wait_until(lambda: open(f"/proc/{basic.pid}/cmdline", "rb").read().rstrip(b"\0").decode()
               == "entrypoint: 3 services, 0 running", 10, what="title after stop")


@pytest.fixture
def open_dir():
    """A directory any user may enter (tmp_path's parents are 0700)."""
    path = tempfile.mkdtemp(prefix="ep-exec-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_exec_runs_as_the_service(run_entrypoint, write_config, sock, open_dir):
    workdir = open_dir
    user = "nobody" if os.geteuid() == 0 else None
    config = write_config(f"""
        [[services]]
        name = "app"
        command = "sleep"
        args = ["1000"]
        directory = "{workdir}"
        env = {{ APP_MODE = "production" }}
        {f'user = "{user}"' if user else ""}
    """)
    start_runner(run_entrypoint, config, sock, app="RUNNING")
    done = ctl(sock, "exec", "app", "--", "sh", "-c", 'echo "$APP_MODE $(pwd) $(id -u) $HOME"; exit 7')
    assert done.returncode == 7, done.stderr
    mode, cwd, uid, home = done.stdout.split()
    assert (mode, cwd) == ("production", str(workdir))
    if user:
        assert int(uid) == pwd.getpwnam(user).pw_uid and home == pwd.getpwnam(user).pw_dir
    assert ctl(sock, "exec", "app").returncode == 2
    assert ctl(sock, "exec", "app", "--", "no-such-program-xyz").returncode == 127


# -- a peer that is neither root nor the runner's user ---------------------------------

def _world_usable_python() -> str | None:
    """An interpreter another user may run (this one may live under /root)."""
    for candidate in (sys.executable, shutil.which("python3", path="/usr/bin:/bin")):
        if not candidate:
            continue
        path, ok = os.path.realpath(candidate), True
        parts = path.split(os.sep)
        for i in range(2, len(parts)):
            if not os.stat(os.sep.join(parts[:i])).st_mode & stat.S_IXOTH:
                ok = False
        if ok and os.stat(path).st_mode & stat.S_IXOTH:
            return path
    return None


@pytest.fixture
def stranger():
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"):
        pytest.skip("needs root, useradd and runuser")
    python = _world_usable_python()
    if python is None:
        pytest.skip("no python3 that another user may run")
    name = f"eptest{os.getpid() % 100000}"
    subprocess.run(["userdel", "-r", name], capture_output=True)
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True, capture_output=True)
    # A world-readable copy of the package and a traversable directory for the socket.
    home = tempfile.mkdtemp(prefix="ep-peer-", dir="/tmp")
    os.chmod(home, 0o755)
    shutil.copytree(os.path.join(ROOT, "entrypoint"), os.path.join(home, "entrypoint"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    for dirpath, dirnames, filenames in os.walk(home):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    try:
        yield name, pwd.getpwnam(name).pw_uid, python, home
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def test_a_stranger_is_refused(run_entrypoint, write_config, stranger):
    name, uid, python, home = stranger
    sock = os.path.join(home, "ctl.sock")
    runner = start_runner(run_entrypoint, write_config(BASIC), sock, web="RUNNING")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": home, "ENTRYPOINT_SOCKET": sock,
           "PYTHONDONTWRITEBYTECODE": "1"}
    as_stranger = [shutil.which("runuser"), "-u", name, "--"]

    # The file mode refuses the connect() itself.
    done = ctl(sock, "list", env=env, prefix=as_stranger, python=python)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "permission denied: the runner runs as uid 0; run this as root" in done.stderr

    # With the mode opened up, SO_PEERCRED still refuses, and the runner logs it.
    os.chmod(sock, 0o666)
    try:
        done = ctl(sock, "list", env=env, prefix=as_stranger, python=python)
    finally:
        os.chmod(sock, 0o600)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "permission denied: the runner runs as uid 0; run this as root" in done.stderr
    assert "NAME" not in done.stdout
    runner.wait_for(rf"entrypoint \| refused a control connection from uid {uid} \(pid \d+\)")
    assert services(sock)["web"]["state"] == "RUNNING"


def test_manual_actions_say_who_asked_in_the_runner_log(basic, sock):
    me = pwd.getpwuid(os.geteuid()).pw_name
    who = rf"by {re.escape(me)} \(uid {os.geteuid()}\) via control socket"
    assert ctl(sock, "stop", "web", "worker").returncode == 0
    basic.wait_for(rf"entrypoint \| web: stop requested {who}$")
    basic.wait_for(rf"entrypoint \| worker: stop requested {who}$")
    assert ctl(sock, "start", "web").returncode == 0
    basic.wait_for(rf"entrypoint \| web: start requested {who}$")
    assert ctl(sock, "restart", "web").returncode == 0
    basic.wait_for(rf"entrypoint \| web: restart requested {who}$")
    assert ctl(sock, "reload").returncode == 0
    basic.wait_for(rf"entrypoint \| reload \(entrypoint reload {who}\): ")
    history = json.loads(ctl(sock, "status", "web", "--json").stdout)["history"]
    assert any(re.fullmatch(f"restart requested {who}", h["reason"]) for h in history), history


def test_a_health_restart_says_why_in_the_runner_log(run_entrypoint, write_config, sock):
    config = write_config("""
        [[services]]
        name = "api"
        command = "sleep"
        args = ["1000"]
        healthcheck = { exec = ["false"], interval = 0.2, retries = 2, on_unhealthy = "restart" }
    """)
    runner = start_runner(run_entrypoint, config, sock)
    runner.wait_for(r'entrypoint \| api: unhealthy after 2 failed checks: exit status 1; '
                    r'restarting it \(on_unhealthy = "restart"\)$')
    runner.wait_for(r"entrypoint \| api: started \(pid \d+\)", count=2)


def test_a_closed_pipe_ends_the_client_quietly(basic, sock):
    """`entrypoint status --json | head -c 100`: no traceback, the status of `cat`."""
    commands = [["list"], ["list", "--json"], ["status"], ["status", "--json"], ["health"],
                ["health", "--json"], ["logs"], ["logs", "-f"], ["start", "web"],
                ["exec", "web", "--", "echo", "hello"]]
    for args in commands:
        read_end, write_end = os.pipe()
        os.close(read_end)          # the reader is gone before a byte is written
        try:
            done = subprocess.run([sys.executable, "-m", "entrypoint", *args], env=ctl_env(sock),
                                  stdout=write_end, stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL, timeout=30)
        finally:
            os.close(write_end)
        assert done.stderr == "", (args, done.stderr)
        assert done.returncode in (0, -signal.SIGPIPE), (args, done.returncode)
    # Through a shell, as people type it: a race between head and the client, ten times.
    for _ in range(10):
        done = subprocess.run(["bash", "-o", "pipefail", "-c",
                               f"{sys.executable} -m entrypoint status --json | head -c 100"],
                              env=ctl_env(sock), capture_output=True, text=True, timeout=30)
        assert done.stderr == "" and done.returncode in (0, 141), (done.returncode, done.stderr)
        assert len(done.stdout) == 100


def test_socket_in_a_missing_directory_is_an_error_not_a_mkdir(run_entrypoint, write_config,
                                                               tmp_path):
    missing = tmp_path / "no-such-dir"
    sock = str(missing / "ctl.sock")
    runner = run_entrypoint("-c", write_config(BASIC), "--socket", sock, env=ctl_env(sock))
    assert runner.wait(15) == 2
    assert f"directory {missing} does not exist" in runner.stderr
    assert "Traceback" not in runner.stderr
    assert not missing.exists()
    assert "web says hello" not in runner.output          # nothing was started
    done = ctl(sock, "list")
    assert done.returncode == 3 and f"directory {missing} does not exist" in done.stderr
    assert not missing.exists()


def _help_entries(text: str) -> dict[str, str]:
    """Each option or argument entry of an argparse-style --help: its help text."""
    entries: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        entry = re.match(r"^  (\S.*?)(?:\s{2,}(\S.*))?$", line)
        if entry:       # `  --socket PATH  the runner's control socket ...`
            current = entry.group(1)
            entries[current] = entry.group(2) or ""
        elif re.match(r"^\s{4,}\S", line) and current is not None:
            entries[current] = (entries[current] + " " + line.strip()).strip()
        elif not line.startswith(" "):
            current = None
    return entries


@pytest.mark.parametrize("command", ["list", "status", "start", "stop", "restart", "logs",
                                     "reload", "shutdown", "health", "exec"])
def test_every_option_of_a_control_command_has_help(command):
    done = subprocess.run([sys.executable, "-m", "entrypoint", command, "--help"],
                          env=ctl_env("/nonexistent.sock"), capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    usage = done.stdout.split("\n\n")[0]
    entries = _help_entries(done.stdout)
    wanted = set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", usage)) - {"--"}
    wanted |= {w for w in re.findall(r"\b[A-Z]{3,}\b", usage) if w not in ("PATH", "ARGS")}
    for word in wanted:
        described = [help_text for invocation, help_text in entries.items()
                     if re.search(rf"(?<![\w-]){re.escape(word)}\b", invocation)]
        assert described and all(described), (command, word, done.stdout)


def test_shutdown_ends_the_run_gracefully(basic, sock):
    done = ctl(sock, "shutdown")
    assert done.returncode == 0
    assert basic.wait(20) == 0
    basic.wait_for("shutdown requested")
    assert ctl(sock, "list").returncode == 3
