"""Bad input to the HTTP face (issue 9): slow clients, a thousand idle event streams,
garbage requests. A clear status, no traceback in any log, the services never affected."""

from __future__ import annotations

import resource
import socket
import time

import pytest

from control_helpers import ctl, services
from web_helpers import SSE, http, needs_web, web_stack

pytestmark = [pytest.mark.timeout(120), needs_web]

APP = """
[timeouts]
service_shutdown_timeout = 3
[[services]]
name = "app"
command = "sh"
args = ["-c", "exec sleep 1000"]
"""


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_slow_and_garbage_clients_do_not_stop_others(run_entrypoint, write_config, sock):
    runner, base = web_stack(run_entrypoint, write_config, sock, APP)
    app_pid = services(sock)["app"]["pid"]
    stalled = []
    try:
        for _ in range(20):          # half a request line each, then nothing
            s = _connect(base)
            s.sendall(b"GET /api/v1/serv")
            stalled.append(s)
        garbage = _connect(base)
        garbage.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n")
        answer = garbage.recv(4096)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400")
        garbage.close()
        huge_header = _connect(base)
        huge_header.sendall(b"GET /api/v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                            + b"a" * 100_000 + b"\r\n\r\n")
        reply = huge_header.recv(4096)
        # Answered or refused with a status, never left hanging nor crashing the server.
        assert reply == b"" or reply.split(b" ")[1] in (b"200", b"400", b"431", b"413")
        huge_header.close()
        began = time.monotonic()
        assert http(base, "/api/v1/services").status == 200
        assert time.monotonic() - began < 3
    finally:
        for s in stalled:
            s.close()
    assert services(sock)["app"]["pid"] == app_pid
    assert "Traceback" not in runner.output + runner.stderr


def test_a_thousand_idle_event_streams(run_entrypoint, write_config, sock):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2200:
        pytest.skip(f"needs 2200 open files (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2200), hard))  # the runner inherits
    try:
        runner, base = web_stack(run_entrypoint, write_config, sock, APP)
        idle = []
        try:
            host, port = base.removeprefix("http://").split(":")
            for _ in range(1000):
                s = socket.create_connection((host, int(port)), timeout=10)
                s.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                idle.append(s)
            for s in idle[::50]:     # they are real streams, answered
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
            began = time.monotonic()
            assert http(base, "/api/v1/services").status == 200
            assert time.monotonic() - began < 5
            watcher = SSE(base, "/api/v1/events")
            try:
                watcher.read_until(lambda e: e["event"] == "snapshot")
                old = services(sock)["app"]["pid"]
                began = time.monotonic()
                assert ctl(sock, "restart", "app").returncode == 0
                assert time.monotonic() - began < 5      # the runner is not slowed
                watcher.read_until(lambda e: e["event"] == "state" and e["data"]["pid"] not in (None, old)
                                   and e["data"]["state"] == "RUNNING", timeout=10)
            finally:
                watcher.close()
        finally:
            for s in idle:
                s.close()
        assert http(base, "/api/v1/services").status == 200
        assert "Traceback" not in runner.output + runner.stderr
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
