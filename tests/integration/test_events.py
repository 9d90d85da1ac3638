"""CONTRACT §9 on a real runner: `events`, `wait`, and CPU and memory per process group."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from conftest import PYTHON, wait_until
from control_helpers import ctl, ctl_env, services, start_runner, wait_states

pytestmark = pytest.mark.timeout(60)

STACK = """
    [timeouts]
    service_shutdown_timeout = 3
    [[services]]
    name = "web"
    command = "sh"
    args = ["-c", "exec sleep 1000"]
    [[services]]
    name = "slowinit"
    command = "sh"
    args = ["-c", "sleep 1.5; echo initialised"]
    oneshot = true
    [[services]]
    name = "broken"
    command = "sh"
    args = ["-c", "sleep 1; exit 3"]
    restart = "no"
    [[services]]
    name = "burner"
    command = "sh"
    # The group leader sleeps; its two children do the work: only a sum over the
    # process group shows the CPU and memory.
    args = ["-c", "(while :; do :; done) & (while :; do :; done) & exec sleep 1000"]
"""


@pytest.fixture
def stack(run_entrypoint, write_config, sock):
    return start_runner(run_entrypoint, write_config(STACK), sock, web="RUNNING")


class EventsReader:
    """`entrypoint events --json` in the background, its lines collected."""

    def __init__(self, sock: str, *names: str):
        self.proc = subprocess.Popen([PYTHON, "-m", "entrypoint", "events", "--json", *names],
                                     env=ctl_env(sock), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.events: list[dict] = []
        self._buffer = ""

    def poll(self) -> list[dict]:
        try:
            chunk = self.proc.stdout.read()
        except (TypeError, BlockingIOError):
            chunk = None
        if chunk:
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split("\n")
            self.events += [json.loads(line) for line in lines if line]
        return self.events

    def wait_for(self, predicate, timeout: float = 15.0, what: str = "event") -> dict:
        def found():
            return next((e for e in self.poll() if predicate(e)), None)
        return wait_until(found, timeout, 0.02, what=what)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def events_reader():
    readers: list[EventsReader] = []

    def start(sock: str, *names: str) -> EventsReader:
        reader = EventsReader(sock, *names)
        readers.append(reader)
        return reader

    yield start
    for reader in readers:
        reader.close()


def test_events_snapshot_then_every_change(stack, sock, events_reader):
    reader = events_reader(sock, "web")
    first = reader.wait_for(lambda e: e["service"] == "web", what="web's snapshot")
    assert set(first) >= {"time", "service", "state", "health", "pid", "exit", "reason"}
    assert first["state"] == "RUNNING" and first["pid"] == services(sock)["web"]["pid"]
    old_pid = first["pid"]
    assert ctl(sock, "restart", "web").returncode == 0
    running = reader.wait_for(lambda e: e["state"] == "RUNNING" and e["pid"] != old_pid,
                              what="web RUNNING again")
    states = [e["state"] for e in reader.events]
    assert states.index("STOPPING") < states.index("STOPPED") < len(states) - 1
    assert running["pid"] == services(sock)["web"]["pid"]
    assert {e["service"] for e in reader.events} == {"web"}      # the NAME filter


def test_events_end_when_the_runner_exits(stack, sock, events_reader):
    reader = events_reader(sock)
    reader.wait_for(lambda e: e["service"] == "burner", what="the snapshot")
    stack.signal(15)
    reader.wait_for(lambda e: e["service"] == "web" and e["state"] == "STOPPED",
                    what="web stopping at shutdown")
    assert reader.proc.wait(15) == 0


def test_wait_returns_once_ready(stack, sock):
    began = time.monotonic()
    done = ctl(sock, "wait", "slowinit", "web", "--timeout", "20")
    assert done.returncode == 0, done.stderr
    assert services(sock)["slowinit"]["state"] == "COMPLETED"
    assert time.monotonic() - began < 10


def test_a_completed_oneshot_has_started(stack, sock):
    wait_states(sock, slowinit="COMPLETED")
    done = ctl(sock, "wait", "slowinit", "--for", "started", "--timeout", "5")
    assert done.returncode == 0, done.stderr
    done = ctl(sock, "wait", "slowinit", "--for", "healthy", "--timeout", "5")
    assert done.returncode == 1 and "COMPLETED" in done.stderr


def test_wait_fails_as_soon_as_a_service_fails(stack, sock):
    began = time.monotonic()
    done = ctl(sock, "wait", "web", "broken", "--for", "completed", "--timeout", "30")
    assert done.returncode == 1
    assert "web" in done.stderr or "broken" in done.stderr
    # web never completes (a long-running service): the wait ends on the first failure
    # it can see, not at the timeout.
    assert time.monotonic() - began < 20


def test_wait_names_the_failed_service(stack, sock):
    wait_states(sock, broken="FAILED")
    done = ctl(sock, "wait", "broken", "--timeout", "30")    # it started once: not enough
    assert done.returncode == 1
    assert "broken" in done.stderr and "FAILED" in done.stderr


def test_wait_times_out_naming_what_is_missing(stack, sock):
    began = time.monotonic()
    done = ctl(sock, "wait", "web", "--for", "healthy", "--timeout", "0.5")
    assert done.returncode == 1
    assert "timed out" in done.stderr and "web" in done.stderr
    assert time.monotonic() - began < 8


def test_wait_rejects_unknown_names_and_bad_timeouts(stack, sock):
    done = ctl(sock, "wait", "nope")
    assert done.returncode == 1 and 'unknown service "nope"' in done.stderr
    done = ctl(sock, "wait", "web", "--timeout", "soon")
    assert done.returncode == 2 and "Traceback" not in done.stderr


def _group_usage(pgid: int) -> tuple[float, int]:
    ticks, pages = 0, 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                ticks += int(fields[11]) + int(fields[12])
                pages += int(fields[21])
    return ticks / os.sysconf("SC_CLK_TCK"), pages * os.sysconf("SC_PAGE_SIZE")


def test_cpu_and_memory_are_summed_over_the_process_group(stack, sock):
    wait_until(lambda: (services(sock)["burner"].get("cpu_seconds") or 0) > 0.5, 15,
               what="burner using CPU")
    burner = services(sock)["burner"]
    cpu, rss = _group_usage(burner["pid"])
    assert burner["cpu_seconds"] <= cpu + 0.5 and burner["cpu_seconds"] > 0.5
    assert burner["cpu_percent"] > 20      # two busy children, whatever the leader does
    assert 0.5 * rss <= burner["rss_bytes"] <= 2 * rss
    web = services(sock)["web"]
    assert web["cpu_percent"] < 20 and web["rss_bytes"] > 0
    stopped = services(sock)["slowinit"]
    if stopped["pid"] is None:
        assert stopped["rss_bytes"] is None and stopped["cpu_percent"] is None


def test_list_wide_and_status_show_resources(stack, sock):
    wait_until(lambda: (services(sock)["burner"].get("cpu_seconds") or 0) > 0.2, 15,
               what="burner using CPU")
    wide = ctl(sock, "list", "--wide")
    assert wide.returncode == 0
    header, *rows = wide.stdout.splitlines()
    assert header.split()[-4:] == ["CPU", "CPU", "TIME", "MEM"]
    burner = next(r for r in rows if r.startswith("burner"))
    assert "%" in burner and burner.rstrip().endswith(("K", "M", "G"))
    assert "CPU" not in ctl(sock, "list").stdout
    status = ctl(sock, "status", "burner")
    assert "resources:" in status.stdout and "process group" in status.stdout


def test_a_reader_that_never_reads_does_not_slow_the_runner(stack, sock):
    """An `events` peer that stops reading: the runner keeps answering and acting."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(sock)
        stuck.sendall(b'{"v":1,"op":"events","args":{}}\n')
        first = json.loads(stuck.makefile("rb").readline())
        assert first["ok"] and "web" in {e["service"] for e in first["result"]["services"]}
        # ...and from here on it reads nothing, while changes pile up for it.
        for _ in range(3):
            began = time.monotonic()
            assert ctl(sock, "restart", "web").returncode == 0
            assert time.monotonic() - began < 10
        began = time.monotonic()
        assert ctl(sock, "list").returncode == 0
        assert time.monotonic() - began < 3


def test_events_for_people(stack, sock):
    pid = services(sock)["web"]["pid"]
    proc = subprocess.Popen([PYTHON, "-m", "entrypoint", "events", "web"], env=ctl_env(sock),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.split()[1:4] == ["web", "RUNNING", "pid"] and first.split()[4] == str(pid)
    finally:
        proc.kill()
        proc.wait(5)
