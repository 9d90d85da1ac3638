"""Alerts on a real runner (CONTRACT §11): a command and a webhook, tested against a real
local HTTP server (a subprocess) that records what it received; a webhook that hangs or
refuses changes nothing for the services."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import wait_until
from control_helpers import ctl, services, start_runner

pytestmark = pytest.mark.timeout(60)

RECORDER = r"""
import http.server, sys
log = open(sys.argv[1], "a")
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        log.write(body.decode() + "\n"); log.flush()
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture
def recorder(tmp_path):
    """A real HTTP server in a subprocess; yields (url, received): POSTed JSON bodies."""
    path = tmp_path / "received.jsonl"
    path.touch()
    proc = subprocess.Popen([sys.executable, "-c", RECORDER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        port = int(proc.stdout.readline())

        def received() -> list[dict]:
            return [json.loads(line) for line in path.read_text().splitlines() if line]

        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def test_command_and_webhook_on_failed_and_job_failed(run_entrypoint, write_config, sock,
                                                      recorder, tmp_path):
    url, received = recorder
    said = tmp_path / "said"
    config = write_config(f"""
        [alerts]
        on = ["failed", "job_failed"]
        webhook = "{url}"
        command = ["sh", "-c", "echo $ENTRYPOINT_EVENT $ENTRYPOINT_SERVICE $ENTRYPOINT_EXIT \\"$ENTRYPOINT_LAST_LINES\\" >> {said}"]
        [[services]]
        name = "crasher"
        command = "sh"
        args = ["-c", "echo about to fail; exit 7"]
        restart = "no"
        [[services]]
        name = "nightly"
        command = "sh"
        args = ["-c", "echo backup broken; exit 4"]
        schedule = "@daily"
        run_on_start = true
        [[services]]
        name = "steady"
        command = "sleep 1000"
    """)
    start_runner(run_entrypoint, config, sock, crasher="FAILED", steady="RUNNING")
    wait_until(lambda: len(received()) == 2, 20, what="two webhook posts")
    by_event = {r["event"]: r for r in received()}
    failed = by_event["failed"]
    assert failed["service"] == "crasher" and failed["exit"] == 7
    assert "about to fail" in failed["last_lines"] and "crasher" in failed["text"]
    assert abs(failed["time"] - time.time()) < 30
    job = by_event["job_failed"]
    assert job["service"] == "nightly" and job["exit"] == 4 and "backup broken" in job["last_lines"]
    wait_until(lambda: said.exists() and len(said.read_text().splitlines()) == 2, 10,
               what="two alert commands")
    lines = sorted(said.read_text().splitlines())
    assert lines == ["failed crasher 7 about to fail", "job_failed nightly 4 backup broken"]


def test_gave_up_and_events_not_asked_for(run_entrypoint, write_config, sock, recorder):
    url, received = recorder
    config = write_config(f"""
        [alerts]
        on = ["gave_up"]
        webhook = "{url}"
        [[services]]
        name = "looper"
        command = "sh"
        args = ["-c", "exit 1"]
        restart_delay = 0.05
        restart_delay_max = 0.05
        restart_limit = 2
        [[services]]
        name = "other"
        command = "sh"
        args = ["-c", "exit 2"]
        restart = "no"
        [[services]]
        name = "steady"
        command = "sleep 1000"
    """)
    start_runner(run_entrypoint, config, sock, looper="FAILED", other="FAILED")
    wait_until(lambda: received(), 20, what="the gave_up post")
    time.sleep(0.5)     # a second (unwanted) post would have come with the first
    assert [(r["event"], r["service"]) for r in received()] == [("gave_up", "looper")]


@pytest.mark.parametrize("kind", ["hangs", "refuses"])
def test_a_bad_webhook_changes_nothing_for_the_services(run_entrypoint, write_config, sock, kind):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if kind == "hangs":
        listener.listen(16)       # connections complete in the kernel; nobody ever answers
    else:
        listener.close()          # nothing listens: connection refused
    try:
        config = write_config(f"""
            [alerts]
            webhook = "http://127.0.0.1:{port}/hook"
            timeout = 1
            tries = 2
            [[services]]
            name = "flaky"
            command = "sh"
            args = ["-c", "exit 3"]
            every = "0.3s"
            [[services]]
            name = "steady"
            command = "sleep 1000"
        """)
        runner = start_runner(run_entrypoint, config, sock, steady="RUNNING")
        runner.wait_for(r"alert: \[job_failed\] flaky")
        began = time.monotonic()
        # The job keeps its schedule and the socket answers while the alerts wait.
        runner.wait_for(r"flaky: started \(pid", count=6, timeout=10)
        listed = ctl(sock, "list", "--json")
        assert listed.returncode == 0
        assert time.monotonic() - began < 5
        runner.wait_for(r"alert webhook http://127.0.0.1:\d+/hook: not delivered after 2 tries",
                        timeout=20)
        assert services(sock)["steady"]["state"] == "RUNNING"
        if kind == "hangs":     # a failing job every 0.3 s: the alerts in flight are bounded
            runner.wait_for(r"alert webhook dropped: 8 alerts are still running")
        runner.signal(15)
        assert runner.wait(20) == 0
    finally:
        listener.close()


def test_a_watchdog_kill_alerts(run_entrypoint, write_config, sock, recorder):
    url, received = recorder
    config = write_config(f"""
        [alerts]
        on = ["watchdog"]
        webhook = "{url}"
        [[services]]
        name = "sleepy"
        command = "sleep 1000"
        watchdog = "1s"
        restart = "no"
    """)
    start_runner(run_entrypoint, config, sock)
    wait_until(lambda: received(), 20, what="the watchdog post")
    post = received()[0]
    assert (post["event"], post["service"]) == ("watchdog", "sleepy")
