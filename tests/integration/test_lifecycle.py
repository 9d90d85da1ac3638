"""CONTRACT §2/§4 on real processes: order, conditions, hooks, restarts, health, shutdown."""

import signal

import pytest

from conftest import free_port, index_of, service_lines

pytestmark = pytest.mark.timeout(60)



def test_start_order_conditions_and_reverse_stop(run_entrypoint, write_config, tmp_path):
    cfg = write_config("""
        [timeouts]
        service_shutdown_timeout = 3
        [[services]]
        name = "migrate"
        command = "sh"
        args = ["-c", "sleep 0.3; echo migrated"]
        oneshot = true
        [[services]]
        name = "db"
        command = "python3"
        args = ["-u", "-c", "import socket,time; time.sleep(0.5); s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 0)); open('PORTFILE','w').write(str(s.getsockname()[1])); s.listen(); print('listening'); time.sleep(60)"]
        directory = "DIR"
        healthcheck = { exec = ["sh", "-c", "test -s PORTFILE"], interval = 0.2 }
        [[services]]
        name = "app"
        command = "sh"
        args = ["-c", "echo app up; trap 'echo app got TERM; exit 0' TERM; while :; do sleep 0.1; done"]
        depends_on = ["migrate", "db"]
        [[services]]
        name = "late"
        command = "sh"
        args = ["-c", "trap 'exit 0' TERM; echo late up; while :; do sleep 0.1; done"]
        depends_on = { app = "started" }
        wait_after = 0.5
    """.replace("DIR", str(tmp_path)).replace("PORTFILE", str(tmp_path / "portfile")))
    r = run_entrypoint("-c", cfg)
    r.wait_for(r"late +\| late up")
    lines = r.lines
    assert index_of(lines, r"migrate +\| migrated") < index_of(lines, r"app +\| app up")
    assert index_of(lines, r"db: healthy") < index_of(lines, r"app +\| app up")
    r.signal(signal.SIGTERM)
    assert r.wait() == 0
    lines = r.lines
    assert index_of(lines, r"late stopped") < index_of(lines, r"app stopped")
    assert index_of(lines, r"app stopped") < index_of(lines, r"db stopped")
    assert "app got TERM" in service_lines(r, "app")


def test_dependency_wait_timeout_fails_dependent(run_entrypoint, write_config):
    cfg = write_config("""
        [timeouts]
        dependency_wait_timeout = 1
        [[services]]
        name = "slow"
        command = "sleep 30"
        healthcheck = { tcp = "127.0.0.1:1", interval = 0.2 }
        [[services]]
        name = "needs"
        command = "echo never"
        depends_on = "slow"
        required = true
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait() == 1
    r.wait_for(r'needs: dependencies not ready after 1s .*"slow" \(healthy\)')
    assert "never" not in service_lines(r, "needs")


def test_failed_dependency_fails_dependent_at_once(run_entrypoint, write_config):
    cfg = write_config("""
        [[services]]
        name = "setup"
        command = "sh"
        args = ["-c", "exit 5"]
        oneshot = true
        [[services]]
        name = "app"
        command = "echo never"
        depends_on = "setup"
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait() == 1
    r.wait_for(r'app: dependency "setup" will not become completed')


def test_restart_backoff_doubles_then_gives_up(run_entrypoint, write_config):
    cfg = write_config("""
        [[services]]
        name = "crashy"
        command = "sh"
        args = ["-c", "echo try; exit 3"]
        restart = "on-failure"
        restart_delay = 0.2
        restart_limit = 4
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait() == 1
    assert service_lines(r, "crashy").count("try") == 4
    out = r.output
    assert "restarting in 0.2s" in out and "restarting in 0.4s" in out and "restarting in 0.8s" in out
    r.wait_for(r"crashy: gave up after 4 quick failures")


def test_stable_run_resets_backoff(run_entrypoint, write_config, tmp_path):
    # Runs long enough to count as stable, then fails: never gives up, delay stays initial.
    counter = tmp_path / "n"
    cfg = write_config(f"""
        [[services]]
        name = "flaky"
        command = "sh"
        args = ["-c", "echo x >> {counter}; n=$$(wc -l < {counter}); echo run $$n; sleep 0.4; [ $$n -ge 4 ] && exit 0; exit 1"]
        restart_delay = 0.1
        restart_limit = 2
        stable_after = 0.3
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait() == 0          # ended STOPPED after run 4 exited 0
    assert service_lines(r, "flaky")[-1] == "run 4"
    assert "restarting in 0.2s" not in r.output


def test_restart_always_restarts_clean_exit_and_no_does_not(run_entrypoint, write_config):
    cfg = write_config("""
        [[services]]
        name = "always"
        command = "sh"
        args = ["-c", "echo tick"]
        restart = "always"
        restart_delay = 0.1
        restart_limit = 3
        [[services]]
        name = "never"
        command = "sh"
        args = ["-c", "echo once; exit 9"]
        restart = "no"
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait() == 1
    assert service_lines(r, "always").count("tick") == 3
    assert service_lines(r, "never").count("once") == 1


def test_pre_and_post_scripts(run_entrypoint, write_config, tmp_path):
    pre = tmp_path / "pre.sh"
    post = tmp_path / "post.sh"
    pre.write_text("#!/bin/sh\necho pre ran in $(pwd)\n")
    post.write_text("#!/bin/sh\necho post ran\n")
    pre.chmod(0o755)
    post.chmod(0o755)
    cfg = write_config(f"""
        [[services]]
        name = "svc"
        command = "sh"
        args = ["-c", "echo main ran"]
        oneshot = true
        directory = "{tmp_path}"
        pre_script = "{pre}"
        pos_script = "{post}"
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait() == 0
    assert service_lines(r, "svc") == [f"pre ran in {tmp_path}", "main ran", "post ran"]
    r.wait_for(r"pos_script")       # the alias is accepted with a warning


def test_failing_pre_script_fails_the_start(run_entrypoint, write_config, tmp_path):
    pre = tmp_path / "pre.sh"
    pre.write_text("#!/bin/sh\necho cannot prepare\nexit 4\n")
    pre.chmod(0o755)
    cfg = write_config(f"""
        [[services]]
        name = "svc"
        command = "echo never"
        pre_script = "{pre}"
        restart = "no"
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait() == 1
    assert "never" not in service_lines(r, "svc")
    r.wait_for(r"svc: pre_script .* failed \(exit status 4\): not started")


def test_pre_script_timeout(run_entrypoint, write_config, tmp_path):
    pre = tmp_path / "pre.sh"
    pre.write_text("#!/bin/sh\nsleep 30\n")
    pre.chmod(0o755)
    cfg = write_config(f"""
        [timeouts]
        pre_script_timeout = 0.5
        [[services]]
        name = "svc"
        command = "echo never"
        pre_script = "{pre}"
        restart = "no"
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait() == 1
    r.wait_for(r"svc: pre_script .* took longer than 0.5s; killed")


def test_stubborn_service_is_killed_after_its_timeout(run_entrypoint, write_config):
    cfg = write_config("""
        [timeouts]
        service_shutdown_timeout = 0.5
        [[services]]
        name = "stubborn"
        command = "sh"
        args = ["-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"]
    """)
    r = run_entrypoint("-c", cfg)
    r.wait_for(r"stubborn +\| ready")
    r.signal(signal.SIGTERM)
    assert r.wait() == 0
    r.wait_for(r"stubborn: did not stop within 0.5s of SIGTERM; sending SIGKILL")


def test_global_shutdown_timeout(run_entrypoint, write_config):
    cfg = write_config("""
        [timeouts]
        service_shutdown_timeout = 30
        global_shutdown_timeout = 1
        [[services]]
        name = "stubborn"
        command = "sh"
        args = ["-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"]
    """)
    r = run_entrypoint("-c", cfg)
    r.wait_for(r"stubborn +\| ready")
    r.signal(signal.SIGTERM)
    assert r.wait(10) == 1
    r.wait_for(r"longer than 1s \(global_shutdown_timeout\)")


def test_http_healthcheck_and_restart_when_unhealthy(run_entrypoint, write_config, tmp_path):
    flag = tmp_path / "healthy"
    port = free_port()
    cfg = write_config(f"""
        [[services]]
        name = "web"
        command = "python3"
        args = ["-u", "-c", '''
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if os.path.exists("{flag}") else 503)
        self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer.allow_reuse_address = True
srv = http.server.HTTPServer(("127.0.0.1", {port}), H)
print("serving")
srv.serve_forever()
''']
        healthcheck = {{ http = "http://127.0.0.1:{port}/health", interval = 0.2, retries = 2, start_period = 10, on_unhealthy = "restart" }}
        restart_delay = 0.1
    """)
    flag.write_text("ok")
    r = run_entrypoint("-c", cfg)
    r.wait_for(r"web: healthy")
    flag.unlink()
    r.wait_for(r"web: unhealthy after 2 failed checks: HTTP 503")
    r.wait_for(r"web: restarting in 0.1s")
    flag.write_text("ok")
    r.wait_for(r"web: healthy", timeout=15, count=2)
    r.signal(signal.SIGTERM)
    assert r.wait() == 0
    assert service_lines(r, "web").count("serving") == 2


def test_http_probe_gates_cmd(run_entrypoint, write_config, tmp_path):
    port = free_port()
    cfg = write_config(f"""
        [[services]]
        name = "web"
        command = "python3"
        args = ["-u", "-c", "import time; time.sleep(0.5); import http.server as h; h.test(HandlerClass=h.SimpleHTTPRequestHandler, port={port}, bind='127.0.0.1')"]
        directory = "{tmp_path}"
        healthcheck = {{ http = "http://127.0.0.1:{port}/", interval = 0.2 }}
    """)
    r = run_entrypoint("-c", cfg, "--", "python3", "-c",
                       f"import urllib.request as u; print('cmd got', u.urlopen('http://127.0.0.1:{port}/').status)")
    assert r.wait() == 0
    assert "cmd got 200" in r.lines


def test_disabled_service_is_not_started(run_entrypoint, write_config):
    cfg = write_config("""
        [[services]]
        name = "on"
        command = "echo on"
        oneshot = true
        [[services]]
        name = "off"
        command = "echo off"
        enabled = false
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait() == 0
    assert service_lines(r, "off") == []
    assert service_lines(r, "on") == ["on"]


def test_env_interpolation_and_env_file(run_entrypoint, write_config, tmp_path):
    (tmp_path / "app.env").write_text("FROM_FILE=file-value\nOVERRIDDEN=from-file\n")
    cfg = write_config("""
        [[services]]
        name = "envy"
        command = "sh"
        args = ["-c", "echo $$FROM_FILE $$OVERRIDDEN $$GREETING"]
        oneshot = true
        env_file = "app.env"
        env = { OVERRIDDEN = "from-env", GREETING = "${WHO:-nobody} says ${WORD}" }
    """)
    r = run_entrypoint("-c", cfg, env=__import__("conftest").entrypoint_env(WORD="hello"))
    assert r.wait() == 0
    assert service_lines(r, "envy") == ["file-value from-env nobody says hello"]


def test_post_script_runs_after_a_shutdown_stop(run_entrypoint, write_config, tmp_path):
    post = tmp_path / "post.sh"
    post.write_text("#!/bin/sh\nsleep 0.3\necho cleaned up\n")
    post.chmod(0o755)
    cfg = write_config(f"""
        [[services]]
        name = "svc"
        command = "sh"
        args = ["-c", "echo up; exec sleep 60"]
        post_script = "{post}"
    """)
    r = run_entrypoint("-c", cfg)
    r.wait_for(r"svc +\| up")
    r.signal(signal.SIGTERM)
    assert r.wait() == 0
    assert service_lines(r, "svc") == ["up", "cleaned up"]
    assert r.lines.index(next(l for l in r.lines if "cleaned up" in l)) < \
        r.lines.index(next(l for l in r.lines if "svc stopped" in l))
