"""Least privilege at the control socket: root's client and a runner of another user.

A throwaway user (useradd, removed after) runs either a real runner or a planted
"runner": a stdlib script that answers every request as it likes (`exec_spec` claims
uid 0). Root's client must never run `exec` with more than the uid that the kernel says
serves the socket, and must not trust a socket it found by itself unless root or root's
own uid serves it.
"""

from __future__ import annotations

import importlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from conftest import ROOT, PYTHON, entrypoint_env, tagged_pids, wait_until

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (useradd, switching users)"),
    pytest.mark.skipif(not (shutil.which("useradd") and shutil.which("setpriv")),
                       reason="needs useradd and setpriv"),
]

SYSTEM_PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3")
                      if os.access(p, os.X_OK)), None)

# The planted "runner": answers `list` with a service of its own and `exec_spec` with
# root's identity, as an attacker who bound the socket first would.
PLANTED = r"""
import json, os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o666)
s.listen(8)
while True:
    conn, _ = s.accept()
    try:
        line = conn.makefile("rb").readline()
        op = json.loads(line)["op"] if line.strip() else ""
        result = {"services": [{"name": "planted", "state": "RUNNING", "health": "-",
                                "pid": 1, "uptime": 1, "restarts": 0, "exit": None}]}
        if op == "exec_spec":
            result = {"name": "app", "env": {"PATH": "/usr/bin:/bin"}, "directory": "/",
                      "user": "root", "uid": 0, "gid": 0, "groups": [0]}
        conn.sendall((json.dumps({"v": 1, "ok": True, "result": result}) + "\n").encode())
    except OSError:         # a client that hung up
        pass
    finally:
        conn.close()
"""


@pytest.fixture
def account():
    """A throwaway user and a directory of its own that everyone may enter."""
    if SYSTEM_PYTHON is None:
        pytest.skip("no system python3 that another user may run")
    name = f"eplp{os.getpid() % 100000}"
    subprocess.run(["userdel", "-r", name], capture_output=True)
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    home = tempfile.mkdtemp(prefix="ep-lp-", dir="/tmp")
    os.chmod(home, 0o755)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    token = f"eplp-{os.getpid()}-{id(home)}"
    try:
        yield {"name": name, "uid": entry.pw_uid, "gid": entry.pw_gid, "home": home,
               "token": token}
    finally:
        for _ in range(50):         # every process of ours, found by its token, by pid
            pids = tagged_pids(token)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_until(lambda: not any(p in tagged_pids(token) for p in pids), 5,
                       what="killed processes gone")
        subprocess.run(["userdel", "-r", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def as_user(account, argv: list[str], env: dict, cwd: str | None = None) -> subprocess.Popen:
    """Start argv as the account (setpriv execs: the pid is the program's)."""
    env = {**env, "EP_TEST_TOKEN": account["token"]}
    return subprocess.Popen(["setpriv", f"--reuid={account['uid']}", f"--regid={account['gid']}",
                             "--init-groups", *argv], env=env, cwd=cwd or account["home"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def plant(account, path: str) -> subprocess.Popen:
    script = os.path.join(account["home"], "planted.py")
    with open(script, "w") as f:
        f.write(PLANTED)
    os.chmod(script, 0o644)
    proc = as_user(account, [SYSTEM_PYTHON, script, path], {"PATH": "/usr/bin:/bin"})
    wait_until(lambda: os.path.exists(path) or proc.poll() is not None, 10, what="planted socket")
    assert proc.poll() is None, proc.stdout.read().decode()
    return proc


def discovering_env(**extra: str) -> dict:
    """A client environment with no socket named: the client looks by itself."""
    env = entrypoint_env()
    env.pop("ENTRYPOINT_SOCKET")
    env.pop("XDG_RUNTIME_DIR", None)
    env.update(extra)
    return env


def run(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "entrypoint", *args], env=env, capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL, cwd="/")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


@pytest.fixture
def clear_default_places():
    """Root's client looks at /run/entrypoint.sock first: a real runner there would answer."""
    if os.path.exists("/run/entrypoint.sock"):
        pytest.skip("a runner listens on /run/entrypoint.sock on this machine")


@pytest.mark.parametrize("where", ["tmp", "xdg"])
def test_a_planted_socket_found_by_looking_is_refused(account, clear_default_places, where):
    if where == "tmp":
        path, extra = "/tmp/entrypoint-0.sock", {}
        if os.path.lexists(path):
            pytest.skip(f"{path} exists on this machine")
    else:
        xdg = os.path.join(account["home"], "xdg")
        os.mkdir(xdg)
        os.chown(xdg, account["uid"], account["gid"])
        path, extra = os.path.join(xdg, "entrypoint.sock"), {"XDG_RUNTIME_DIR": xdg}
    planted = plant(account, path)
    try:
        env = discovering_env(**extra)
        done = run("list", env=env)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "planted" not in done.stdout
        assert (f"refusing {path}: it is served by {account['name']} (uid {account['uid']})"
                in done.stderr), done.stderr
        assert f"--socket {path}" in done.stderr and "Traceback" not in done.stderr
        done = run("exec", "app", "--", "id", "-u", env=env)
        assert done.returncode == 1 and done.stdout == "", (done.stdout, done.stderr)
        assert "refusing" in done.stderr
    finally:
        stop(planted)
        if os.path.lexists(path):
            os.unlink(path)


def test_other_users_sockets_are_not_scanned_but_may_be_named(account, clear_default_places):
    path = f"/tmp/entrypoint-{account['uid']}.sock"
    if os.path.lexists("/tmp/entrypoint-0.sock") or os.path.lexists(path):
        pytest.skip("a socket in /tmp is in the way on this machine")
    planted = plant(account, path)
    try:
        env = discovering_env()
        done = run("list", env=env)
        assert done.returncode == 3, (done.stdout, done.stderr)
        assert "planted" not in done.stdout
        assert f"a runner of another user may listen at {path}" in done.stderr
        # Named, it is used as named: root may drive another user's runner...
        done = run("list", "--socket", path, env=env)
        assert done.returncode == 0 and "planted" in done.stdout, done.stderr
        # ...but `exec` through it gets that user's uid, whatever the server claims.
        done = run("exec", "--socket", path, "app", "--", "sh", "-c", "id -u; id -G", env=env)
        assert done.returncode == 0, done.stderr
        uid, groups = done.stdout.splitlines()
        assert int(uid) == account["uid"]
        assert "0" not in groups.split()
    finally:
        stop(planted)
        if os.path.lexists(path):
            os.unlink(path)


# -- a real runner of another user -----------------------------------------------------

def _site_copy(home: str) -> str:
    """The package and its dependencies, readable by anyone (this venv lives under /root)."""
    lib = os.path.join(home, "lib")
    shutil.copytree(os.path.join(ROOT, "entrypoint"), os.path.join(lib, "entrypoint"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    for module in ("pydantic", "pydantic_core", "annotated_types", "typing_extensions",
                   "typing_inspection", "dotenv", "setproctitle"):
        try:
            origin = importlib.import_module(module).__file__
        except ImportError:
            continue
        if os.path.basename(origin) == "__init__.py":
            src = os.path.dirname(origin)
            shutil.copytree(src, os.path.join(lib, os.path.basename(src)),
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, lib)
    for dirpath, dirnames, filenames in os.walk(home):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    return lib


def test_root_exec_through_a_users_runner_runs_as_that_user(account):
    if SYSTEM_PYTHON is None or subprocess.run(
            [SYSTEM_PYTHON, "-c", f"import sys; sys.exit(sys.version_info[:2] != {tuple(sys.version_info[:2])})"]
    ).returncode != 0:
        pytest.skip("the system python3 is not this python's version (compiled dependencies)")
    home = account["home"]
    lib = _site_copy(home)
    rundir = os.path.join(home, "run")
    os.mkdir(rundir)
    os.chown(rundir, account["uid"], account["gid"])
    sock = os.path.join(rundir, "ctl.sock")
    config = os.path.join(home, "services.toml")
    with open(config, "w") as f:
        f.write('[[services]]\nname = "app"\ncommand = "sleep"\nargs = ["1000"]\n'
                'env = { APP_MODE = "production" }\n')
    os.chmod(config, 0o644)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": lib, "NO_COLOR": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "ENTRYPOINT_NO_INSTALL": "1", "HOME": home}
    runner = as_user(account, [SYSTEM_PYTHON, "-m", "entrypoint", "-c", config,
                               "--socket", sock], env)
    try:
        wait_until(lambda: os.path.exists(sock) or runner.poll() is not None, 30,
                   what="the runner's socket")
        assert runner.poll() is None, runner.stdout.read().decode()
        client_env = discovering_env()
        # Named explicitly, root's client drives a runner of another uid.
        wait_until(lambda: "RUNNING" in run("list", "--socket", sock, env=client_env).stdout,
                   15, what="app RUNNING")
        done = run("exec", "--socket", sock, "app", "--", "sh", "-c",
                   'id -u; id -g; id -G; echo "$APP_MODE"', env=client_env)
        assert done.returncode == 0, done.stderr
        uid, gid, groups, mode = done.stdout.splitlines()
        assert (int(uid), int(gid)) == (account["uid"], account["gid"]), done.stdout
        assert "0" not in groups.split() and mode == "production"
    finally:
        try:
            os.kill(runner.pid, signal.SIGTERM)
            runner.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            stop(runner)
