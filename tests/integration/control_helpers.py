"""Helpers for the control-socket tests: a runner on its own socket, and the client CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

from conftest import PYTHON, entrypoint_env, wait_until


def ctl_env(sock: str, **extra: str) -> dict[str, str]:
    return entrypoint_env(ENTRYPOINT_SOCKET=sock, ENTRYPOINT_NO_INSTALL="1", **extra)


def ctl(sock: str, *args: str, timeout: float = 30.0, env: dict | None = None,
        prefix: list[str] | None = None, python: str = PYTHON) -> subprocess.CompletedProcess:
    """Run `entrypoint ARGS` (the client) against the runner at `sock`."""
    return subprocess.run([*(prefix or []), python, "-m", "entrypoint", *args],
                          env=env or ctl_env(sock), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def services(sock: str) -> dict[str, dict]:
    """name -> snapshot, from `list --json`."""
    done = ctl(sock, "list", "--json")
    assert done.returncode == 0, done.stderr
    return {s["name"]: s for s in json.loads(done.stdout)}


def wait_states(sock: str, timeout: float = 15.0, **wanted: str) -> dict[str, dict]:
    """Wait until each named service is in the wanted state; return the snapshots."""
    last: dict = {}

    def ready():
        nonlocal last
        try:
            last = services(sock)
        except AssertionError:
            return None
        return last if all(name in last and last[name]["state"] == state
                           for name, state in wanted.items()) else None

    try:
        return wait_until(ready, timeout, 0.1, what=f"states {wanted}")
    except AssertionError:
        raise AssertionError(f"states {wanted} not reached; last: "
                             f"{ {n: s['state'] for n, s in last.items()} }") from None


def start_runner(run_entrypoint, config: str, sock: str, *extra: str, env=None, **states: str):
    """A runner on `sock`, once the socket answers (and `states` hold, when given)."""
    runner = run_entrypoint("-c", config, "--socket", sock, *extra, env=env or ctl_env(sock))
    wait_until(lambda: os.path.exists(sock) or runner.proc.poll() is not None, 15,
               what="the control socket")
    assert runner.proc.poll() is None, f"runner exited:\n{runner.output}\n{runner.stderr}"
    if states:
        wait_states(sock, **states)
    return runner


def raw_exchange(sock: str, data: bytes, *, pause: float = 0.0, timeout: float = 15.0) -> bytes:
    """Send raw bytes (then optionally wait), and read until the runner closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock)
        if data:
            s.sendall(data)
        if pause:
            time.sleep(pause)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def replies(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]
