"""Helpers for the HTTP face's tests: a runner with `[web]`, and plain urllib requests."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from conftest import free_port, wait_until
from control_helpers import start_runner


def have_web() -> bool:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return False
    return True


needs_web = pytest.mark.skipif(not have_web(), reason="needs entrypoint[web] (starlette, uvicorn)")


class Reply:
    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self):
        return json.loads(self.body)


def http(base: str, path: str, method: str = "GET", *, body=None, headers=None,
         timeout: float = 15.0) -> Reply:
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.headers, exc.read())


def post_unread(base: str, path: str, body: bytes, content_type: str = "application/json",
                timeout: float = 15.0) -> tuple[int, bytes]:
    """POST `body` over a raw socket; (status, response bytes) even when the server answers
    and closes before reading it all (a 413), which breaks urllib's send with EPIPE."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            conn.sendall(head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass        # the answer came first: read it below
        reply = b""
        try:
            while chunk := conn.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0
    return status, reply


def answers(base: str) -> bool:
    try:
        return http(base, "/api/v1/whoami", timeout=2).status == 200
    except OSError:
        return False


def web_stack(run_entrypoint, write_config, sock: str, services: str, web: str = "",
              port: int | None = None, env=None):
    """A runner with `[web]` on a free loopback port; (runner, base URL) once it answers."""
    port = port or free_port()
    text = f'[web]\nlisten = "127.0.0.1:{port}"\n{web}\n{services}'
    runner = start_runner(run_entrypoint, write_config(text), sock, env=env)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(base) or runner.proc.poll() is not None, 20, 0.1,
               what="the web face answering")
    assert runner.proc.poll() is None, runner.output
    return runner, base


class SSE:
    """A raw Server-Sent Events reader over a socket (no client library in the way)."""

    def __init__(self, base: str, path: str, headers: dict | None = None):
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}"
                          f"Accept: text/event-stream\r\n\r\n".encode())
        self.buffer = b""
        self.events: list[dict] = []
        self.status = None

    def read_until(self, predicate, timeout: float = 10.0) -> dict:
        def step():
            found = next((e for e in self.events if predicate(e)), None)
            if found:
                return found
            self.sock.settimeout(0.2)
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, socket.timeout):
                return None
            if not chunk:
                raise AssertionError("the event stream closed")
            self.buffer += chunk
            self._parse()
            return next((e for e in self.events if predicate(e)), None)
        return wait_until(step, timeout, 0, what="an SSE event")

    def _parse(self) -> None:
        if self.status is None and b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.status = int(head.split()[1])
            self.chunked = b"chunked" in head.lower()
        if self.status is None:
            return
        assert self.chunked, "expected a chunked event stream"
        for block in self._dechunk().split("\n\n"):
            event = {"event": "message", "id": None, "data": None}
            for line in block.split("\n"):
                key, _, value = line.partition(": ")
                if key in ("event", "id", "data"):
                    event[key] = value
            if block and event["data"] is not None:
                event["data"] = json.loads(event["data"])
                self.events.append(event)

    def _dechunk(self) -> str:
        # Keep undecoded bytes in self.buffer; decoded text accumulates in self._text.
        text = getattr(self, "_text", "")
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n")
            if not sep:
                break
            size = int(head, 16)
            if len(rest) < size + 2:
                break
            text += rest[:size].decode()
            self.buffer = rest[size + 2:]
        *blocks, tail = text.split("\n\n")
        self._text = tail
        return "\n\n".join(blocks) + ("\n\n" if blocks else "") + ""

    def close(self) -> None:
        self.sock.close()
