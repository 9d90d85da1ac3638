"""CONTRACT §10 on a real stack: the HTTP face as the runner's child, its API, its events,
its credentials and its metrics, driven over real sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from conftest import PYTHON, entrypoint_env, free_port, pid_alive, wait_until
from control_helpers import ctl, services, start_runner
from web_helpers import SSE, answers, http, needs_web, post_unread, web_stack

pytestmark = [pytest.mark.timeout(90), needs_web]

TOKEN = "operate-token-0123456789"
READ = "read-only-token-0123456789"

APP = """
[timeouts]
service_shutdown_timeout = 3
[[services]]
name = "app"
command = "sh"
args = ["-c", "echo app up; exec sleep 1000"]
env = { SECRET_VALUE = "hunter2-not-for-you" }
[[services]]
name = "worker"
command = "sh"
args = ["-c", "echo worker up; exec sleep 1000"]
"""


@pytest.fixture
def stack(run_entrypoint, write_config, sock):
    runner, base = web_stack(run_entrypoint, write_config, sock, APP)
    return runner, base


@pytest.fixture
def secured(run_entrypoint, write_config, sock):
    web = f'token = "{TOKEN}"\nread_token = "{READ}"'
    return web_stack(run_entrypoint, write_config, sock, APP, web)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# -- the API --------------------------------------------------------------------------

def test_services_and_one_service(stack, sock):
    runner, base = stack
    reply = http(base, "/api/v1/services")
    assert reply.status == 200
    listed = {s["name"]: s for s in reply.json["services"]}
    assert listed["app"]["state"] == "RUNNING"
    assert listed["app"]["pid"] == services(sock)["app"]["pid"]
    assert listed["app"]["rss_bytes"] > 0
    one = http(base, "/api/v1/services/app").json
    assert one["name"] == "app" and one["command"][0].endswith("sh")


def test_restart_changes_the_pid_and_unknown_names_are_404(stack, sock):
    runner, base = stack
    before = services(sock)["app"]["pid"]
    reply = http(base, "/api/v1/services/app/restart", "POST")
    assert reply.status == 200, reply.body
    after = reply.json["services"][0]["pid"]
    assert after != before and services(sock)["app"]["pid"] == after
    missing = http(base, "/api/v1/services/nope/restart", "POST")
    assert missing.status == 404
    assert "app" in missing.json["known"] and "nope" in missing.json["error"]


def test_stop_then_start_all_leaves_the_web_face_alone(stack, sock):
    runner, base = stack
    web_pid = services(sock)["entrypoint-web"]["pid"]
    assert http(base, "/api/v1/services/stop", "POST").status == 200
    states = {n: s["state"] for n, s in services(sock).items()}
    assert states == {"app": "STOPPED", "worker": "STOPPED", "entrypoint-web": "RUNNING"}
    assert http(base, "/api/v1/services/start", "POST").status == 200
    assert services(sock)["app"]["state"] == "RUNNING"
    assert services(sock)["entrypoint-web"]["pid"] == web_pid


def test_a_failed_action_is_409_with_why(run_entrypoint, write_config, sock):
    crashing = APP + '[[services]]\nname = "crasher"\ncommand = "sh"\nargs = ["-c", "exit 7"]\nrestart = "no"\n'
    runner, base = web_stack(run_entrypoint, write_config, sock, crashing)
    reply = http(base, "/api/v1/services/crasher/start", "POST")
    assert reply.status == 409
    assert "crasher" in reply.json["error"] and "7" in reply.json["error"]


def test_logs_history_health_config(stack, sock):
    runner, base = stack
    runner.wait_for("app up")
    logs = http(base, "/api/v1/services/app/logs?lines=5").json
    assert [entry["line"] for entry in logs["lines"]] == ["app up"]
    assert http(base, "/api/v1/services/app/logs?lines=many").status == 400
    history = http(base, "/api/v1/services/app/history").json
    assert "RUNNING" in [h["state"] for h in history["history"]]
    assert http(base, "/api/v1/health").status == 200
    assert ctl(sock, "stop", "worker").returncode == 0
    unhealthy = http(base, "/api/v1/health")
    assert unhealthy.status == 503 and "worker" in unhealthy.body.decode()
    config = http(base, "/api/v1/config")
    assert config.status == 200
    assert "hunter2" not in config.body.decode()
    app = next(s for s in config.json["services"] if s["name"] == "app")
    assert app["env"] == {"SECRET_VALUE": "***"}


def test_a_rejected_reload_is_422_with_every_problem(stack, sock, write_config):
    runner, base = stack
    write_config(APP.replace('name = "worker"', 'name = "worker"\nrestat = "no"\ndepends_on = "ngnix"')
                 .replace("[timeouts]", f'[web]\nlisten = "{base[7:]}"\n[timeouts]'))
    reply = http(base, "/api/v1/reload", "POST")
    assert reply.status == 422, reply.body
    problems = reply.json["problems"]
    assert any("restat" in p for p in problems) and any("ngnix" in p for p in problems)
    assert services(sock)["app"]["state"] == "RUNNING"


def test_unknown_routes_wrong_methods_and_huge_bodies(stack, sock):
    runner, base = stack
    before = services(sock)["app"]["pid"]
    missing = http(base, "/api/v1/nothing")
    assert missing.status == 404 and "openapi.json" in missing.json["error"]
    wrong = http(base, "/api/v1/reload")          # GET on a POST route
    assert wrong.status == 405 and "GET" in wrong.json["error"]
    status, reply = post_unread(base, "/login", b"x" * (1 << 20))
    assert status == 413, reply[:300]
    bad = http(base, "/api/v1/services/app/explode", "POST")
    assert bad.status == 404 and "restart" in bad.json["error"]
    assert services(sock)["app"]["pid"] == before
    assert "Traceback" not in runner.output + runner.stderr


def test_openapi_describes_every_endpoint(stack):
    runner, base = stack
    spec = http(base, "/openapi.json").json
    paths = spec["paths"]
    for path in ("/api/v1/services", "/api/v1/services/{name}", "/api/v1/services/{name}/{action}",
                 "/api/v1/services/{action}", "/api/v1/services/{name}/logs",
                 "/api/v1/services/{name}/history", "/api/v1/reload", "/api/v1/config",
                 "/api/v1/health", "/api/v1/events", "/metrics", "/login"):
        assert path in paths, path


# -- its own process ------------------------------------------------------------------

def test_sigkill_of_the_web_face_touches_no_service_and_it_comes_back(stack, sock):
    runner, base = stack
    before = services(sock)
    web_pid, app_pid = before["entrypoint-web"]["pid"], before["app"]["pid"]
    os.kill(web_pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(web_pid), 5, what="the web face gone")
    wait_until(lambda: answers(base) and services(sock)["entrypoint-web"]["pid"] != web_pid,
               20, 0.1, what="the web face back")
    after = services(sock)
    assert after["app"]["pid"] == app_pid and after["app"]["restarts"] == 0
    assert after["worker"]["pid"] == before["worker"]["pid"]
    assert http(base, "/api/v1/services").status == 200


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_the_runner_does_not_load_the_web_stack(stack, run_entrypoint, write_config, tmp_path):
    """The runner's memory with [web] is what it is without: starlette and uvicorn
    (~15 MB) live only in the child."""
    runner, base = stack
    plain_sock = str(tmp_path / "plain.sock")
    plain = run_entrypoint("-c", write_config(APP, "plain.toml"), "--socket", plain_sock,
                           env=entrypoint_env(ENTRYPOINT_SOCKET=plain_sock))
    wait_until(lambda: os.path.exists(plain_sock), 15, what="the plain runner")
    http(base, "/api/v1/services")     # the runner has answered the web face
    with_web, without = _rss_kb(runner.pid), _rss_kb(plain.pid)
    assert with_web - without < 4096, (with_web, without)
    web_pid = services(str(tmp_path / "ctl.sock"))["entrypoint-web"]["pid"]
    assert _rss_kb(web_pid) > 10_000     # the stack is there, in the child


def test_non_loopback_without_credentials_is_a_config_error(write_config):
    path = write_config('[web]\nlisten = "0.0.0.0:9180"\n' + APP)
    done = subprocess.run([PYTHON, "-m", "entrypoint", "check", "-c", path], env=entrypoint_env(),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "web: listen" in done.stderr and "credential" in done.stderr
    assert "Traceback" not in done.stderr
    ok = write_config(f'[web]\nlisten = "0.0.0.0:9180"\ntoken = "{TOKEN}"\n' + APP, "ok.toml")
    assert subprocess.run([PYTHON, "-m", "entrypoint", "check", "-c", ok], env=entrypoint_env(),
                          capture_output=True, timeout=30).returncode == 0


# -- credentials ----------------------------------------------------------------------

def test_bearer_tokens_and_roles(secured, sock):
    runner, base = secured
    assert http(base, "/api/v1/services").status == 401
    assert http(base, "/api/v1/services", headers=bearer("wrong-token-0123456789")).status == 401
    for malformed in ("Bearer", "Basic dXNlcjpwdw==", "Bearer \u00e9\u00e9", "Token " + TOKEN):
        reply = http(base, "/api/v1/services", headers={"Authorization": malformed.encode(
            "utf-8").decode("latin-1")})
        assert reply.status == 401, malformed
    assert http(base, "/metrics").status == 401
    assert http(base, "/api/v1/events").status == 401
    assert http(base, "/api/v1/services", headers=bearer(READ)).status == 200
    before = services(sock)["app"]["pid"]
    refused = http(base, "/api/v1/services/app/restart", "POST", headers=bearer(READ))
    assert refused.status == 403 and "read" in refused.json["error"]
    assert services(sock)["app"]["pid"] == before
    assert http(base, "/api/v1/services/app/restart", "POST", headers=bearer(TOKEN)).status == 200
    assert services(sock)["app"]["pid"] != before
    runner.wait_for(r"app: restart requested by .* for HTTP client 127\.0\.0\.1 \(bearer token\)")
    assert TOKEN not in runner.output + runner.stderr and READ not in runner.output
    assert TOKEN not in ctl(sock, "status", "entrypoint-web").stdout


def test_cookie_login_origin_checks_and_logout(secured, sock):
    runner, base = secured
    began = time.monotonic()
    failed = http(base, "/login", "POST", body={"token": "not-the-token-at-all"})
    assert failed.status == 401 and time.monotonic() - began >= 0.9    # slowed down
    login = http(base, "/login", "POST", body={"token": TOKEN})
    assert login.status == 200
    set_cookie = login.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "samesite=strict" in set_cookie.lower()
    cookie = set_cookie.split(";")[0]
    assert TOKEN not in cookie
    assert http(base, "/api/v1/services", headers={"Cookie": cookie}).status == 200
    no_origin = http(base, "/api/v1/services/app/restart", "POST", headers={"Cookie": cookie})
    assert no_origin.status == 403 and "Origin" in no_origin.json["error"]
    evil = http(base, "/api/v1/services/app/restart", "POST",
                headers={"Cookie": cookie, "Origin": "http://evil.example"})
    assert evil.status == 403
    good = http(base, "/api/v1/services/app/restart", "POST",
                headers={"Cookie": cookie, "Origin": base})
    assert good.status == 200
    assert http(base, "/logout", "POST", headers={"Cookie": cookie, "Origin": base}).status == 200
    assert http(base, "/api/v1/services", headers={"Cookie": cookie}).status == 401


def _have_pam() -> bool:
    try:
        import pam
        pam.pam()
    except (ImportError, AttributeError):
        return False
    return os.path.exists("/etc/pam.d/login") and os.geteuid() == 0


@pytest.fixture
def pam_user():
    name = f"epweb{os.getpid() % 100000}"
    password = "Corr3ct-horse-battery"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}", text=True, check=True)
        yield name, password
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.mark.skipif(not _have_pam(), reason="needs python-pam, libpam, /etc/pam.d/login and root")
def test_pam_login_with_a_system_account(run_entrypoint, write_config, sock, pam_user):
    user, password = pam_user
    runner, base = web_stack(run_entrypoint, write_config, sock, APP, "pam = true")
    assert http(base, "/api/v1/services").status == 401
    wrong = http(base, "/login", "POST", body={"user": user, "password": "wrong"})
    assert wrong.status == 401
    nobody = http(base, "/login", "POST", body={"user": "no-such-user-x", "password": "x"})
    assert nobody.status == 401 and nobody.json["error"] == wrong.json["error"]
    good = http(base, "/login", "POST", body={"user": user, "password": password})
    assert good.status == 200 and good.json == {"role": "operate", "user": user}
    cookie = good.headers["set-cookie"].split(";")[0]
    assert http(base, "/api/v1/services", headers={"Cookie": cookie}).status == 200
    assert password not in runner.output + runner.stderr


@pytest.mark.skipif(not _have_pam(), reason="needs python-pam, libpam, /etc/pam.d/login and root")
def test_pam_group_limits_who_may_log_in(run_entrypoint, write_config, sock, pam_user):
    user, password = pam_user
    outsider = user + "x"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", outsider], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{outsider}:{password}", text=True, check=True)
        # useradd gives each user a group of its own name: only `user` is in it.
        runner, base = web_stack(run_entrypoint, write_config, sock, APP,
                                 f'pam = true\npam_group = "{user}"')
        refused = http(base, "/login", "POST", body={"user": outsider, "password": password})
        assert refused.status == 401
        assert http(base, "/login", "POST", body={"user": user, "password": password}).status == 200
    finally:
        subprocess.run(["userdel", outsider], capture_output=True)


# -- events ---------------------------------------------------------------------------

def test_sse_state_changes_and_last_event_id_resume(stack, sock):
    runner, base = stack
    stream = SSE(base, "/api/v1/events")
    try:
        snapshot = stream.read_until(lambda e: e["event"] == "snapshot")
        assert {s["service"] for s in snapshot["data"]["services"]} >= {"app", "worker"}
        assert ctl(sock, "restart", "app").returncode == 0
        running = stream.read_until(lambda e: e["event"] == "state" and e["data"]["service"] == "app"
                                    and e["data"]["state"] == "RUNNING")
        last_id = running["id"]
    finally:
        stream.close()
    assert ctl(sock, "restart", "worker").returncode == 0    # while no one listens
    resumed = SSE(base, "/api/v1/events", {"Last-Event-ID": last_id})
    try:
        first = resumed.read_until(lambda e: True)
        assert first["event"] == "state", "a resume replays what was missed, no snapshot"
        resumed.read_until(lambda e: e["event"] == "state" and e["data"]["service"] == "worker"
                           and e["data"]["state"] == "RUNNING")
        assert all(e["data"].get("service") != "app" for e in resumed.events)
    finally:
        resumed.close()


def test_sse_log_lines_for_the_services_asked(run_entrypoint, write_config, sock):
    chatty = APP + ('[[services]]\nname = "chatty"\ncommand = "sh"\n'
                    'args = ["-c", "i=0; while [ $i -lt 200 ]; do i=$((i+1)); echo n$i; done; exec sleep 1000"]\n')
    runner, base = web_stack(run_entrypoint, write_config, sock, chatty)
    stream = SSE(base, "/api/v1/events?logs=chatty,app")
    try:
        stream.read_until(lambda e: e["event"] == "snapshot")
        assert ctl(sock, "restart", "chatty").returncode == 0
        stream.read_until(lambda e: e["event"] == "log" and "n200" in e["data"]["lines"])
        lines = [line for e in stream.events if e["event"] == "log"
                 and e["data"]["service"] == "chatty" for line in e["data"]["lines"]]
        assert lines[-200:] == [f"n{i}" for i in range(1, 201)]
        assert {e["data"]["service"] for e in stream.events if e["event"] == "log"} <= {"chatty", "app"}
        last_id = stream.events[-1]["id"]
    finally:
        stream.close()
    assert ctl(sock, "restart", "chatty").returncode == 0     # 200 lines while away
    resumed = SSE(base, "/api/v1/events?logs=chatty", {"Last-Event-ID": last_id})
    try:
        resumed.read_until(lambda e: e["event"] == "log" and "n200" in e["data"]["lines"])
        assert resumed.events[0]["event"] != "snapshot"
        missed = [line for e in resumed.events if e["event"] == "log" for line in e["data"]["lines"]]
        assert missed == [f"n{i}" for i in range(1, 201)]
    finally:
        resumed.close()


def test_metrics_parse_with_prometheus_client(stack, sock):
    parser = pytest.importorskip("prometheus_client.parser")
    runner, base = stack
    runner.wait_for("app up")
    assert ctl(sock, "restart", "app").returncode == 0
    runner.wait_for("app up", count=2)
    reply = http(base, "/metrics")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in parser.text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    names = {name for name, _ in samples}
    for wanted in ("service_up", "service_state", "service_healthy", "service_restarts_total",
                   "service_start_time_seconds", "service_cpu_seconds_total",
                   "service_memory_rss_bytes", "log_lines_total", "build_info"):
        assert f"entrypoint_{wanted}" in names, wanted
    app = services(sock)["app"]
    assert samples[("entrypoint_service_up", (("service", "app"),))] == 1
    assert samples[("entrypoint_service_state", (("service", "app"), ("state", "RUNNING")))] == 1
    assert samples[("entrypoint_service_state", (("service", "app"), ("state", "FAILED")))] == 0
    assert samples[("entrypoint_service_restarts_total", (("service", "app"),))] == app["restarts"]
    assert abs(samples[("entrypoint_service_start_time_seconds", (("service", "app"),))]
               - (time.time() - app["uptime"])) < 5
    assert samples[("entrypoint_service_memory_rss_bytes", (("service", "app"),))] > 0
    assert samples[("entrypoint_log_lines_total", (("service", "app"),))] == 2   # "app up" twice
    assert any(name == "entrypoint_build_info" for name, _ in samples)


def test_open_loopback_refuses_cross_site_posts_and_foreign_hosts(stack, sock):
    """No credential on loopback: a page of another site must not drive it (CSRF), nor a
    name of another site that resolves to 127.0.0.1 (DNS rebinding)."""
    runner, base = stack
    before = services(sock)["app"]["pid"]
    csrf = http(base, "/api/v1/services/app/stop", "POST", headers={"Origin": "http://evil.example"})
    assert csrf.status == 403 and "cross-site" in csrf.json["error"]
    rebound = http(base, "/api/v1/services", headers={"Host": "evil.example:9180"})
    assert rebound.status == 403 and "loopback" in rebound.json["error"]
    assert services(sock)["app"]["pid"] == before
    same = http(base, "/api/v1/services/app/restart", "POST", headers={"Origin": base})
    assert same.status == 200
    assert http(base, "/api/v1/services", headers={"Host": "localhost:1"}).status == 200


def test_entrypoint_web_against_a_running_runner(run_entrypoint, write_config, sock, tmp_path):
    """`entrypoint web --socket --listen` serves a runner that has no [web] of its own;
    a runner it cannot reach is a 503 that says where it looked."""
    runner = start_runner(run_entrypoint, write_config(APP), sock)
    port = free_port()
    web = run_entrypoint("web", "--socket", sock, "--listen", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(base) or web.proc.poll() is not None, 20, 0.1, what="the web face")
    assert {s["name"] for s in http(base, "/api/v1/services").json["services"]} == {"app", "worker"}
    port2 = free_port()
    lost = run_entrypoint("web", "--socket", str(tmp_path / "nothing.sock"),
                          "--listen", f"127.0.0.1:{port2}")
    base2 = f"http://127.0.0.1:{port2}"
    wait_until(lambda: answers(base2) or lost.proc.poll() is not None, 20, 0.1, what="the web face")
    reply = http(base2, "/api/v1/services")
    assert reply.status == 503 and "nothing.sock" in reply.json["error"]
    public = run_entrypoint("web", "--socket", sock, "--listen", "0.0.0.0:1")
    assert public.wait(20) == 2
    assert "credential" in public.stderr and "Traceback" not in public.stderr
    assert runner.proc.poll() is None


def test_a_procfile_gets_the_face_from_the_environment(run_entrypoint, tmp_path):
    (tmp_path / "Procfile").write_text("app: echo procfile app; exec sleep 1000\n")
    port = free_port()
    sock = str(tmp_path / "ctl.sock")
    runner = run_entrypoint("--procfile", str(tmp_path / "Procfile"), "--socket", sock,
                            env=entrypoint_env(ENTRYPOINT_SOCKET=sock,
                                               ENTRYPOINT_WEB_LISTEN=f"127.0.0.1:{port}"))
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(base) or runner.proc.poll() is not None, 20, 0.1, what="the face")
    names = {s["name"] for s in http(base, "/api/v1/services").json["services"]}
    assert names == {"app", "entrypoint-web"}


def test_the_face_ends_with_a_killed_runner(stack, sock):
    """SIGKILL to the runner (no shutdown, no stop signal): the face does not linger."""
    runner, base = stack
    web_pid = services(sock)["entrypoint-web"]["pid"]
    os.kill(runner.pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(web_pid), 10, what="the web face gone with its runner")
    assert not answers(base)
