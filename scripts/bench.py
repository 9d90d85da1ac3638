#!/usr/bin/env python3
"""Measure `entrypoint` against supervisord and honcho, and against the machine's limits.

    python3 scripts/bench.py            # full run: 5 rounds, 4 x 200,000 lines (~5 minutes)
    python3 scripts/bench.py --quick    # 1 round, 4 x 50,000 lines, 3 s idle (~1.5 minutes)
    python3 scripts/bench.py --readiness  # READY=1 to a dependent's start (scripts/bench_ready.py)
    python3 scripts/bench.py --web      # the HTTP face vs supervisord's XML-RPC (bench_web.py)
    python3 scripts/bench.py --jobs     # the job scheduler vs a bare cron-like loop (bench_jobs.py)

supervisord, honcho and matplotlib are installed into the benchmark's own virtualenv
(default ~/.cache/entrypoint-bench/venv, `--venv DIR`), with this checkout installed
editable beside them, so every runner uses the same Python. The script re-executes itself
inside that venv. It writes docs/benchmarks.md (table, method, machine, versions),
docs/benchmarks.png (bar charts) and docs/benchmarks.json (every sample).

Every process is real and every number comes from outside the runner: the benchmark
reads the runner's stdout through a pipe, counts lines as they arrive, and checks each
line afterwards. It is bounded in time (each trial has a deadline) and leaves nothing
running: it makes itself a child subreaper, so services orphaned by a runner come back to
it, and kills every descendant by pid after each trial and at exit.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "entrypoint-bench" / "venv"
PEERS = ["supervisor", "honcho", "matplotlib"]
LINE_PAD = 67                  # "s1 00000001 " + 67 x + "\n" = 80 bytes
PAYLOAD = rb"(?P<svc>s\d+) (?P<seq>\d{8}) x{%d}" % LINE_PAD
MARKER = b"alive-marker"
START_DELAY = 1.5              # producers all begin writing at launch + this
TOOLS = ("entrypoint", "relay", "supervisord", "honcho")
INIT_PEERS = {"tini": "/usr/bin/tini", "dumb-init": "/usr/bin/dumb-init"}   # Debian packages
HONCHO_LINES = 25_000
NO_SSL_ASYNCIO = "import sys, time; sys.modules['ssl'] = None; import asyncio"  # as the runner          # per service: honcho passes ~20,000 lines/s; a rate is a rate


# ----------------------------------------------------------------------------- the venv

def ensure_venv(venv: Path) -> Path:
    """The benchmark's venv with the peers, and this checkout installed as an image would
    have it (a regular, compiled install, re-done at every run so that it is current)."""
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    stamp = venv / ".bench-ready"
    if not stamp.exists():
        print(f"bench: preparing {venv} (supervisor, honcho, matplotlib)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([*pip, *PEERS, str(ROOT)], check=True)
        stamp.write_text("ok\n")
    print("bench: installing this checkout into the venv", file=sys.stderr)
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(ROOT)], check=True)
    subprocess.run([*pip, str(ROOT)], check=True)     # a dependency added since (e.g. cronsim)
    return python


# ----------------------------------------------------------------------------- cleanup

_PR_SET_CHILD_SUBREAPER = 36
_started: list[subprocess.Popen] = []


def become_subreaper() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out += [int(p) for p in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        kids = _children(frontier.pop())
        found += kids
        frontier += kids
    return found


def kill_everything() -> int:
    """SIGKILL every descendant of the benchmark (by pid) and reap them; how many there were."""
    killed = 0
    for _ in range(100):
        pids = descendants(os.getpid())
        if not pids:
            break
        killed = max(killed, len(pids))
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.02)
        _reap()
    _reap()
    return killed


def _reap() -> None:
    for p in _started:
        if p.returncode is None:
            try:
                p.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
    _started.clear()
    while True:     # orphans re-parented to us (we are a subreaper)
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _on_signal(sig, _frame):
    kill_everything()
    sys.exit(128 + sig)


# ----------------------------------------------------------------------------- /proc

def pss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def is_python(pid: int) -> bool:
    try:
        return "python" in os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return False


def runner_tree(pid: int) -> list[int]:
    """The runner and its helper processes (Python ones: honcho forks one per service)."""
    return [pid] + [p for p in descendants(pid) if is_python(p)]


def cpu_and_wakeups(pids: list[int]) -> tuple[int, int]:
    """(CPU time in ns, voluntary + involuntary context switches) over every thread."""
    ns = switches = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns += int(f.read().split()[0])
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if "ctxt_switches:" in line:
                            switches += int(line.split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return ns, switches


# ----------------------------------------------------------------------------- helpers run as children

PRODUCER = r'''
import os, sys, time
name, n = sys.argv[1].encode(), int(sys.argv[2])
start_at = float(os.environ["BENCH_START_AT"])
pad = b"x" * %d
data = b"".join([b"%%s %%08d %%s\n" %% (name, i, pad) for i in range(n)])
delay = start_at - time.time()
if delay > 0:
    time.sleep(delay)
view = memoryview(data)
while view:
    view = view[os.write(1, view):]
time.sleep(600)     # stay up: honcho stops everything once one process exits
''' % LINE_PAD

BARE_DRAIN = r'''
import json, os, pty, select, subprocess, sys, termios, time
mode, n, producer = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fds, procs = [], []
for k in range(4):
    argv = [sys.executable, producer, "s%d" % (k + 1), str(n)]
    if mode == "pty":
        m, s = pty.openpty()
        attrs = termios.tcgetattr(s)
        attrs[1] &= ~termios.ONLCR          # as entrypoint sets its PTYs
        termios.tcsetattr(s, termios.TCSANOW, attrs)
        procs.append(subprocess.Popen(argv, stdin=s, stdout=s, stderr=s, start_new_session=True))
        os.close(s)
        fds.append(m)
    else:
        r, w = os.pipe()
        procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=w, stderr=w,
                                      start_new_session=True))
        os.close(w)
        fds.append(r)
ep = select.epoll()
for fd in fds:
    os.set_blocking(fd, False)
    ep.register(fd, select.EPOLLIN)
expected, count, deadline, t_first = 4 * n, 0, time.time() + 120, None
while count < expected and time.time() < deadline:
    for fd, _ in ep.poll(1):
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            ep.unregister(fd)
            continue
        if t_first is None:
            t_first = time.time()
        count += data.count(b"\n")
t_end = time.time()
for p in procs:
    p.kill()
    p.wait()
print(json.dumps({"lines": count, "t_end": t_end, "t_first": t_first}))
'''

BARE_FORWARD = r'''
import os, pty, select, signal, subprocess, sys, termios
mode, n, producer = sys.argv[1], int(sys.argv[2]), sys.argv[3]
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
fds = {}
for k in range(4):
    argv = [sys.executable, producer, "s%d" % (k + 1), sys.argv[2]]
    if mode == "pty":
        m, s = pty.openpty()
        attrs = termios.tcgetattr(s)
        attrs[1] &= ~termios.ONLCR
        termios.tcsetattr(s, termios.TCSANOW, attrs)
        subprocess.Popen(argv, stdin=s, stdout=s, stderr=s, start_new_session=True)
        os.close(s)
        fds[m] = k
    else:
        r, w = os.pipe()
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=w, stderr=w, start_new_session=True)
        os.close(w)
        fds[r] = k
ep = select.epoll()
for fd in fds:
    os.set_blocking(fd, False)
    ep.register(fd, select.EPOLLIN)
prefix = {fd: ("s%d" % (k + 1)).ljust(10).encode() + b" | " for fd, k in fds.items()}
pending = dict.fromkeys(fds, b"")
while fds:
    for fd, _ in ep.poll():
        chunks, eof = [], False
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                eof = True
                break
            chunks.append(data)
        data = pending[fd] + b"".join(chunks)
        end = data.rfind(b"\n") + 1
        pending[fd] = data[end:]
        p = prefix[fd]
        out = p + data[:end].replace(b"\n", b"\n" + p)
        view = memoryview(out)[:len(out) - len(p)]
        while view:
            view = view[os.write(1, view):]
        if eof:
            ep.unregister(fd)
            del fds[fd]
'''

BARE_SPAWN = r'''
import json, os, signal, subprocess, sys, time
n, how = int(sys.argv[1]), sys.argv[2]
marker = b"alive-marker"
r, w = os.pipe()
t0 = time.perf_counter()
pids, popens = [], []
for i in range(n):
    argv = ["/bin/sh", "-c", "echo alive-marker %d; exec sleep 3600" % i]
    if how == "posix_spawn":
        pids.append(os.posix_spawn(argv[0], argv, os.environ, setsid=True,
                                   file_actions=[(os.POSIX_SPAWN_DUP2, w, 1)]))
    else:
        p = subprocess.Popen(argv, stdout=w, stdin=subprocess.DEVNULL, start_new_session=True)
        popens.append(p)
        pids.append(p.pid)
os.close(w)
seen, carry = 0, b""
while seen < n:
    data = os.read(r, 65536)
    if not data:
        break
    seen += (carry + data).count(marker)
    carry = data[-(len(marker) - 1):]
t_alive = time.perf_counter() - t0
time.sleep(0.3)                  # every sh has exec'd its sleep
t1 = time.perf_counter()
for pid in pids:
    os.kill(pid, signal.SIGTERM)
for pid in pids:
    os.waitpid(pid, 0)
t_stop = time.perf_counter() - t1
for p in popens:
    p.returncode = -15
print(json.dumps({"alive": t_alive, "stop": t_stop, "seen": seen}))
'''


# The reference runner of issue 12: the least a Python supervisor must do. One pipe per
# service (stdout and stderr), poll(), 64 KiB reads, the prefix added with one
# bytes.replace per chunk (lines kept whole: a partial tail waits for its newline).
# SIGTERM: TERM to each service, waitpid all, exit. Its start-up is the floor of what a
# Python supervisor can reach.
RELAY = r"""
import json, os, select, signal, sys
services = json.load(open(sys.argv[1]))
width = max(len(s["name"]) for s in services)
procs, prefix, tail = {}, {}, {}
poller = select.poll()
for s in services:
    r, w = os.pipe()
    pid = os.posix_spawn(s["argv"][0], s["argv"], os.environ, setsid=True, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2)])
    os.close(w)
    procs[r], prefix[r], tail[r] = pid, s["name"].ljust(width).encode() + b" | ", b""
    poller.register(r, select.POLLIN)
def stop(*_):
    for pid in procs.values():
        os.kill(pid, signal.SIGTERM)
    for pid in procs.values():
        os.waitpid(pid, 0)
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
while procs:
    for fd, _ in poller.poll():
        data = os.read(fd, 65536)
        if not data:
            poller.unregister(fd)
            del procs[fd]
            continue
        data = tail[fd] + data
        end = data.rfind(b"\n") + 1
        tail[fd], p = data[end:], prefix[fd]
        if end:
            out = memoryview(p + data[:end - 1].replace(b"\n", b"\n" + p) + b"\n")
            while out:
                out = out[os.write(1, out):]
"""

# ----------------------------------------------------------------------------- one runner

class Trial:
    """One runner process whose stdout+stderr the benchmark reads through a pipe."""

    READ = 1 << 18

    def __init__(self, argv: list[str], *, env: dict, cwd: str, marker: bytes,
                 target: int, expect_bytes: int = 1 << 20):
        self.marker, self.target = marker, target
        # Read into memory touched in advance: a fresh buffer per read would cost a page
        # fault per 4 KiB, and in a VM that made this reader slower than the runners.
        self.buf = bytearray(b"\1") * (expect_bytes + (8 << 20))
        self.pos = 0
        self.count = 0
        self.t_first: float | None = None      # wall clock of the first marker
        self.t_target: float | None = None     # ... of the target-th marker
        self.t_last = 0.0                      # ... of the last byte read
        self.reached = threading.Event()
        self.eof = threading.Event()
        self.t_launch = time.time()
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        _started.append(self.proc)
        self.pid = self.proc.pid
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        fd = self.proc.stdout.fileno()
        back = len(self.marker) - 1
        buf = self.buf
        view = memoryview(buf)
        while True:
            if len(buf) - self.pos < self.READ:
                view.release()
                buf.extend(bytes(8 << 20))
                view = memoryview(buf)
            try:
                n = os.readv(fd, [view[self.pos:self.pos + self.READ]])
            except OSError:
                n = 0
            now = time.time()
            if not n:
                break
            self.t_last = now
            found = buf.count(self.marker, max(0, self.pos - back), self.pos + n)
            self.pos += n
            if found:
                if self.t_first is None:
                    self.t_first = now
                self.count += found
                if self.count >= self.target and self.t_target is None:
                    self.t_target = now
                    self.reached.set()
        self.eof.set()
        self.reached.set()

    def wait_target(self, timeout: float, idle: float = 3.0) -> bool:
        """Until the target count, EOF, `timeout`, or `idle` seconds without output after some."""
        deadline = time.time() + timeout
        while not self.reached.wait(0.1):
            now = time.time()
            if now > deadline:
                return False
            if self.count and self.t_last and now - self.t_last > idle:
                return False
        return self.t_target is not None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> float | None:
        """Send `sig`; seconds until the runner exited (None: killed at the deadline).

        A blocking waitpid, bounded by a watchdog: Popen.wait(timeout) polls with a
        doubling sleep and would round every exit up to ~32 ms, ~64 ms, ...
        """
        expired = threading.Event()

        def watchdog() -> None:
            expired.set()
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, watchdog)
        timer.daemon = True
        timer.start()
        began = time.perf_counter()
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait()
        took = time.perf_counter() - began
        timer.cancel()
        self.eof.wait(5)
        return None if expired.is_set() else took

    @property
    def output(self) -> bytes:
        return bytes(self.buf[:self.pos])


# ----------------------------------------------------------------------------- configs

def write_configs(tmp: Path, tool: str, services: list[tuple[str, list[str]]], *,
                  tty: bool = True, check: bool = True) -> tuple[list[str], dict]:
    """Files for `tool` running `services` [(name, argv)]; returns (runner argv, extra env).

    entrypoint's config is checked first (`entrypoint check`, untimed), as an image build
    does: the run then starts from the validated form it keeps. `check=False`: not."""
    venv_bin = Path(sys.executable).parent
    d = tmp / tool
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    if tool == "entrypoint":
        parts = ["[timeouts]\nservice_shutdown_timeout = 10\nglobal_shutdown_timeout = 30\n"]
        for name, argv in services:
            parts.append(f"[[services]]\nname = {json.dumps(name)}\ncommand = {json.dumps(argv[0])}\n"
                         f"args = {json.dumps(argv[1:])}\nrestart = \"no\"\n"
                         + ("" if tty else "tty = false\n"))
        (d / "services.toml").write_text("\n".join(parts))
        if check:
            subprocess.run([str(venv_bin / "entrypoint"), "check", "-c", str(d / "services.toml")],
                           env=base_env(tmp), capture_output=True, timeout=60, check=True)
        return ([str(venv_bin / "entrypoint"), "-c", str(d / "services.toml")],
                {"ENTRYPOINT_SOCKET": str(d / "ep.sock"), "ENTRYPOINT_NO_INSTALL": "1"})
    if tool == "relay":
        (d / "relay.py").write_text(RELAY)
        (d / "services.json").write_text(json.dumps(
            [{"name": name, "argv": argv} for name, argv in services]))
        return [sys.executable, str(d / "relay.py"), str(d / "services.json")], {}
    if tool == "supervisord":
        conf = textwrap.dedent(f"""\
            [supervisord]
            nodaemon = true
            silent = true
            logfile = /dev/null
            logfile_maxbytes = 0
            loglevel = error
            pidfile = {d}/supervisord.pid
            childlogdir = {d}

            [unix_http_server]
            file = {d}/supervisor.sock

            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

            [supervisorctl]
            serverurl = unix://{d}/supervisor.sock
            """)
        for name, argv in services:
            command = " ".join(_sv_quote(a) for a in argv)
            conf += textwrap.dedent(f"""
                [program:{name}]
                command = {command}
                autostart = true
                autorestart = false
                startsecs = 0
                stopwaitsecs = 10
                redirect_stderr = true
                stdout_logfile = /dev/stdout
                stdout_logfile_maxbytes = 0
                """)
        (d / "supervisord.conf").write_text(conf)
        return [str(venv_bin / "supervisord"), "-c", str(d / "supervisord.conf")], {}
    if tool == "honcho":
        import shlex
        lines = [f"{name}: {shlex.join(argv)}" for name, argv in services]
        (d / "Procfile").write_text("\n".join(lines) + "\n")
        (d / ".env").write_text("")
        return [str(venv_bin / "honcho"), "-f", str(d / "Procfile"), "-d", str(d), "start"], {}
    raise ValueError(tool)


def _sv_quote(arg: str) -> str:
    if re.fullmatch(r"[\w./=:-]+", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def base_env(tmp: Path) -> dict:
    env = dict(os.environ)
    for key in list(env):
        if key.startswith("ENTRYPOINT_") or key in ("FORCE_COLOR", "PYTHONPATH"):
            env.pop(key)
    env["NO_COLOR"] = "1"
    # Compiled bytecode is used, as in an image where pip installed the packages.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


# ----------------------------------------------------------------------------- checks

PREFIX = {
    "entrypoint": rb"(?P<pre>s\d+) +\| ",
    "relay": rb"(?P<pre>s\d+) +\| ",
    "supervisord": rb"",
    "honcho": rb"\d\d:\d\d:\d\d (?P<pre>s\d+)\.1 +\| ",
}


def check_lines(output: bytes, tool: str, n_services: int, n: int) -> dict:
    """Every payload line intact, once, in order, under its own service's prefix?"""
    regex = re.compile(rb"^" + PREFIX[tool] + PAYLOAD + rb"\r?$", re.M)
    seen = {f"s{k + 1}".encode(): bytearray(n) for k in range(n_services)}
    intact = dupes = wrong_prefix = out_of_order = 0
    last = {}
    for m in regex.finditer(output):
        svc = m.group("svc")
        if "pre" in regex.groupindex and m.group("pre") != svc:
            wrong_prefix += 1
            continue
        seq = int(m.group("seq"))
        bits = seen.get(svc)
        if bits is None or seq >= n:
            continue
        if bits[seq]:
            dupes += 1
            continue
        bits[seq] = 1
        intact += 1
        if seq < last.get(svc, -1):
            out_of_order += 1
        last[svc] = seq
    xx = sum(1 for line in output.split(b"\n") if b"xxxxxxxxxx" in line)
    return {"expected": n_services * n, "intact": intact,
            "lost": n_services * n - intact, "cut_or_mixed": xx - intact,
            "duplicates": dupes, "wrong_prefix": wrong_prefix, "out_of_order": out_of_order}


# ----------------------------------------------------------------------------- the measurements

class Bench:
    def __init__(self, args, tmp: Path):
        self.args = args
        self.tmp = tmp
        self.python = sys.executable
        self.producer = tmp / "producer.py"
        self.producer.write_text(PRODUCER)
        (tmp / "bare_drain.py").write_text(BARE_DRAIN)
        (tmp / "bare_spawn.py").write_text(BARE_SPAWN)
        (tmp / "bare_forward.py").write_text(BARE_FORWARD)
        self.samples: dict[str, list] = {}
        self.notes: list[str] = []
        self.checks: dict[str, dict] = {}
        self.log_deadline = 120.0

    def add(self, key: str, value) -> None:
        self.samples.setdefault(key, []).append(value)
        print(f"  {key:34s} {value if not isinstance(value, float) else round(value, 6)}",
              file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", file=sys.stderr, flush=True)

    # -- log throughput ---------------------------------------------------------------

    def bare_drain(self, mode: str, n: int) -> None:
        env = base_env(self.tmp)
        start_at = time.time() + 0.7
        env["BENCH_START_AT"] = repr(start_at)
        out = subprocess.run([self.python, str(self.tmp / "bare_drain.py"), mode, str(n),
                              str(self.producer)], env=env, capture_output=True, timeout=180,
                             check=True)
        result = json.loads(out.stdout)
        if result["lines"] < 4 * n:
            self.note(f"bare {mode} drain counted {result['lines']} of {4 * n} lines")
        self.add(f"log.bare_{mode}", 4 * n / (result["t_end"] - start_at) / 1e6)
        if result.get("t_first"):
            self.add(f"log_after.bare_{mode}", (4 * n - 1) / (result["t_end"] - result["t_first"]) / 1e6)
        kill_everything()

    def log_run(self, tool: str, n: int, tty: bool = True) -> None:
        key = f"log.{tool}" + ("_pty" if tty else "_pipe") * (tool in ("entrypoint", "forward"))
        services = [(f"s{k + 1}", [self.python, str(self.producer), f"s{k + 1}", str(n)])
                    for k in range(4)]
        if tool == "forward":
            argv = [self.python, str(self.tmp / "bare_forward.py"), "pty" if tty else "pipe",
                    str(n), str(self.producer)]
            extra = {}
            (self.tmp / tool).mkdir(exist_ok=True)
        else:
            argv, extra = write_configs(self.tmp, tool, services, tty=tty)
        env = {**base_env(self.tmp), **extra}
        start_at = time.time() + START_DELAY
        env["BENCH_START_AT"] = repr(start_at)
        trial = Trial(argv, env=env, cwd=str(self.tmp / tool), marker=b"x\n", target=4 * n,
                      expect_bytes=4 * n * 110)
        try:
            complete = trial.wait_target(self.log_deadline)
            end = trial.t_target if complete else trial.t_last
            if trial.t_first is not None and trial.t_first > start_at + 0.5:
                self.note(f"{key}: first line {trial.t_first - start_at:.2f}s after the start "
                          f"time (slow runner start counts against it)")
            trial.stop(signal.SIGTERM, timeout=20)
        finally:
            kill_everything()
        check = check_lines(trial.output, "entrypoint" if tool == "forward" else tool, 4, n)
        prev = self.checks.get(key)
        if prev is None or check["intact"] < prev["intact"]:
            self.checks[key] = check
        self.add(key, check["intact"] / (end - start_at) / 1e6 if end else 0.0)
        if end and trial.t_first is not None and end > trial.t_first:
            # after the first line: what the runner's start-up no longer weighs on
            self.add(key.replace("log.", "log_after.", 1),
                     (check["intact"] - 1) / (end - trial.t_first) / 1e6)
        if check["lost"] or check["cut_or_mixed"] or check["wrong_prefix"]:
            print(f"  {key}: {check}", file=sys.stderr)

    # -- 50 services: start, memory, shutdown ----------------------------------------------

    def sleepers(self, count: int) -> list[tuple[str, list[str]]]:
        return [(f"s{i}", ["/bin/sh", "-c", f"echo {MARKER.decode()} {i}; exec sleep 3600"])
                for i in range(count)]

    def fifty(self, tool: str, count: int, measure_stop: bool = True, check: bool = True) -> None:
        argv, extra = write_configs(self.tmp, tool, self.sleepers(count), check=check)
        if not check:                       # the config validated at start, as without a build
            trial = Trial(argv, env={**base_env(self.tmp), **extra}, cwd=str(self.tmp / tool),
                          marker=MARKER, target=count)
            try:
                if trial.wait_target(60, idle=30):
                    self.add(f"start.{tool}_unchecked", trial.t_target - trial.t_launch)
                    self.add(f"first.{tool}_unchecked", trial.t_first - trial.t_launch)
                trial.stop(signal.SIGTERM, timeout=30)
            finally:
                kill_everything()
            return
        env = {**base_env(self.tmp), **extra}
        trial = Trial(argv, env=env, cwd=str(self.tmp / tool), marker=MARKER, target=count)
        try:
            if not trial.wait_target(60, idle=30):
                self.note(f"{tool}: only {trial.count} of {count} services came up")
                return
            self.add(f"start.{tool}", trial.t_target - trial.t_launch)
            self.add(f"first.{tool}", trial.t_first - trial.t_launch)
            time.sleep(1.0)                  # settle: supervisord finishes its bookkeeping
            self.add(f"pss.{tool}", pss_kb(trial.pid) / 1024)
            tree = runner_tree(trial.pid)
            self.add(f"pss_tree.{tool}", sum(pss_kb(p) or 0 for p in tree) / 1024)
            if measure_stop:
                took = trial.stop(signal.SIGTERM, timeout=90)
                if took is None:
                    self.note(f"{tool}: still running 90 s after SIGTERM; killed")
                else:
                    self.add(f"stop.{tool}", took)
                    self.add(f"left.{tool}", len(descendants(os.getpid())))
        finally:
            kill_everything()

    def bare_spawn(self, count: int, how: str) -> None:
        out = subprocess.run([self.python, str(self.tmp / "bare_spawn.py"), str(count), how],
                             env=base_env(self.tmp), capture_output=True, timeout=60, check=True)
        result = json.loads(out.stdout)
        self.add(f"start.bare_{how}", result["alive"])
        self.add(f"stop.bare_{how}", result["stop"])
        kill_everything()

    def bare_python_pss(self) -> None:
        """A sleeping interpreter; and one that imported asyncio (without ssl, as the
        runner does): the floor of any asyncio-based runner."""
        for key, code in (("bare_python", "import time; time.sleep(60)"),
                          ("bare_asyncio", NO_SSL_ASYNCIO + "; time.sleep(60)")):
            p = subprocess.Popen([self.python, "-c", code])
            _started.append(p)
            time.sleep(0.7)
            self.add(f"pss.{key}", pss_kb(p.pid) / 1024)
            kill_everything()

    # -- plain init: `entrypoint -- true` against tini, dumb-init and python -c pass --------

    def plain_init(self, runs: int) -> None:
        """Wall time from launch to exit of a plain init running `true` (no config), runs
        interleaved; `python3 -c pass` is the floor any Python program starts from."""
        where = self.tmp / "plain-init"         # no services.toml here: a plain init
        where.mkdir(exist_ok=True)
        entrypoint = str(Path(self.python).parent / "entrypoint")
        argvs = {"python": [self.python, "-c", "pass"],
                 "python_asyncio": [self.python, "-c", NO_SSL_ASYNCIO],
                 "entrypoint": [entrypoint, "--", "true"]}
        for name, path in INIT_PEERS.items():
            if os.path.exists(path):
                argvs[name] = [path, "--", "true"]
            elif name not in self.samples:
                self.note(f"{path} is not installed: {name} was not measured")
        env = base_env(self.tmp)
        for _ in range(runs):
            for name, argv in argvs.items():
                began = time.perf_counter()
                out = subprocess.run(argv, cwd=where, env=env, stdin=subprocess.DEVNULL,
                                     capture_output=True, timeout=30)
                took = time.perf_counter() - began
                if out.returncode != 0 or (name == "entrypoint" and out.stdout):
                    self.note(f"plain init: {name} exited {out.returncode}, printing "
                              f"{len(out.stdout.splitlines())} line(s) on stdout")
                self.samples.setdefault(f"init.{name.replace('-', '_')}", []).append(took)
        for name in argvs:
            key = f"init.{name.replace('-', '_')}"
            print(f"  {key:34s} median {statistics.median(self.samples[key]) * 1000:.1f} ms",
                  file=sys.stderr, flush=True)

    # -- idle and the status query ------------------------------------------------------

    def idle(self, tool: str, count: int, seconds: float, list_runs: int) -> None:
        argv, extra = write_configs(self.tmp, tool, self.sleepers(count))
        env = {**base_env(self.tmp), **extra}
        trial = Trial(argv, env=env, cwd=str(self.tmp / tool), marker=MARKER, target=count)
        try:
            if not trial.wait_target(60, idle=30):
                self.note(f"{tool}: only {trial.count} of {count} services came up (idle)")
                return
            time.sleep(2.0)
            tree = runner_tree(trial.pid)
            ns0, sw0 = cpu_and_wakeups(tree)
            time.sleep(seconds)
            ns1, sw1 = cpu_and_wakeups(tree)
            self.add(f"idle_cpu_ms.{tool}", (ns1 - ns0) / 1e6 / seconds)
            self.add(f"idle_wakeups.{tool}", (sw1 - sw0) / seconds)
            if tool == "entrypoint":
                self.list_latency([str(Path(self.python).parent / "entrypoint"), "list"],
                                  env, "entrypoint", list_runs)
            elif tool == "supervisord":
                conf = str(self.tmp / tool / "supervisord.conf")
                self.list_latency([str(Path(self.python).parent / "supervisorctl"), "-c", conf,
                                   "status"], env, tool, list_runs)
            trial.stop(signal.SIGTERM, timeout=60)
        finally:
            kill_everything()

    # -- the scaling curve: 10, 100, 500 services ------------------------------------------

    def scale(self, count: int, seconds: float) -> None:
        """Sleepers, then the same count printing a line a second each (a bash builtin
        `read -t 1` on a FIFO nobody writes: no fork per line): start, `list`, PSS, CPU
        idle and under that light output, stop. Keys `scale.<measure>.<count>`."""
        fifo = self.tmp / "never-written"
        if not fifo.exists():
            os.mkfifo(fifo)
        ticking = [(f"s{i}", ["/bin/bash", "-c", f"exec 9<>{fifo}; echo {MARKER.decode()} {i}; "
                              f"while :; do read -t 1 -u 9; echo tick {i}; done"])
                   for i in range(count)]
        entrypoint = str(Path(self.python).parent / "entrypoint")
        for kind, services in (("sleep", self.sleepers(count)), ("tick", ticking)):
            argv, extra = write_configs(self.tmp, "entrypoint", services)
            env = {**base_env(self.tmp), **extra}
            trial = Trial(argv, env=env, cwd=str(self.tmp / "entrypoint"), marker=MARKER,
                          target=count, expect_bytes=count * 40 * (int(seconds) + 30))
            try:
                if not trial.wait_target(120, idle=60):
                    self.note(f"scale {count} ({kind}): only {trial.count} came up")
                    return
                if kind == "sleep":
                    self.add(f"scale.start.{count}", trial.t_target - trial.t_launch)
                time.sleep(2.0)
                ns0, sw0 = cpu_and_wakeups([trial.pid])
                time.sleep(seconds)
                ns1, sw1 = cpu_and_wakeups([trial.pid])
                self.add(f"scale.cpu_{kind}.{count}", (ns1 - ns0) / 1e6 / seconds)
                if kind == "sleep":
                    self.add(f"scale.wakeups.{count}", (sw1 - sw0) / seconds)
                    self.add(f"scale.pss.{count}", pss_kb(trial.pid) / 1024)
                    times = []
                    for _ in range(5):
                        began = time.perf_counter()
                        subprocess.run([entrypoint, "list"], env=env, capture_output=True, timeout=30)
                        times.append(time.perf_counter() - began)
                    self.add(f"scale.list.{count}", statistics.median(times))
                    took = trial.stop(signal.SIGTERM, timeout=60)
                    if took is not None:
                        self.add(f"scale.stop.{count}", took)
                else:
                    trial.stop(signal.SIGTERM, timeout=60)
            finally:
                kill_everything()

    def list_latency(self, argv: list[str], env: dict, tool: str, runs: int) -> None:
        if tool == "entrypoint" and not self.has_list:
            return
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            out = subprocess.run(argv, env=env, capture_output=True, timeout=30)
            took = time.perf_counter() - began
            if out.returncode != 0:
                self.note(f"{' '.join(argv[-1:])} for {tool} exited {out.returncode}: "
                          f"{out.stderr.decode(errors='replace').strip()[:200]}")
                return
            times.append(took)
        for t in times:
            self.add(f"list.{tool}", t)

    @property
    def has_list(self) -> bool:
        if not hasattr(self, "_has_list"):
            out = subprocess.run([str(Path(self.python).parent / "entrypoint"), "list", "--help"],
                                 capture_output=True, timeout=30, env=base_env(self.tmp))
            self._has_list = out.returncode == 0
            if not self._has_list:
                self.note("`entrypoint list` is not available in this checkout: "
                          "its latency was not measured")
        return self._has_list


# ----------------------------------------------------------------------------- the run

def run(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ep-bench-"))
    bench = Bench(args, tmp)
    load_before = os.getloadavg()
    rounds, n = args.rounds, args.lines
    began = time.time()
    try:
        print(f"bench: {rounds} round(s), 4 x {n} lines, {args.services} services, "
              f"{args.idle:g}s idle", file=sys.stderr)
        only, tools = args.only, args.tools
        if "services" in only:
            bench.bare_python_pss()
        for r in range(rounds):
            if "log" in only:
                print(f"round {r + 1}/{rounds}: log throughput", file=sys.stderr)
                bench.bare_drain("pty", n)
                bench.bare_drain("pipe", n)
                bench.log_run("forward", n, tty=True)
                bench.log_run("forward", n, tty=False)
                if "entrypoint" in tools:
                    bench.log_run("entrypoint", n, tty=True)
                    bench.log_run("entrypoint", n, tty=False)
                if "relay" in tools:
                    bench.log_run("relay", n, tty=False)
                if "supervisord" in tools:
                    bench.log_run("supervisord", n)
                if "honcho" in tools and r < args.honcho_log_rounds:
                    bench.log_run("honcho", min(n, HONCHO_LINES))  # ~50x slower: a rate
            if "services" in only:
                print(f"round {r + 1}/{rounds}: {args.services} services", file=sys.stderr)
                bench.bare_spawn(args.services, "posix_spawn")
                bench.bare_spawn(args.services, "popen")
                for tool in tools:
                    bench.fifty(tool, args.services, measure_stop=(
                        tool != "supervisord" or r < args.supervisord_stop_rounds))
                if "entrypoint" in tools:
                    bench.fifty("entrypoint", args.services, check=False)
        if "init" in only:
            print(f"plain init: {args.init_runs} runs of each, interleaved", file=sys.stderr)
            bench.plain_init(args.init_runs)
        if "scale" in only:
            for count in (10, 100, 500):
                print(f"scaling curve: {count} services", file=sys.stderr)
                bench.scale(count, args.idle)
        if "idle" in only:
            print(f"idle {args.idle:g}s with 10 services, and the status query", file=sys.stderr)
            for tool in tools:
                bench.idle(tool, 10, args.idle, args.list_runs)
    finally:
        kill_everything()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"samples": bench.samples, "checks": bench.checks, "notes": bench.notes,
            "elapsed": time.time() - began, "load": [load_before, os.getloadavg()], "params": {
                "rounds": rounds, "lines": n, "services": args.services, "idle": args.idle,
                "list_runs": args.list_runs, "init_runs": args.init_runs, "honcho_log_rounds": min(rounds, args.honcho_log_rounds),
                "supervisord_stop_rounds": min(rounds, args.supervisord_stop_rounds),
                "quick": args.quick}}


# ----------------------------------------------------------------------------- report

def med(samples: dict, key: str) -> float | None:
    values = samples.get(key)
    return statistics.median(values) if values else None


def machine() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem,
            "kernel": platform.release(), "os": _os_name(), "python": platform.python_version()}


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for pkg in ("entrypoint", "supervisor", "honcho", "pydantic", "matplotlib"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "M lines/s":
        return f"{value:.2f}"
    if unit == "ms":
        return f"{value * 1000:.1f}" if value < 10 else f"{value * 1000:.0f}"
    if unit == "MB":
        return f"{value:.1f}"
    if unit in ("ms/s", "/s"):
        return f"{value:.2f}" if value < 10 else f"{value:.0f}"
    return f"{value:g}"


def goals(s: dict, checks: dict) -> list[dict]:
    """Each goal of issue 4 as (name, ratio measured, threshold, met)."""
    g = []

    def add(name, value, threshold, better, detail):
        met = None if value is None else (value >= threshold if better == "higher" else value <= threshold)
        g.append({"goal": name, "value": value, "threshold": threshold, "better": better,
                  "met": met, "detail": detail})

    def ratio(a, b):
        return _ratio(s, a, b)

    add("prefixed log throughput (PTY) vs supervisord's passthrough", ratio("log.entrypoint_pty", "log.supervisord"), 1.5, "higher", "x")
    add("prefixed log throughput (PTY) vs bare PTY drain", ratio("log.entrypoint_pty", "log.bare_pty"), 0.55, "higher", "x")
    add("prefixed log throughput (tty = false) vs bare pipe drain", ratio("log.entrypoint_pipe", "log.bare_pipe"), 0.70, "higher", "x")
    bad = sum(c["lost"] + max(0, c["cut_or_mixed"]) + c["wrong_prefix"]
              for k, c in checks.items() if k.startswith("log.entrypoint"))
    add("lines lost or cut by entrypoint (all rounds, PTY and pipes)", float(bad) if checks else None, 0, "lower", "lines")
    add("start of 50 services vs honcho", ratio("start.entrypoint", "start.honcho"), 1.0, "lower", "x")
    add("start of 50 services vs bare fork/exec (aim)", ratio("start.entrypoint", "start.bare_posix_spawn"), 3.0, "lower", "x")
    add("shutdown of 50 vs bare SIGTERM+reap", ratio("stop.entrypoint", "stop.bare_posix_spawn"), 5.0, "lower", "x")
    add("runner PSS with 50 services vs supervisord", ratio("pss.entrypoint", "pss.supervisord"), 1.0, "lower", "x")
    add("idle CPU, 10 services, no healthchecks", med(s, "idle_cpu_ms.entrypoint"), 0.0, "lower", "ms/s")
    add("idle wake-ups, 10 services, no healthchecks", med(s, "idle_wakeups.entrypoint"), 0.0, "lower", "/s")
    add("`entrypoint list` vs `supervisorctl status`", ratio("list.entrypoint", "list.supervisord"), 0.5, "lower", "x")
    init_ep, init_py = med(s, "init.entrypoint"), med(s, "init.python")
    add("plain init `entrypoint -- true` minus `python3 -c pass`",
        None if init_ep is None or init_py is None else round((init_ep - init_py) * 1000, 1),
        50, "lower", "ms")
    return g


def targets(s: dict, checks: dict) -> list[dict]:
    """Each target of issue 12 (start like a minimal Python supervisor), same shape as goals."""
    g = []

    def add(name, value, threshold, better, detail="x"):
        met = None if value is None else (value >= threshold if better == "higher" else value <= threshold)
        g.append({"goal": name, "value": value, "threshold": threshold, "better": better,
                  "met": met, "detail": detail})

    def ratio(a, b):
        return _ratio(s, a, b)

    add("start of 50 services vs the relay", ratio("start.entrypoint", "start.relay"), 1.3, "lower")
    add("start of 50 services vs bare posix_spawn", ratio("start.entrypoint", "start.bare_posix_spawn"), 3.0, "lower")
    add("time to the first line vs the relay", ratio("first.entrypoint", "first.relay"), 1.3, "lower")
    add("streaming, pipes, after the first line, vs the relay", ratio("log_after.entrypoint_pipe", "log_after.relay"), 0.9, "higher")
    add("streaming, pipes, in total, vs the relay", ratio("log.entrypoint_pipe", "log.relay"), 0.9, "higher")
    add("streaming, PTYs, after the first line, vs bare PTY drain", ratio("log_after.entrypoint_pty", "log_after.bare_pty"), 0.9, "higher")
    add("streaming, PTYs, in total, vs bare PTY drain", ratio("log.entrypoint_pty", "log.bare_pty"), 0.9, "higher")
    add("stop of 50 vs the relay", ratio("stop.entrypoint", "stop.relay"), 1.0, "lower")
    add("stop of 50 vs bare SIGTERM + waitpid", ratio("stop.entrypoint", "stop.bare_posix_spawn"), 3.0, "lower")
    add("runner PSS vs a bare sleeping interpreter", ratio("pss.entrypoint", "pss.bare_python"), 1.3, "lower")
    bad = sum(c["lost"] + max(0, c["cut_or_mixed"]) + c["wrong_prefix"]
              for k, c in checks.items() if k.startswith("log.entrypoint"))
    add("lines lost, cut or mixed by entrypoint (every round)", float(bad) if checks else None, 0, "lower", "lines")
    add("idle wake-ups, 10 services", med(s, "idle_wakeups.entrypoint"), 0.0, "lower", "/s")
    add("`entrypoint list` vs `supervisorctl status`", ratio("list.entrypoint", "list.supervisord"), 0.5, "lower")
    return g


ROWS = [
    # (label, key template, unit, lower is better)
    ("log throughput, 4 x N lines, prefixed (M lines/s)", "log.{}", "M lines/s"),
    ("start of 50 services, launch -> all alive (ms)", "start.{}", "ms"),
    ("first line of 50 services, launch -> first line (ms)", "first.{}", "ms"),
    ("shutdown of 50 services, SIGTERM -> exit (ms)", "stop.{}", "ms"),
    ("runner PSS with 50 services (MB)", "pss.{}", "MB"),
    ("runner + helper processes PSS (MB)", "pss_tree.{}", "MB"),
    ("idle CPU, 10 services (ms per s)", "idle_cpu_ms.{}", "ms/s"),
    ("idle wake-ups, 10 services (per s)", "idle_wakeups.{}", "/s"),
    ("`list` / `supervisorctl status` latency (ms)", "list.{}", "ms"),
]


def _goal_table(w, rows: list[dict]) -> None:
    w("| goal | measured | target | met |")
    w("| --- | --- | --- | --- |")
    for g in rows:
        v = g["value"]
        shown = "n/a" if v is None else (f"{v:.2f}{g['detail']}" if g["detail"] == "x"
                                         else f"{v:g} {g['detail']}")
        op = ">=" if g["better"] == "higher" else "<="
        met = {True: "yes", False: "**no**", None: "not measured"}[g["met"]]
        w(f"| {g['goal']} | {shown} | {op} {g['threshold']:g}{'x' if g['detail'] == 'x' else ''} | {met} |")
    w("")


def write_report(result: dict, out_dir: Path) -> None:
    s, checks = result["samples"], result["checks"]
    p = result["params"]
    mach, vers = machine(), versions()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmarks.json").write_text(json.dumps(
        {**result, "machine": mach, "versions": vers}, indent=1) + "\n")
    chart = draw_chart(s, out_dir / "benchmarks.png")

    def cell(key):
        values = s.get(key)
        if not values:
            return "n/a"
        unit = "M lines/s" if key.startswith("log") else next(
            (u for _, k, u in ROWS if k.split(".")[0] == key.split(".")[0]), "ms")
        text = fmt(statistics.median(values), unit)
        if len(values) > 1 and unit in ("M lines/s", "ms"):
            text += f" <sub>({fmt(min(values), unit)}-{fmt(max(values), unit)})</sub>"
        return text

    lines = []
    w = lines.append
    w("# Benchmarks: entrypoint, supervisord, honcho, and the machine's limits\n")
    w(f"Measured by `scripts/bench.py`{' --quick' if p['quick'] else ''} on "
      f"{time.strftime('%Y-%m-%d', time.gmtime())}: {p['rounds']} round(s), medians "
      f"(min-max in small print). Re-run it with `python3 scripts/bench.py` "
      f"(`--quick` for a fast check); it took {result['elapsed']:.0f} s here.\n")
    if result.get("load"):
        (b1, b5, _), (a1, a5, _) = result["load"]
        w(f"Load average of the machine (2 cores, shared with other work) when the run "
          f"began: {b1:.2f} (1 min), {b5:.2f} (5 min); when it ended: {a1:.2f}, {a5:.2f}.\n")
    w("## Targets (issue 12), as ratios measured side by side in this run\n")
    w("Ratios are medians of per-round ratios (both sides measured in the same round). "
      "The relay is the 40-line stdlib reference runner in `scripts/bench.py` (one pipe per "
      "service, `poll()`, 64 KiB reads, one `bytes.replace` per chunk).\n")
    _goal_table(w, targets(s, checks))
    w("## Goals (issue 4)\n")
    _goal_table(w, goals(s, checks))
    w("## Results\n")
    w("| measurement | entrypoint | relay | supervisord | honcho | bare (the machine's limit) |")
    w("| --- | --- | --- | --- | --- | --- |")
    for suffix, what in (("", "in total"), ("_after", "after the first line")):
        w(f"| log throughput, PTYs, 4 x {p['lines']:,} lines of 80 bytes, {what} (M lines/s) | "
          f"{cell(f'log{suffix}.entrypoint_pty')} prefixed | n/a | n/a | n/a | "
          f"{cell(f'log{suffix}.bare_pty')} drain only; {cell('log.forward_pty') if not suffix else 'n/a'} drain + prefix + write |")
        w(f"| log throughput, pipes, {what} (M lines/s) | {cell(f'log{suffix}.entrypoint_pipe')} prefixed, `tty = false` | "
          f"{cell(f'log{suffix}.relay')} prefixed | {cell(f'log{suffix}.supervisord')} unprefixed | "
          f"{cell(f'log{suffix}.honcho')} prefixed | {cell(f'log{suffix}.bare_pipe')} "
          f"drain only; {cell('log.forward_pipe') if not suffix else 'n/a'} drain + prefix + write |")
    for label, key, unit in ROWS[1:]:
        bare = "n/a"
        if key.startswith("start") and "spread" not in key:
            bare = f"{cell('start.bare_posix_spawn')} posix_spawn, {cell('start.bare_popen')} Popen"
        elif key.startswith("stop"):
            bare = f"{cell('stop.bare_posix_spawn')} SIGTERM + waitpid"
        elif key.startswith("pss."):
            bare = f"{cell('pss.bare_python')} (`python -c 'sleep'`)"
        row = [cell(key.format(t)) for t in TOOLS]
        if key.startswith("list"):
            row[1] = row[3] = "no such command"
        w(f"| {label} | {' | '.join(row)} | {bare} |")
    w("")
    w("Plain init, no config: launch -> exit of `INIT -- true` (ms):\n")
    w("| `python3 -c pass` | `python3 -c 'import asyncio'` | `entrypoint -- true` | `tini -- true` | `dumb-init -- true` |")
    w("| --- | --- | --- | --- | --- |")
    w("| " + " | ".join(cell(f"init.{k}") for k in ("python", "python_asyncio", "entrypoint", "tini", "dumb_init"))
      + " |")
    w("")
    w("Lines checked after each log run (the worst round of each):\n")
    w("| runner | expected | intact | lost | cut or mixed | under another service's prefix | duplicated |")
    w("| --- | --- | --- | --- | --- | --- | --- |")
    for key in sorted(checks):
        c = checks[key]
        w(f"| {key.split('.', 1)[1]} | {c['expected']:,} | {c['intact']:,} | {c['lost']:,} | "
          f"{max(0, c['cut_or_mixed']):,} | {c['wrong_prefix']:,} | {c['duplicates']:,} |")
    w("")
    lines += scale_section(s)
    if chart:
        w(f"![bar charts of the results, and the scaling curve]({chart.name})\n")
    w("## What changed (issue 12), and reading the misses\n")
    ms = lambda key: "n/a" if med(s, key) is None else f"{med(s, key) * 1000:.0f} ms"
    floor = None
    if med(s, "init.python_asyncio") is not None and med(s, "init.python") is not None:
        floor = (med(s, "init.python_asyncio") - med(s, "init.python")) * 1000
    w(textwrap.dedent(f"""\
        - **Validation left the start.** Profiled (cProfile, `-X importtime`): pydantic's
          import and the models took most of the start, in a forked child. `entrypoint
          check` now keeps the validated config (JSON beside it) and `run` starts from it
          while the config, its env files and the variables it used are unchanged: start
          of 50 {ms("start.entrypoint")} checked, {ms("start.entrypoint_unchecked")} unchecked
          (first line {ms("first.entrypoint")} vs {ms("first.entrypoint_unchecked")}).
        - **Imports follow the config**: the health probes only with a healthcheck, ssl
          never unless an https probe needs it, difflib only for a typo, datetime only for
          an ISO next-run time. The web face was already a process of its own.
        - **The start's floor is asyncio.** Importing asyncio alone (without ssl) costs
          {"n/a" if floor is None else f"{floor:.0f} ms"} here over a bare interpreter; the
          whole relay starts 50 services in {ms("start.relay")}, so 1.3x the relay leaves
          {"n/a" if med(s, "start.relay") is None else f"{med(s, 'start.relay') * 300:.0f} ms"}
          for everything a supervisor adds: asyncio alone takes most of it. The rest of the
          start is the runtime's own modules and 50 posix_spawn calls, each ~1 ms, as bare.
        - **Memory**: a sleeping interpreter that imported asyncio has a PSS of
          {fmt(med(s, "pss.bare_asyncio"), "MB")} MB against {fmt(med(s, "pss.bare_python"), "MB")} MB
          for a bare one: that ratio alone is above 1.3x before any runner code.
        - **Streaming** is bounded by the second pipe: a bare forwarder that reads, prefixes
          and writes gets {_x(_ratio(s, "log.forward_pty", "log.bare_pty"))} of the bare PTY
          drain (which writes nothing), so 0.9x of the drain is out of reach of any runner
          that prints its lines; entrypoint runs at {_x(_ratio(s, "log.entrypoint_pty", "log.forward_pty"))}
          of that forwarder under PTYs, and at {_x(_ratio(s, "log.entrypoint_pipe", "log.relay"))}
          of the relay with pipes, with no line lost, cut or mixed.
        - **Scaling**: the cost per service stays flat or falls from 10 to 500 services for
          the start, the stop, `list`, memory and CPU under output (table above): nothing
          grows faster than linearly. The process title, once recomputed over all services
          at every change (quadratic), is updated once per loop iteration.
        - **Stop**: the relay sends TERM and waits for each pid in turn, and exits; entrypoint
          also drains each service's last output, prints a line per stop, stops in reverse
          dependency order and sweeps for escaped processes before it exits. Traced (strace
          of the runner during a stop of 50): a few loop iterations pass before the first
          signal (one stop task per service, the one stop each caller awaits), then each
          service costs a signal, a reap, a drain to EOF, two state changes and a line, in
          Python; no wait or timer is on that path, and the cost per service falls as the
          count grows (scaling curve).
        """))
    notes = list(dict.fromkeys(result["notes"]))
    for tool in TOOLS:
        left = [n for n in s.get(f"left.{tool}", []) if n]
        if left:
            notes.append(f"{tool} exited on SIGTERM leaving {min(left)}-{max(left)} of "
                         f"{p['services']} services running, in {len(left)} of "
                         f"{len(s[f'left.{tool}'])} runs (the benchmark killed them)")
    if notes:
        w("Notes from this run:\n")
        for note in notes:
            w(f"- {note}")
        w("")
    w("## Method\n")
    w(textwrap.dedent(f"""\
        Every runner is started by the benchmark as a real process, its stdout and stderr on
        one pipe that a reader thread drains (256 KiB reads into memory touched in advance)
        and timestamps; all numbers come from outside the runner. Rounds interleave the
        runners so that drift hits all alike. All runners use the same Python, in the
        benchmark's venv, where this checkout is installed with pip (compiled, as in an
        image) at the start of each run.

        - **Log throughput.** 4 services each write {p['lines']:,} lines of 80 bytes
          (`s1 00000042 xxx...`), prepared in memory, all starting at the same instant
          (launch + {START_DELAY:g} s, so runner start-up is not counted); the time runs from that
          instant to the arrival of the last line. Afterwards every line is checked: intact,
          exactly once, in order, under its own service's prefix. entrypoint runs its default
          (a PTY per service, `name | line` prefixes) and `tty = false` (pipes); supervisord
          passes output through unprefixed (`stdout_logfile = /dev/stdout`); honcho prefixes
          (`HH:MM:SS name.1 | line`; {p['honcho_log_rounds']} round(s) of 4 x {min(p['lines'], HONCHO_LINES):,}
          lines: it is slow). The bare
          drains are one Python process reading 4 PTYs (set up as entrypoint sets them) or 4
          pipes with epoll, 64 KiB reads, counting newlines and writing nothing: the most a
          single-threaded Python reader can take from the kernel here. The bare forwarders
          do what any runner must do on top, and nothing else: read the same way, prefix
          each line (`bytes.replace`), write to stdout, read by the benchmark like the
          runners; they show what is left once the output has to go through a second pipe
          on the same 2 cores. The bare pipe drain shows 11 M lines/s of pipe, but nothing
          that writes its lines anywhere gets near it here.
        - **Start of {p['services']} services**: each service is
          `sh -c 'echo {MARKER.decode()} N; exec sleep 3600'`; the time runs from the runner's
          launch (interpreter start-up and config loading included) to the last marker on
          its stdout. Bare: one Python process that already runs spawns the same commands
          with `os.posix_spawn` (or `subprocess.Popen`) and reads the markers from a pipe.
          entrypoint's config is checked (`entrypoint check`, untimed) before each of its
          runs, as an image build does, so `run` starts from the validated form it keeps;
          "unchecked" is the same start without it (validated at start, as before). The
          first line is the first marker's arrival. The relay (the reference runner of
          issue 12) reads a JSON list of the services and is measured like the runners.
        - **Scaling curve**: entrypoint with 10, 100 and 500 sleepers: start as above, 10 s
          of idle CPU and wake-ups (`/proc/PID/task/*/schedstat` and `status`), PSS, the
          median of 5 `entrypoint list`, the stop; then the same count of services printing
          one line a second (a bash builtin `read -t 1` on a FIFO, no fork per line) for
          the runner's CPU under light output.
        - **Memory**: PSS (`/proc/PID/smaps_rollup`) of the runner process 1 s after all
          services are up; "runner + helpers" adds the runner's Python child processes
          (honcho forks one per service). Bare: `python3 -c 'time.sleep()'`.
        - **Shutdown**: SIGTERM to the runner, time until the benchmark reaps it; the
          services exit at once on SIGTERM. Bare: SIGTERM to the 50 processes and `waitpid`
          each; both with a blocking `waitpid`. supervisord's shutdown is measured in
          {p['supervisord_stop_rounds']} round(s) only (it can take seconds).
        - **Idle**: 10 services, no healthchecks; after 2 s of settling, CPU time
          (`/proc/PID/task/*/schedstat`) and context switches (voluntary + involuntary, all
          threads and helper processes) over {p['idle']:g} s.
        - **Plain init**: wall time from launch to exit of `entrypoint -- true` (the venv's
          console script, in a directory with no config), `tini -- true` and
          `dumb-init -- true` (Debian packages), and `python3 -c pass` (the same Python),
          {p.get('init_runs', 'n/a')} runs each, interleaved.
        - **Status query**: wall time of `entrypoint list` and of `supervisorctl status`
          (both console scripts of the same venv, {p['list_runs']} runs each) against the
          idle 10-service stack.
        """))
    w("## Machine and versions\n")
    w(f"- CPU: {mach['cpu']}, {mach['cores']} cores; memory {mach['memory']}")
    w(f"- {mach['os']}, Linux {mach['kernel']}, Python {mach['python']}")
    w("- " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    w("")
    text = "\n".join(lines)
    old = out_dir / "benchmarks.md"
    # The sections of the other benchmarks (bench_web.py, bench_ready.py, bench_jobs.py) outlive this rewrite.
    previous = old.read_text() if old.exists() else ""
    for begin, end in (("<!-- web:begin -->", "<!-- web:end -->"),
                       ("<!-- readiness: begin -->", "<!-- readiness: end -->"),
                       ("<!-- jobs:begin -->", "<!-- jobs:end -->")):
        if begin in previous and end in previous:
            kept = previous.split(begin, 1)[1].split(end, 1)[0]
            text = text.rstrip("\n") + f"\n\n{begin}{kept}{end}\n"
    old.write_text(text)


def _ratio(s: dict, a: str, b: str) -> float | None:
    """a/b: pairs measured in the same round are compared with each other (the machine's
    speed drifts between rounds) and the median of those ratios is the result."""
    sa, sb = s.get(a) or [], s.get(b) or []
    if len(sa) == len(sb) > 1 and all(sb):
        return statistics.median(x / y for x, y in zip(sa, sb))
    ma, mb = med(s, a), med(s, b)
    return None if ma is None or not mb else ma / mb


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


SCALE = [  # (measure, label, unit, per service)
    ("start", "start, launch -> all alive", "ms", True),
    ("stop", "stop, SIGTERM -> exit", "ms", True),
    ("list", "`entrypoint list`", "ms", False),
    ("pss", "runner PSS", "MB", False),
    ("cpu_sleep", "runner CPU, idle", "ms/s", False),
    ("cpu_tick", "runner CPU, 1 line/s per service", "ms/s", False),
    ("wakeups", "runner wake-ups, idle", "/s", False),
]


def scale_counts(s: dict) -> list[int]:
    return sorted({int(k.rsplit(".", 1)[1]) for k in s if k.startswith("scale.")})


def scale_section(s: dict) -> list[str]:
    """The scaling curve as a table: each measure at each count, and per service."""
    counts = scale_counts(s)
    if not counts:
        return []
    out = ["## Scaling curve: 10, 100 and 500 services\n",
           "Sleepers (`sh -c 'echo ...; exec sleep 3600'`), then the same number of services "
           "printing one line a second each. Cost per service = measure / services; it must "
           "not grow with the count (that would be worse than linear).\n",
           "| measure | " + " | ".join(f"{n} services" for n in counts) + " | per service at "
           + " / ".join(str(n) for n in counts) + " |",
           "| --- | " + " | ".join("---" for _ in counts) + " | --- |"]
    for key, label, unit, _ in SCALE:
        values = [med(s, f"scale.{key}.{n}") for n in counts]
        if all(v is None for v in values):
            continue
        scale = 1000 if unit == "ms" else 1
        shown = ["n/a" if v is None else f"{v * scale:.3g}" for v in values]
        per = ["n/a" if v is None else f"{v * scale / n:.3g}" for v, n in zip(values, counts)]
        out.append(f"| {label} ({unit}) | " + " | ".join(shown) + " | " + " / ".join(per) + " |")
    out.append("")
    return out


def _draw_scale(axes, s: dict, counts: list[int]) -> None:
    """Cost per service (measure / services) against the count: a line that rises would
    be worse than linear."""
    groups = [("per service: start and stop (ms)", [("start", 1000), ("stop", 1000)]),
              ("per service: PSS (KB) and `list` (ms)", [("pss", 1024), ("list", 1000)]),
              ("per service: runner CPU (ms per s)", [("cpu_tick", 1), ("cpu_sleep", 1)])]
    labels = {k: label for k, label, _, _ in SCALE}
    for ax, (title, keys) in zip(axes, groups):
        for key, unit_scale in keys:
            xs, ys = [], []
            for n in counts:
                v = med(s, f"scale.{key}.{n}")
                if v is not None:
                    xs.append(n)
                    ys.append(v * unit_scale / n)
            ax.plot(xs, ys, marker="o", label=labels[key])
        ax.set_xscale("log")
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.set_xlabel("services")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)


def draw_chart(s: dict, path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [
        ("log throughput (M lines/s, higher is better)", [
            ("bare PTY\ndrain", "log.bare_pty"), ("entrypoint\nPTY", "log.entrypoint_pty"),
            ("bare PTY\nforward", "log.forward_pty"), ("relay\npipes", "log.relay"),
            ("bare pipe\nforward", "log.forward_pipe"), ("entrypoint\npipes", "log.entrypoint_pipe"),
            ("supervisord\nunprefixed", "log.supervisord"), ("honcho", "log.honcho")], 1),
        ("start of 50 services (ms)", [
            ("bare\nposix_spawn", "start.bare_posix_spawn"), ("relay", "start.relay"),
            ("entrypoint", "start.entrypoint"), ("entrypoint\nunchecked", "start.entrypoint_unchecked"),
            ("honcho", "start.honcho"), ("supervisord", "start.supervisord")], 1000),
        ("shutdown of 50 services (ms, log scale)", [
            ("bare", "stop.bare_posix_spawn"), ("relay", "stop.relay"), ("entrypoint", "stop.entrypoint"),
            ("honcho", "stop.honcho"), ("supervisord", "stop.supervisord")], 1000),
        ("runner PSS with 50 services (MB)", [
            ("bare\npython", "pss.bare_python"), ("relay", "pss.relay"), ("entrypoint", "pss.entrypoint"),
            ("supervisord", "pss.supervisord"), ("honcho", "pss.honcho"),
            ("honcho +\nhelpers", "pss_tree.honcho")], 1),
        ("idle wake-ups per s (10 services)", [
            ("entrypoint", "idle_wakeups.entrypoint"), ("supervisord", "idle_wakeups.supervisord"),
            ("honcho", "idle_wakeups.honcho")], 1),
        ("status query (ms)", [
            ("entrypoint\nlist", "list.entrypoint"), ("supervisorctl\nstatus", "list.supervisord")], 1000),
    ]
    colors = {"entrypoint": "#1f77b4", "bare": "#7f7f7f", "supervisord": "#ff7f0e",
              "honcho": "#2ca02c", "relay": "#8c564b"}
    counts = scale_counts(s)
    fig, axes = plt.subplots(3 if counts else 2, 3, figsize=(15, 12.5 if counts else 8.5))
    for ax, (title, bars, scale) in zip(axes.flat, panels):
        labels, values, cols = [], [], []
        for label, key in bars:
            v = med(s, key)
            if v is None:
                continue
            labels.append(label)
            values.append(v * scale)
            cols.append(next((c for k, c in colors.items() if key.split(".", 1)[1].startswith(k)
                              or label.startswith(k)), "#9467bd"))
        ax.bar(range(len(values)), values, color=cols)
        ax.set_xticks(range(len(values)), labels, fontsize=7 if len(values) > 5 else 8)
        ax.set_title(title, fontsize=10)
        if "log scale" in title and values and min(values) > 0:
            ax.set_yscale("log")
        for i, v in enumerate(values):
            ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=8)
    if counts:
        _draw_scale(axes[2], s, counts)
    fig.suptitle("entrypoint vs the relay, supervisord and honcho (medians; scripts/bench.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- main

def main() -> int:
    if "--web" in sys.argv[1:]:     # the HTTP face vs supervisord's XML-RPC (issue 9)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_web
        return bench_web.main([a for a in sys.argv[1:] if a != "--web"])
    if "--jobs" in sys.argv[1:]:    # the job scheduler vs a bare cron-like loop (issue 10)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_jobs
        return bench_jobs.main([a for a in sys.argv[1:] if a != "--jobs"])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 round, 50,000 lines, 3 s idle")
    p.add_argument("--rounds", type=int, help="rounds (default 5; 1 with --quick)")
    p.add_argument("--lines", type=int, help="lines per service (default 200000; 50000 quick)")
    p.add_argument("--services", type=int, default=50)
    p.add_argument("--idle", type=float, help="idle seconds (default 10; 3 with --quick)")
    p.add_argument("--list-runs", type=int, help="status queries per runner (15; 5 quick)")
    p.add_argument("--honcho-log-rounds", type=int, default=2)
    p.add_argument("--supervisord-stop-rounds", type=int, default=2)
    p.add_argument("--only", default="log,services,idle,init,scale",
                   help="measurement groups to run: log, services, idle, init, scale (default: all)")
    p.add_argument("--init-runs", type=int, help="plain-init starts of each (40; 15 quick)")
    p.add_argument("--tools", default=",".join(TOOLS),
                   help="runners to measure (default: entrypoint,supervisord,honcho)")
    p.add_argument("--no-report", action="store_true",
                   help="print the samples; do not write docs/benchmarks.*")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--out", type=Path, default=ROOT / "docs",
                   help="where benchmarks.md/.png/.json go (default docs/)")
    p.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--readiness", action="store_true",
                   help="measure READY=1 to a dependent's start instead (scripts/bench_ready.py; "
                        "no venv needed): its section of docs/benchmarks.md")
    args, rest = p.parse_known_args()
    if args.readiness:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_ready import main as readiness_main
        return readiness_main(rest + (["--no-report"] if args.no_report else []))
    args = p.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.lines = args.lines or (50_000 if args.quick else 200_000)
    args.idle = args.idle or (3.0 if args.quick else 10.0)
    args.list_runs = args.list_runs or (5 if args.quick else 15)
    args.init_runs = args.init_runs or (15 if args.quick else 40)
    if args.quick:
        args.honcho_log_rounds = min(args.honcho_log_rounds, 1)
        args.supervisord_stop_rounds = min(args.supervisord_stop_rounds, 1)

    if not args.in_venv:
        python = ensure_venv(args.venv.resolve())
        os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:],
                               "--in-venv"])

    become_subreaper()
    atexit.register(kill_everything)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    args.only = set(args.only.split(","))
    args.tools = [t for t in TOOLS if t in args.tools.split(",")]
    result = run(args)
    if args.no_report:
        for key, values in sorted(result["samples"].items()):
            print(f"{key:32s} median {statistics.median(values):.6g}  {values}")
        print(json.dumps(result["checks"]))
        return 0
    write_report(result, args.out)
    print(f"bench: wrote {args.out / 'benchmarks.md'} in {result['elapsed']:.0f}s",
          file=sys.stderr)
    print((args.out / "benchmarks.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
