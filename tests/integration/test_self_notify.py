"""CONTRACT §12, entrypoint as a notify client: a test-side socket stands in for systemd."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import PYTHON, wait_until
from control_helpers import ctl, ctl_env, services, start_runner, wait_states

pytestmark = pytest.mark.timeout(60)


class FakeSystemd:
    """A datagram socket with SO_PASSCRED: each message with its sender's pid."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._open = True
        # Read all the time, as systemd does: the runner's sends never block, so a queue
        # left full would lose its datagrams.
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while self._open:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (socket.timeout, OSError):
                continue
            pid = next(struct.unpack("3i", d[:12])[0] for lvl, kind, d in anc
                       if kind == socket.SCM_CREDENTIALS)
            with self._lock:
                self.messages.append((pid, data.decode()))

    def receive_until(self, predicate, timeout: float = 15.0) -> list[tuple[int, str]]:
        wait_until(lambda: predicate(self.snapshot()), timeout, 0.01,
                   what=f"a message ({self.snapshot()[-5:]})")
        return self.snapshot()

    def snapshot(self) -> list[tuple[int, str]]:
        with self._lock:
            return list(self.messages)

    def texts(self) -> list[str]:
        return [text for _, text in self.snapshot()]

    def close(self):
        self._open = False
        self._thread.join(5)
        self.sock.close()


def has(key: str):
    return lambda messages: any(key in text.split("\n") for _, text in messages)


def test_ready_status_watchdog_reload_stopping(run_entrypoint, write_config, tmp_path):
    sock = str(tmp_path / "ctl.sock")
    systemd = FakeSystemd(str(tmp_path / "systemd-notify.sock"))
    go = tmp_path / "go"
    config = write_config(f"""
        [timeouts]
        service_shutdown_timeout = 2
        [[services]]
        name = "db"
        command = "sh"
        args = ["-c", "while [ ! -e {go} ]; do sleep 0.05; done; {PYTHON} -m entrypoint notify --ready; exec sleep 1000"]
        ready = "notify"
        [[services]]
        name = "plain"
        command = "sh"
        args = ["-c", "echo plain sees NOTIFY_SOCKET=$${{NOTIFY_SOCKET:-none}} WATCHDOG_USEC=$${{WATCHDOG_USEC:-none}}; exec sleep 1000"]
    """)
    env = ctl_env(sock, NOTIFY_SOCKET=systemd.sock.getsockname(), WATCHDOG_USEC="400000")
    try:
        runner = start_runner(run_entrypoint, config, sock, env=env, db="STARTING")
        systemd.receive_until(has("WATCHDOG=1"))
        systemd.receive_until(lambda m: any("STATUS=1 of 2 services ready" in t for _, t in m))
        assert not has("READY=1")(systemd.snapshot())       # db is not ready yet
        go.touch()
        systemd.receive_until(has("READY=1"))
        ready = next(t for _, t in systemd.snapshot() if "READY=1" in t.split("\n"))
        assert "STATUS=2 of 2 services ready" in ready
        assert {pid for pid, _ in systemd.snapshot()} == {runner.pid}   # from the runner itself
        # WATCHDOG=1 every WATCHDOG_USEC/2 = 0.2 s: several within a second.
        before = systemd.texts().count("WATCHDOG=1")
        began = time.monotonic()
        systemd.receive_until(lambda m: [t for _, t in m].count("WATCHDOG=1") >= before + 4)
        assert time.monotonic() - began < 2.0
        runner.wait_for(r"plain\s+\| plain sees NOTIFY_SOCKET=none WATCHDOG_USEC=none")

        done = ctl(sock, "reload")
        assert done.returncode == 0, done.stderr
        systemd.receive_until(has("RELOADING=1"))
        at = next(i for i, t in enumerate(systemd.texts()) if "RELOADING=1" in t.split("\n"))
        assert "MONOTONIC_USEC=" in systemd.texts()[at]
        systemd.receive_until(lambda m: any("READY=1" in t.split("\n") for _, t in m[at + 1:]))

        runner.signal(signal.SIGTERM)
        systemd.receive_until(has("STOPPING=1"))
        assert runner.wait(20) == 0
    finally:
        systemd.close()
