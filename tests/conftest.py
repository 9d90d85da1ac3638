"""Shared helpers: run the real `entrypoint` CLI on real processes, bounded and cleaned up.

`Runner` starts `python -m entrypoint ...` in its own process group with stdout and stderr
piped, collects both in a background thread, and offers `wait_for(pattern)` and
`wait(timeout)`. Every runner is killed by its process group at the end of the test, and
every process the test left behind (the services of a runner killed mid-test lead sessions
of their own) is killed by pid: see `kill_leftover_processes`.
"""

from __future__ import annotations

import atexit
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def _become_subreaper() -> None:
    """Orphans of our descendants come back to this test process instead of init: when a
    test kills a runner (or fails before it stops), its services are re-parented here, so
    teardown can find every one of them by pid and kill it."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


_become_subreaper()


def children_of(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return found


def descendants_of(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        kids = children_of(frontier.pop())
        found += kids
        frontier += kids
    return found


@pytest.fixture(autouse=True)
def kill_leftover_processes():
    """After every test, pass or fail: SIGKILL each process below this one that the test
    started (found by pid through /proc/<pid>/task/*/children, orphans included thanks to
    the subreaper), then reap the orphans that became our children."""
    before = set(descendants_of(os.getpid()))
    yield
    me = os.getpid()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [p for p in descendants_of(me) if p not in before and pid_alive(p)]
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.02)
    # Reap the test's leftovers that are now our children (orphans that were re-parented
    # to us, dead by our SIGKILL or by themselves): the test is over, no Popen of it waits.
    for pid in children_of(me):
        if pid not in before and not pid_alive(pid):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


_SOCKET_DIR = tempfile.mkdtemp(prefix="ep-test-sockets-")
atexit.register(shutil.rmtree, _SOCKET_DIR, True)
_socket_numbers = itertools.count()


def entrypoint_env(**extra: str) -> dict[str, str]:
    """The environment for a test's runner: this checkout importable, no colour, and a
    control socket of its own (runners of parallel sessions never meet on /run)."""
    env = dict(os.environ)
    # No empty entry: an empty PYTHONPATH entry means the current directory.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("FORCE_COLOR", None)
    env["NO_COLOR"] = "1"
    env.pop("ENTRYPOINT_CONFIG", None)
    env["ENTRYPOINT_SOCKET"] = os.path.join(_SOCKET_DIR, f"{next(_socket_numbers)}.sock")
    env["ENTRYPOINT_NO_INSTALL"] = "1"
    env.update(extra)
    return env


class Runner:
    """One running `entrypoint` process and everything it printed."""

    def __init__(self, args: list[str], *, cwd=None, env=None, prefix: list[str] | None = None,
                 stdin=subprocess.DEVNULL):
        self.argv = [*(prefix or []), PYTHON, "-m", "entrypoint", *args]
        self.proc = subprocess.Popen(self.argv, cwd=cwd, env=env or entrypoint_env(),
                                     stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self._lines: list[str] = []
        self._err: list[str] = []
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self._lines),
                                          daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self._err),
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, pipe, sink: list[str]) -> None:
        for raw in iter(pipe.readline, b""):
            with self._cond:
                sink.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    @property
    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self._err)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 15.0, count: int = 1) -> re.Match:
        """Wait until `count` stdout lines match `pattern` (a regex); return the last match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    m = regex.search(line)
                    if m:
                        count -= 1
                        if count <= 0:
                            return m
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not any(
                        t.is_alive() for t in self._threads)):
                    raise AssertionError(f"no line matching {pattern!r} within {timeout}s; "
                                         f"output:\n{self.output}\nstderr:\n{self.stderr}")
                self._cond.wait(min(left, 0.1))

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 20.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"entrypoint still running after {timeout}s; output:\n"
                                 f"{self.output}\nstderr:\n{self.stderr}") from None
        for t in self._threads:
            t.join(5)
        return code

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def run_entrypoint():
    """Start real runners; every one is killed (by process group) after the test."""
    started: list[Runner] = []

    def start(*args: str, **kwargs) -> Runner:
        runner = Runner(list(args), **kwargs)
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.kill()


@pytest.fixture
def write_config(tmp_path):
    """Write a services.toml (dedented) into tmp_path and return its path as str."""

    def write(text: str, name: str = "services.toml") -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s")


def index_of(lines: list[str], pattern: str) -> int:
    """The index of the first line matching `pattern` (a regex); fails the test if none."""
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            return i
    raise AssertionError(f"{pattern!r} not in output:\n" + "\n".join(lines))


def service_lines(runner: Runner, name: str) -> list[str]:
    """The lines a service printed, without the `name | ` prefix."""
    out = []
    for line in runner.lines:
        head, sep, rest = line.partition(" | ")
        if sep and head.strip() == name:
            out.append(rest)
    return out


def tagged_pids(token: str) -> list[int]:
    """Every process (but this one) whose environment carries EP_TEST_TOKEN=token."""
    needle = f"EP_TEST_TOKEN={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.fixture
def tagged():
    """An environment for run_entrypoint whose processes are all SIGKILLed at teardown,
    found by a token in their environment (escaped daemons and namespaces included)."""
    import uuid

    token = uuid.uuid4().hex
    yield entrypoint_env(EP_TEST_TOKEN=token)
    for _ in range(50):
        pids = tagged_pids(token)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)



@pytest.fixture
def sock(tmp_path):
    """The control socket of the test's runner: its own, in the test's temp dir."""
    return str(tmp_path / "ctl.sock")
