"""A runner whose stdout is a pipe nobody reads (or reads late): the loop never blocks.

Regressions (issue 7): the runner wrote fd 1 with blocking writes, so with a stalled
reader it ignored SIGTERM for more than 8 s with global_shutdown_timeout = 5, `entrypoint
list` took over 3 s, and under a slow reader four flooding services lost and cut lines.
Here the runner's stdout is a real pipe whose read end the test holds and reads only when
it decides to; every process is found by a token in its environment and killed by pid.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import struct
import subprocess
import termios
import threading
import time

import pytest

from conftest import PYTHON, wait_until
from control_helpers import ctl

pytestmark = pytest.mark.timeout(90)


class StalledRunner:
    """`entrypoint -c CONFIG` with stdout a pipe the test reads only when told to."""

    def __init__(self, env: dict, config: str, sock: str, prefix: list[str]):
        self.proc = subprocess.Popen([*prefix, PYTHON, "-m", "entrypoint", "-c", config,
                                      "--socket", sock],
                                     env={**env, "ENTRYPOINT_SOCKET": sock},
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.pid = self.proc.pid
        self.out = self.proc.stdout.fileno()
        self.err: list[bytes] = []
        self._err_thread = threading.Thread(target=self._read_err, daemon=True)
        self._err_thread.start()

    def _read_err(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            self.err.append(line)

    @property
    def stderr(self) -> str:
        return b"".join(self.err).decode("utf-8", "replace")

    def unread(self) -> int:
        """Bytes waiting in the stdout pipe (a full 64 KiB pipe may hold less: pages of
        blocks of different sizes are not packed)."""
        return struct.unpack("i", fcntl.ioctl(self.out, termios.FIONREAD, b"\0" * 4))[0]

    def read_all(self, timeout: float) -> bytes:
        """Read stdout until EOF (the runner and its private copy of it closed)."""
        chunks = []
        deadline = time.monotonic() + timeout
        os.set_blocking(self.out, False)
        while time.monotonic() < deadline:
            try:
                chunk = os.read(self.out, 1 << 16)
            except BlockingIOError:
                time.sleep(0.005)
                continue
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
        raise AssertionError(f"stdout not closed within {timeout}s")

    def kill(self) -> None:
        try:
            os.killpg(self.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.proc.stdout.close()
        self._err_thread.join(5)
        self.proc.stderr.close()


@pytest.fixture
def stalled(tagged, tmp_path):
    """Start StalledRunners; the `tagged` fixture kills every process they started."""
    runners: list[StalledRunner] = []

    def start(config_text: str, prefix: list[str] = ()) -> StalledRunner:
        config = tmp_path / "services.toml"
        config.write_text(config_text)
        runner = StalledRunner(tagged, str(config), str(tmp_path / "ctl.sock"), list(prefix))
        runners.append(runner)
        wait_until(lambda: os.path.exists(tmp_path / "ctl.sock") or runner.proc.poll() is not None,
                   15, what="the control socket")
        assert runner.proc.poll() is None, runner.stderr
        return runner

    yield start
    for runner in runners:
        runner.kill()


UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]


def _can_unshare() -> bool:
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


FLOOD = """
[timeouts]
global_shutdown_timeout = 5
service_shutdown_timeout = 3

[[services]]
name = "flood"
command = "yes"
args = ["a line of output, over and over, that nobody reads"]

[[services]]
name = "pipes"
command = "yes"
args = ["another line of output on plain pipes"]
tty = false
"""


@pytest.mark.parametrize("pid1", [False, True], ids=["subreaper", "pid1"])
def test_sigterm_ends_the_run_in_time_with_a_stalled_stdout(stalled, pid1):
    if pid1 and not _can_unshare():
        pytest.skip("cannot create a PID namespace here")
    runner = stalled(FLOOD, UNSHARE if pid1 else ())
    wait_until(lambda: runner.unread() >= 32_768, 15, what="the stdout pipe filling up")
    time.sleep(0.5)     # the runner now has much more queued than the pipe holds
    target = runner.pid
    if pid1:            # the runner is the only child of `unshare`, PID 1 inside
        target = wait_until(lambda: (_children(runner.pid) or [None])[0], 10, what="PID 1")
    began = time.monotonic()
    os.kill(target, 15)
    try:
        runner.proc.wait(5 + 3)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the runner ignored SIGTERM for {time.monotonic() - began:.1f}s "
                             f"with global_shutdown_timeout = 5") from None
    assert runner.proc.returncode == 0
    runner._err_thread.join(5)
    assert re.search(r"entrypoint: \d+ line\(s\) of output dropped: stdout was not read",
                     runner.stderr), runner.stderr


def test_list_answers_fast_with_a_stalled_stdout(stalled, tmp_path):
    runner = stalled(FLOOD)
    wait_until(lambda: runner.unread() >= 32_768, 15, what="the stdout pipe filling up")
    for _ in range(3):
        began = time.monotonic()
        done = ctl(str(tmp_path / "ctl.sock"), "list", timeout=20)
        took = time.monotonic() - began
        assert done.returncode == 0, done.stderr
        assert re.search(r"flood +RUNNING", done.stdout) and re.search(r"pipes +RUNNING",
                                                                      done.stdout)
        assert took < 1.0, f"`entrypoint list` took {took:.2f}s"
    runner_info = _request(str(tmp_path / "ctl.sock"), b'{"v": 1, "op": "list"}\n')["runner"]
    assert runner_info["stdout_waiting"] > 0 and runner_info["stdout_dropped"] == 0


def _request(sock: str, line: bytes) -> dict:
    """One request on the control socket; its (first) reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(sock)
        s.sendall(line)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            assert chunk, "the runner closed the connection without answering"
            data += chunk
    reply = json.loads(data.split(b"\n")[0])
    assert reply["ok"], reply
    return reply["result"] if "result" in reply else reply


NUMBERED = """
[[services]]
name = "{name}"
command = "{python}"
args = ["-c", "import sys\\nfor i in range({n}): sys.stdout.write('{name} %06d ' % i + 'y' * (i % 150) + '\\\\n')"]
tty = {tty}
oneshot = true
"""


def test_a_reader_that_resumes_gets_every_line_whole_and_in_order(stalled):
    n = 40_000      # ~4 MB per service: far more than pipes, PTYs and the queue hold
    names = {"pty1": "true", "pty2": "true", "pipe1": "false", "pipe2": "false"}
    runner = stalled("".join(NUMBERED.format(name=name, python=PYTHON, n=n, tty=tty)
                             for name, tty in names.items()))
    wait_until(lambda: runner.unread() >= 32_768, 15, what="the stdout pipe filling up")
    time.sleep(3)       # a reader that stalls for a while ...
    slow_until = time.monotonic() + 2
    chunks = []
    while time.monotonic() < slow_until:     # ... then reads slowly, then at full speed
        chunks.append(os.read(runner.out, 4096))
        time.sleep(0.01)
    chunks.append(runner.read_all(60))
    assert runner.proc.wait(10) == 0
    lines = b"".join(chunks).decode().split("\n")
    assert lines.pop() == ""
    seen = dict.fromkeys(names, 0)
    pattern = re.compile(r"(\w+) +\| (\w+) (\d{6}) (y*)")
    for line in lines:
        if line.startswith("entrypoint "):
            continue
        m = pattern.fullmatch(line)
        assert m and m[1] == m[2], f"a cut or mixed line: {line[:200]!r}"
        name, i = m[1], int(m[3])
        assert i == seen[name], f"{name}: line {seen[name]} missing, got {i}"
        assert len(m[4]) == i % 150, f"{name}: line {i} cut"
        seen[name] += 1
    assert seen == dict.fromkeys(names, n)
    runner._err_thread.join(5)
    assert "dropped" not in runner.stderr
