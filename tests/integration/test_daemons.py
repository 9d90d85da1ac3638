"""Real daemons under `entrypoint` as PID 1: Debian's redis-server and nginx-light.

The stack: redis (healthy by a tcp check), a oneshot `redis-cli ping` that must complete,
nginx (`daemon off;`, on a free port) depending on both, and a worker running as a
throwaway user that talks to redis. The runner is PID 1 of a PID namespace
(`unshare --pid --fork --mount-proc`), as in a container.

Checked: the daemons answer; SIGTERM stops everything in reverse dependency order, each
within its stop timeout, with exit status 0 and the ports free afterwards; a SIGKILLed
redis is restarted (or, when `required` and not restarted, takes the stack down with 137).

Skipped when the daemons are not installed (`.ci/run` installs nginx-light, redis-server and
redis-tools) or when this machine cannot create a PID namespace or users. Every process is
killed at the end: the namespace's PID 1 by its host pid (the kernel then kills the rest of
the namespace), and anything carrying the test's environment token.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid

import pytest

from conftest import entrypoint_env, free_port, pid_alive, tagged_pids, wait_until

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]
NGINX = "/usr/sbin/nginx"
REDIS = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
SHUTDOWN_TIMEOUT = 5        # service_shutdown_timeout of the stack

pytestmark = [pytest.mark.timeout(120)]


def _can_unshare() -> bool:
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


_missing = [p for p in (NGINX, REDIS, REDIS_CLI) if not os.access(p, os.X_OK)]
needs_daemons = pytest.mark.skipif(
    bool(_missing), reason=f"not installed: {', '.join(_missing)} "
                           f"(apt-get install nginx-light redis-server redis-tools)")
needs_root_and_pidns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None or not _can_unshare(),
    reason="needs root, useradd and a PID namespace (unshare)")


# -- fixtures ---------------------------------------------------------------------------

@pytest.fixture
def throwaway_user():
    name = "ep-w-" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True)


@pytest.fixture
def stack(tmp_path, throwaway_user):
    """Writes the stack's files; yields a function that starts it and returns the runner."""
    token = uuid.uuid4().hex
    started = []
    tmp = tempfile.mkdtemp(prefix="ep-daemons-")
    os.chmod(tmp, 0o755)

    def start(run_entrypoint, *, required: bool = False, restart: str = "on-failure"):
        rport, nport = free_port(), free_port()
        while nport == rport:
            nport = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(tmp=tmp, nport=nport))
        cfg = tmp_path / "services.toml"
        cfg.write_text(STACK.format(tmp=tmp, rport=rport, nport=nport, conf=conf,
                                    user=throwaway_user, required=str(required).lower(),
                                    restart=restart))
        env = entrypoint_env(EP_TEST_TOKEN=token,
                             ENTRYPOINT_SOCKET=os.path.join(tmp, "ctl.sock"))
        r = run_entrypoint("-c", str(cfg), prefix=UNSHARE, env=env)
        r.rport, r.nport, r.user = rport, nport, throwaway_user
        started.append(r)
        return r

    yield start
    for r in started:
        pid1 = _pid1_of(r.pid)
        if pid1 is not None:        # PID 1 dies: the kernel kills its whole namespace
            _kill(pid1, signal.SIGKILL)
        r.kill()
    for _ in range(50):
        pids = tagged_pids(token)
        if not pids:
            break
        for pid in pids:
            _kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    shutil.rmtree(tmp, ignore_errors=True)


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user nobody nogroup;
pid {tmp}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 64; }}
http {{
    access_log /dev/stdout;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{nport};
        location = /health {{ return 200 "ok\\n"; }}
        location / {{ return 200 "hello from nginx\\n"; }}
    }}
}}
"""

STACK = """\
[timeouts]
service_shutdown_timeout = 5
global_shutdown_timeout = 15
dependency_wait_timeout = 30

[[services]]
name = "redis"
command = "/usr/bin/redis-server"
args = ["--port", "{rport}", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", "{tmp}", "--logfile", "", "--daemonize", "no"]
healthcheck = {{ tcp = "127.0.0.1:{rport}", interval = 0.2, timeout = 1, retries = 3 }}
required = {required}
restart = "{restart}"
restart_delay = 0.2

[[services]]
name = "ping"
command = "/usr/bin/redis-cli"
args = ["-p", "{rport}", "ping"]
oneshot = true
depends_on = {{ redis = "healthy" }}

[[services]]
name = "nginx"
command = "/usr/sbin/nginx"
args = ["-c", "{conf}", "-e", "stderr", "-p", "{tmp}"]
depends_on = {{ redis = "healthy", ping = "completed" }}
healthcheck = {{ http = "http://127.0.0.1:{nport}/health", interval = 0.2, timeout = 1, retries = 3 }}

[[services]]
name = "worker"
command = "/bin/sh"
args = ["-c", "echo worker runs as $$(id -un); while :; do redis-cli -p {rport} incr hits >/dev/null 2>&1; sleep 0.1; done"]
user = "{user}"
depends_on = "redis"
"""


# -- helpers ----------------------------------------------------------------------------

def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _children(pid: int) -> list[int]:
    out = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                out += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return out


def _pid1_of(unshare_pid: int) -> int | None:
    """The host pid of the namespace's PID 1: the only child of `unshare --fork`."""
    kids = _children(unshare_pid)
    return kids[0] if kids else None




def _descendants(root: int) -> list[int]:
    found, frontier = [], [root]
    while frontier:
        kids = _children(frontier.pop())
        found += kids
        frontier += kids
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def redis_call(port: int, *words: str, timeout: float = 2.0) -> bytes:
    """One RESP command to redis on 127.0.0.1:port; the first reply line."""
    payload = f"*{len(words)}\r\n".encode() + b"".join(
        f"${len(w)}\r\n{w}\r\n".encode() for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        data = b""
        while not data.endswith(b"\r\n") or data.startswith(b"$") and data.count(b"\r\n") < 2:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def redis_answers(port: int) -> bool:
    try:
        return redis_call(port, "PING") == b"+PONG\r\n"
    except OSError:
        return False


def port_free(port: int) -> bool:
    """Nothing listens on the port, and a daemon could bind it again (SO_REUSEADDR, as
    redis and nginx do: connections our test closed may linger in TIME_WAIT)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        pass
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
            return True
        except OSError:
            return False


def http_get(port: int, path: str = "/") -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
        return reply.status, reply.read().decode()


def wait_stack_up(r) -> None:
    r.wait_for(r"entrypoint \| redis: healthy", timeout=30)
    r.wait_for(r"^ping +\| PONG", timeout=30)
    r.wait_for(r"entrypoint \| ping: completed", timeout=30)
    r.wait_for(r"entrypoint \| nginx: healthy", timeout=30)
    r.wait_for(rf"^worker +\| worker runs as {re.escape(r.user)}$", timeout=30)


def redis_pid(r) -> int:
    pid1 = _pid1_of(r.pid)
    assert pid1 is not None, "no PID 1 under unshare"
    pids = [p for p in _descendants(pid1) if _comm(p) == "redis-server"]
    assert len(pids) == 1, f"expected one redis-server, found {pids}"
    return pids[0]


# -- tests ------------------------------------------------------------------------------

@needs_daemons
@needs_root_and_pidns
def test_nginx_redis_stack_as_pid1(run_entrypoint, stack):
    r = stack(run_entrypoint)
    wait_stack_up(r)
    r.wait_for(r"as PID 1")

    # The daemons answer.
    assert redis_answers(r.rport)
    assert http_get(r.nport) == (200, "hello from nginx\n")
    r.wait_for(r'^nginx +\| 127\.0\.0\.1 - - .*"GET / HTTP/1\.1" 200', timeout=10)  # access log
    # The worker runs as the throwaway user and really talks to redis.
    uid = pwd.getpwnam(r.user).pw_uid
    pid1 = _pid1_of(r.pid)
    assert any(_uid(p) == uid for p in _descendants(pid1)), "no process of the worker's user"
    wait_until(lambda: int(redis_call(r.rport, "GET", "hits").split(b"\r\n")[1] or 0) > 2,
               timeout=10, what="the worker's counter in redis")

    # SIGKILL redis: it is restarted, healthy again, and answers on the same port.
    old = redis_pid(r)
    os.kill(old, signal.SIGKILL)
    r.wait_for(r"entrypoint \| redis: exited \(killed by SIGKILL\)", timeout=10)
    r.wait_for(r"entrypoint \| redis: restarting in", timeout=10)
    r.wait_for(r"entrypoint \| redis: healthy", timeout=20, count=2)
    wait_until(lambda: redis_answers(r.rport), timeout=10, what="redis answering again")
    assert redis_pid(r) != old
    assert http_get(r.nport) == (200, "hello from nginx\n")   # nginx was not disturbed

    # SIGTERM to PID 1: reverse order, in time, exit 0, ports free.
    began = time.monotonic()
    os.kill(pid1, signal.SIGTERM)
    assert r.wait(timeout=30) == 0
    took = time.monotonic() - began
    out = r.output
    assert took < SHUTDOWN_TIMEOUT, f"shutdown took {took:.1f}s:\n{out}"
    assert "SIGKILL" not in out.split("SIGTERM received", 1)[1], out
    stopped = {m.group(1): i for i, m in
               ((i, re.search(r"entrypoint \| (\w+) stopped \(", line))
                for i, line in enumerate(r.lines)) if m}
    assert set(stopped) >= {"redis", "nginx", "worker"}, out
    assert stopped["nginx"] < stopped["redis"] and stopped["worker"] < stopped["redis"], out
    assert "exit status 0" in out
    wait_until(lambda: port_free(r.rport) and port_free(r.nport), timeout=5,
               what="ports free after the shutdown")
    assert not pid_alive(pid1)


@needs_daemons
@needs_root_and_pidns
def test_required_redis_killed_brings_the_stack_down(run_entrypoint, stack):
    r = stack(run_entrypoint, required=True, restart="no")
    wait_stack_up(r)
    assert http_get(r.nport)[0] == 200

    os.kill(redis_pid(r), signal.SIGKILL)
    assert r.wait(timeout=30) == 128 + signal.SIGKILL
    out = r.output
    assert 'required service "redis" failed' in out
    assert re.search(r"nginx stopped \(", out) and re.search(r"worker stopped \(", out), out
    assert "exit status 137" in out
    wait_until(lambda: port_free(r.rport) and port_free(r.nport), timeout=5,
               what="ports free after the stack went down")


@needs_root_and_pidns
def test_the_dockerfile_example_stack_as_pid1(run_entrypoint, tmp_path):
    """Dockerfile.example without a Docker engine: its config (services.toml.example, found
    through ENTRYPOINT_CONFIG as in the image), `entrypoint` as PID 1 with no arguments (the
    exec-form ENTRYPOINT), its HEALTHCHECK command, and `docker stop` (SIGTERM to PID 1,
    then SIGKILL after 10 s) ending it well within the grace with exit status 0."""
    from conftest import ROOT, PYTHON

    token = uuid.uuid4().hex
    env = entrypoint_env(EP_TEST_TOKEN=token, WEB_PORT=str(free_port()),
                         ENTRYPOINT_CONFIG=str(ROOT / "services.toml.example"),
                         ENTRYPOINT_SOCKET=str(tmp_path / "ctl.sock"))
    r = run_entrypoint(prefix=UNSHARE, env=env, cwd=str(tmp_path))
    try:
        r.wait_for(r"as PID 1", timeout=30)
        r.wait_for(r"^worker +\| job 1: web answered 200", timeout=30)
        health = subprocess.run([PYTHON, "-m", "entrypoint", "health"], env=env,
                                capture_output=True, text=True, timeout=30)
        assert health.returncode == 0, health.stdout + health.stderr
        pid1 = _pid1_of(r.pid)
        began = time.monotonic()
        os.kill(pid1, signal.SIGTERM)              # docker stop
        assert r.wait(timeout=15) == 0, r.output
        took = time.monotonic() - began
        assert took < 10, f"docker stop would have killed it: {took:.1f}s"
        assert "exit status 0" in r.output
    finally:
        pid1 = _pid1_of(r.pid)
        if pid1 is not None:
            _kill(pid1, signal.SIGKILL)
        for pid in tagged_pids(token):
            _kill(pid, signal.SIGKILL)


TLS_SERVER = """
import http.server, ssl, sys
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
server.socket = context.wrap_socket(server.socket, server_side=True)
print("serving https", flush=True)
server.serve_forever()
"""


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")
def test_https_healthcheck_in_a_runner_that_imported_asyncio_without_ssl(run_entrypoint,
                                                                         tmp_path):
    """The runner imports asyncio without ssl (4.8 MB less) and hands ssl back to asyncio
    before the first https probe: a TLS service with a self-signed certificate is healthy."""
    from conftest import PYTHON

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    (tmp_path / "tls.py").write_text(TLS_SERVER)
    port = free_port()
    cfg = tmp_path / "services.toml"
    cfg.write_text(f"""
[[services]]
name = "tls"
command = "{PYTHON}"
args = ["{tmp_path / 'tls.py'}", "{port}", "{cert}", "{key}"]
healthcheck = {{ http = "https://127.0.0.1:{port}/", interval = 0.2, timeout = 2, retries = 3 }}
""")
    env = entrypoint_env(ENTRYPOINT_SOCKET=str(tmp_path / "ctl.sock"))
    r = run_entrypoint("-c", str(cfg), "--ready-timeout", "30", "--", "true", env=env)
    assert r.wait(timeout=45) == 0, r.output + r.stderr
    assert "tls: healthy" in r.output
    assert "Traceback" not in r.output + r.stderr


def test_the_runner_keeps_pydantic_and_ssl_out_of_its_memory(run_entrypoint, tmp_path):
    """docs/benchmarks.md: the config is validated in a short-lived child (pydantic, ~20 MB)
    and asyncio is imported without ssl (~5 MB): neither is mapped in the runner."""
    cfg = tmp_path / "services.toml"
    cfg.write_text('[[services]]\nname = "idle"\ncommand = "sleep"\nargs = ["60"]\n'
                   'healthcheck = { tcp = "127.0.0.1:9", interval = 5, retries = 100 }\n')
    env = entrypoint_env(ENTRYPOINT_SOCKET=str(tmp_path / "ctl.sock"))
    r = run_entrypoint("-c", str(cfg), env=env)
    r.wait_for(r"idle: started", timeout=30)
    with open(f"/proc/{r.pid}/maps") as f:
        maps = f.read()
    assert "pydantic_core" not in maps
    assert "libssl" not in maps and "_ssl." not in maps
    r.signal(signal.SIGTERM)
    assert r.wait(timeout=20) == 0
