"""entrypoint as a drop-in init: the behaviours tini's and dumb-init's own suites check.

Every test runs over the init under test: entrypoint (no config: the plain init), and
tini and dumb-init as references (skipped when not installed), so that a passing test
shows entrypoint does what its peers do. Where a peer differs, its case is an xfail
with the reason, strict: the difference is shown, not hidden. Processes are real; every
one carries a token in its environment and is SIGKILLed at the end (the `tagged`
fixture), whatever the outcome.
"""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import subprocess
import sys
import termios
import textwrap

import pytest

from conftest import PYTHON, ROOT, wait_until

pytestmark = pytest.mark.timeout(60)

TINI, DUMB_INIT = "/usr/bin/tini", "/usr/bin/dumb-init"
INITS = {
    "entrypoint": [PYTHON, "-m", "entrypoint", "--"],
    "tini": [TINI, "-s", "--"],          # -s: subreaper when not PID 1, as entrypoint is
    "dumb-init": [DUMB_INIT, "--"],
}
SYNCHRONOUS = {signal.SIGILL, signal.SIGTRAP, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE,
               signal.SIGSEGV, signal.SIGSYS}
FORWARDED = [signal.SIGILL, signal.SIGTRAP, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE,
             signal.SIGSEGV, signal.SIGSYS, signal.SIGPIPE, signal.SIGSTKFLT, signal.SIGXCPU,
             signal.SIGXFSZ, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGWINCH,
             signal.SIGURG, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO, signal.SIGPWR,
             signal.SIGCONT, signal.SIGRTMIN, signal.SIGRTMIN + 3, signal.SIGRTMAX,
             signal.SIGHUP]     # with no config entrypoint has nothing to reload: the CMD's
JOB_CONTROL = [signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU]


def signame(sig: int) -> str:
    if signal.SIGRTMIN <= sig <= signal.SIGRTMAX:
        return "SIGRTMAX" if sig == signal.SIGRTMAX else f"SIGRTMIN+{sig - signal.SIGRTMIN}"
    return signal.Signals(sig).name


def cases(signals_, differs=lambda init, sig: None):
    """(init, sig) params; `differs(init, sig)` names why a peer is known to behave
    otherwise there (a strict xfail), or None."""
    params = []
    for init in INITS:
        for sig in signals_:
            reason = differs(init, sig)
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            params.append(pytest.param(init, sig, marks=marks, id=f"{init}-{signame(sig)}"))
    return params


def inits(**differences: str):
    """The inits as params; `differences` maps a peer (dumb_init for dumb-init) to why it
    is known to behave otherwise (a strict xfail)."""
    params = []
    for init in INITS:
        reason = differences.get(init.replace("-", "_"))
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        params.append(pytest.param(init, marks=marks, id=init))
    return params


@pytest.fixture
def init_argv(request):
    """The argv prefix of the init under test (the test's `init` parameter)."""
    name = request.node.callspec.params["init"]
    argv = INITS[name]
    if not os.path.exists(argv[0]):
        pytest.skip(f"{name} is not installed")
    return argv


CATCHER = """
import os, signal, sys
# Notes every signal it gets in a file; exits on SIGTERM (0), SIGINT (2) and SIGQUIT (3).
# argv[2]: signals to leave at their default (comma-separated numbers); argv[3] "stay":
# exit on none of them.
out = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
keep = {int(s) for s in sys.argv[2].split(",") if s} if len(sys.argv) > 2 else set()
stay = sys.argv[3:] == ["stay"]

def note(text):
    os.write(out, (text + "\\n").encode())

def handler(sig, frame):
    note(f"got {sig}")
    if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT) and not stay:
        os._exit(0 if sig == signal.SIGTERM else int(sig))

for sig in signal.valid_signals():
    if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD) or sig in keep:
        continue
    signal.signal(sig, handler)
note(f"ready {os.getpid()}")
while True:
    signal.pause()
"""


def program(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def lines_of(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def state_of(pid: int) -> str:
    """The process state letter from /proc (R, S, T, Z, ...), "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


class Started:
    """An init running a catcher CMD, until the catcher said it is ready."""

    def __init__(self, init_argv, env, tmp_path, keep_default=(), stay=False):
        self.notes = str(tmp_path / "notes")
        catcher = program(tmp_path, "catcher.py", CATCHER)
        argv = [*init_argv, PYTHON, catcher, self.notes, ",".join(map(str, keep_default)),
                *(["stay"] if stay else [])]
        self.proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, start_new_session=True)
        ready = wait_until(lambda: [x for x in lines_of(self.notes) if x.startswith("ready")],
                           what="the CMD's handlers")
        self.cmd_pid = int(ready[0].split()[1])

    def got(self, sig: int) -> bool:
        return f"got {int(sig)}" in lines_of(self.notes)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


# -- signal forwarding ---------------------------------------------------------------------

def _tini_sync(init, sig):
    if init == "tini" and sig in SYNCHRONOUS:
        return "tini leaves the synchronous signals unblocked: sent from outside, they kill it"
    return None


@pytest.mark.parametrize("init, sig", cases(FORWARDED, _tini_sync))
def test_signal_reaches_the_cmd(init, init_argv, tagged, tmp_path, sig):
    started = Started(init_argv, tagged, tmp_path)
    started.proc.send_signal(sig)
    wait_until(lambda: started.got(sig) or started.proc.poll() is not None,
               what=f"the CMD getting {signame(sig)}")
    assert started.proc.poll() is None, "the init itself ended"
    assert started.got(sig)
    assert started.stop() == 0
    assert started.got(signal.SIGTERM)


@pytest.mark.parametrize("init, sig", cases([signal.SIGTERM, signal.SIGINT, signal.SIGQUIT]))
def test_shutdown_signal_reaches_the_cmd_and_its_status_is_ours(init, init_argv, tagged,
                                                               tmp_path, sig):
    started = Started(init_argv, tagged, tmp_path)
    started.proc.send_signal(sig)
    # The catcher exits 0 on TERM, 2 on INT, 3 on QUIT: that status is the init's.
    assert started.proc.wait(20) == (0 if sig == signal.SIGTERM else int(sig))
    assert started.got(sig)


def _tini_ttin_ttou(init, sig):
    if init == "tini" and sig in (signal.SIGTTIN, signal.SIGTTOU):
        return "tini ignores TTIN and TTOU itself: they never reach the CMD"
    return None


@pytest.mark.parametrize("init, sig", cases(JOB_CONTROL, _tini_ttin_ttou))
def test_job_control_stops_the_cmd_and_cont_resumes_it(init, init_argv, tagged, tmp_path, sig):
    started = Started(init_argv, tagged, tmp_path,
                      keep_default=(*JOB_CONTROL, signal.SIGCONT))
    started.proc.send_signal(sig)
    wait_until(lambda: state_of(started.cmd_pid) == "T", timeout=5, what="the CMD stopped")

    def resumed() -> bool:
        # Sent until it works: dumb-init stops itself just after passing the signal on,
        # and a CONT that comes before that is spent on it.
        started.proc.send_signal(signal.SIGCONT)
        return state_of(started.cmd_pid) not in ("T", "")

    wait_until(resumed, timeout=5, what="the CMD resumed")

    def init_running() -> bool:
        # dumb-init's own stop can also come after the CONT that resumed the CMD: a stopped
        # init would hold the TERM of stop() below. Never the case for entrypoint or tini.
        if state_of(started.proc.pid) == "T":
            started.proc.send_signal(signal.SIGCONT)
            return False
        return True

    wait_until(init_running, timeout=5, what="the init running")
    assert started.stop() == 0


def _dumb_init_stops(init, sig):
    if init == "dumb-init":
        return "dumb-init stops itself after passing on TSTP, TTIN or TTOU"
    return None


@pytest.mark.parametrize("init, sig", cases(JOB_CONTROL, _dumb_init_stops))
def test_job_control_signal_does_not_stop_the_init(init, init_argv, tagged, tmp_path, sig):
    started = Started(init_argv, tagged, tmp_path)
    started.proc.send_signal(sig)
    # A stopped init forwards nothing more: that USR1 still arrives shows it runs on.
    started.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: started.got(signal.SIGUSR1), timeout=3, what="the CMD getting SIGUSR1")
    assert state_of(started.proc.pid) != "T"
    assert started.stop() == 0


# -- exit status ---------------------------------------------------------------------------

@pytest.mark.parametrize("script, status", [
    ("exit 0", 0), ("exit 3", 3), ("exit 255", 255),
    ("kill -KILL $$", 128 + signal.SIGKILL), ("kill -SEGV $$", 128 + signal.SIGSEGV),
    ("kill -TERM $$", 128 + signal.SIGTERM),
], ids=["exit-0", "exit-3", "exit-255", "killed-KILL", "killed-SEGV", "killed-TERM"])
@pytest.mark.parametrize("init", inits())
def test_exit_status_is_the_cmds(init, init_argv, tagged, tmp_path, script, status):
    done = subprocess.run([*init_argv, "/bin/sh", "-c", script], cwd=tmp_path, env=tagged,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    assert done.returncode == status, done.stderr


# -- zombies, as PID 1 ---------------------------------------------------------------------

ORPHANS = """
import os, sys, time
# Leave orphans that exit at once: re-parented to PID 1, they stay zombies unless it reaps.
assert os.getpid() != 1 and os.getppid() == 1, "not run by a PID 1"
for _ in range(20):
    if os.fork() == 0:
        if os.fork() == 0:
            os._exit(0)
        os._exit(0)
    os.wait()

def zombies():
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        found.append(int(entry))
            except OSError:
                pass
    return found

deadline = time.monotonic() + 5
while zombies() and time.monotonic() < deadline:
    time.sleep(0.02)
left = zombies()
print("zombies left:", left)
sys.exit(1 if left else 0)
"""


@pytest.mark.parametrize("init", inits())
def test_pid1_reaps_orphaned_zombies(init, init_argv, tagged, tmp_path):
    orphans = program(tmp_path, "orphans.py", ORPHANS)
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", *init_argv,
                           PYTHON, orphans], cwd=tmp_path, env=tagged, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30, start_new_session=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "zombies left: []" in done.stdout


# -- what the CMD inherits -----------------------------------------------------------------

def _started_with(init_argv, env, tmp_path, *, ignore=(), block=()):
    """Run the init from a parent that ignores `ignore` and blocks `block`; return what its
    CMD ignores and blocks."""

    def prepare():
        for sig in ignore:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, block)

    # grep, not Python, as the CMD: CPython would ignore PIPE and XFSZ itself.
    done = subprocess.run([*init_argv, "grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"],
                          cwd=tmp_path, env=env, timeout=20, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, preexec_fn=prepare, check=True)
    fields = dict(line.split(":\t", 1) for line in done.stdout.splitlines())

    def numbers(mask: str) -> list[int]:
        value = int(mask, 16)
        return [n + 1 for n in range(64) if value >> n & 1]

    ignored, blocked = numbers(fields["SigIgn"]), numbers(fields["SigBlk"])
    return set(ignored), set(blocked)


@pytest.mark.parametrize("init", inits(dumb_init="dumb-init resets every disposition in the CMD"))
def test_cmd_inherits_ignored_dispositions(init, init_argv, tagged, tmp_path):
    ignored, _ = _started_with(init_argv, tagged, tmp_path,
                               ignore=(signal.SIGINT, signal.SIGTTOU, signal.SIGUSR2))
    # Exactly these: nothing the init ignores for itself (PIPE and XFSZ in CPython) leaks.
    assert ignored == {signal.SIGINT, signal.SIGTTOU, signal.SIGUSR2}


@pytest.mark.parametrize("init", inits())
def test_cmd_gets_default_dispositions_otherwise(init, init_argv, tagged, tmp_path):
    ignored, blocked = _started_with(init_argv, tagged, tmp_path)
    assert ignored == set() and blocked == set()


@pytest.mark.parametrize("init", inits(dumb_init="dumb-init unblocks every signal in the CMD"))
def test_cmd_inherits_the_signal_mask(init, init_argv, tagged, tmp_path):
    _, blocked = _started_with(init_argv, tagged, tmp_path, block=(signal.SIGUSR1, signal.SIGWINCH))
    assert blocked == {signal.SIGUSR1, signal.SIGWINCH}


# -- process group and terminal ------------------------------------------------------------

SHOW_GROUP = """
import os, sys
try:
    foreground = os.tcgetpgrp(0)
except OSError:
    foreground = None
with open(sys.argv[1], "w") as f:
    f.write(repr((os.getpid(), os.getpgrp(), os.getsid(0), foreground)))
"""


@pytest.mark.parametrize("init", inits())
def test_cmd_leads_its_own_group_and_owns_the_terminal(init, init_argv, tagged, tmp_path):
    """As `docker run -it`: the init has the terminal as its controlling tty; the CMD is
    put in a process group of its own, and that group is the terminal's foreground."""
    show = program(tmp_path, "group.py", SHOW_GROUP)
    out = str(tmp_path / "group")
    master, slave = pty.openpty()

    def controlling_tty():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        proc = subprocess.Popen([*init_argv, PYTHON, show, out], cwd=tmp_path, env=tagged,
                                stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                preexec_fn=controlling_tty)
        os.close(slave)
        slave = None
        try:
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    with open(out) as f:
        pid, pgrp, sid, foreground = eval(f.read())
    assert pgrp == pid, "the CMD leads a process group of its own"
    assert pgrp != os.getpgid(0) and pgrp != proc.pid
    assert foreground == pgrp, "the CMD's group is the terminal's foreground group"


# -- stdio closed --------------------------------------------------------------------------

SHOW_FDS = """
import os, sys
# Which of fds 0, 1, 2 are open, looked at before this script opens anything.
open_fds = [os.path.exists(f"/proc/self/fd/{fd}") for fd in range(3)]
with open(sys.argv[1], "w") as f:
    f.write(repr(open_fds))
sys.exit(5)
"""


def _closing_stdio():
    for fd in (0, 1, 2):
        os.close(fd)


@pytest.mark.parametrize("init", inits(tini="tini exits 1: tcsetpgrp on a closed stdin is fatal"))
def test_runs_with_stdio_closed_and_passes_it_on_closed(init, init_argv, tagged, tmp_path):
    show = program(tmp_path, "fds.py", SHOW_FDS)
    out = str(tmp_path / "fds")
    proc = subprocess.Popen([*init_argv, PYTHON, show, out], cwd=tmp_path, env=tagged,
                            preexec_fn=_closing_stdio, start_new_session=True)
    try:
        assert proc.wait(20) == 5
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with open(out) as f:
        assert f.read() == "[False, False, False]"


# -- entrypoint with services: the runner does the same -------------------------------------

SERVICE = """
[[services]]
name = "svc"
command = "sleep 60"
"""


def _runner(tagged, tmp_path, cmd, **kwargs):
    config = tmp_path / "services.toml"
    config.write_text(SERVICE)
    return subprocess.Popen([PYTHON, "-m", "entrypoint", "-c", str(config), "--", *cmd],
                            cwd=tmp_path, env=tagged, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, **kwargs)


@pytest.mark.parametrize("sig", [*sorted(SYNCHRONOUS), signal.SIGPIPE, signal.SIGSTKFLT,
                                 signal.SIGXCPU, signal.SIGXFSZ, signal.SIGTSTP,
                                 signal.SIGTTIN, signal.SIGTTOU], ids=signame)
def test_runner_with_services_forwards_it_too(tagged, tmp_path, sig):
    notes = str(tmp_path / "notes")
    proc = _runner(tagged, tmp_path, [PYTHON, program(tmp_path, "catcher.py", CATCHER), notes])
    try:
        wait_until(lambda: any(x.startswith("ready") for x in lines_of(notes)),
                   what="the CMD's handlers")
        proc.send_signal(sig)
        wait_until(lambda: f"got {int(sig)}" in lines_of(notes) or proc.poll() is not None,
                   what=f"the CMD getting {signame(sig)}")
        assert proc.poll() is None, "the runner itself ended"
        assert f"got {int(sig)}" in lines_of(notes)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_runner_with_services_passes_on_ignored_dispositions(tagged, tmp_path):
    def prepare():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)

    out = tmp_path / "status"
    proc = _runner(tagged, tmp_path, ["/bin/sh", "-c", f"exec grep -E '^SigIgn:' /proc/self/status > {out}"],
                   preexec_fn=prepare)
    try:
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    mask = int(out.read_text().split()[1], 16)
    assert {n + 1 for n in range(64) if mask >> n & 1} == {signal.SIGINT, signal.SIGTTOU}


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGALRM], ids=signame)
def test_early_signal_during_validation_does_not_kill_the_runner(tagged, tmp_path, sig):
    """The config is a FIFO: its validation waits, provably, until we write it."""
    fifo = str(tmp_path / "services.toml")
    os.mkfifo(fifo)
    proc = subprocess.Popen([PYTHON, "-m", "entrypoint", "-c", fifo, "--", "true"], cwd=tmp_path,
                            env=tagged, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        with open(fifo, "w") as f:      # returns once the validation opened it
            proc.send_signal(sig)
            f.write(SERVICE)
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_runner_with_services_runs_with_stdio_closed(tagged, tmp_path):
    show = program(tmp_path, "fds.py", SHOW_FDS)
    out = str(tmp_path / "fds")
    config = tmp_path / "services.toml"
    config.write_text(SERVICE)
    proc = subprocess.Popen([PYTHON, "-m", "entrypoint", "-c", str(config), "--", PYTHON, show, out],
                            cwd=tmp_path, env=tagged, preexec_fn=_closing_stdio,
                            start_new_session=True)
    try:
        assert proc.wait(30) == 5
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with open(out) as f:
        assert f.read() == "[False, False, False]"


# -- entrypoint's plain init: what tini leaves to the kernel --------------------------------

def test_plain_init_stops_what_the_cmd_left_behind(tagged, tmp_path):
    """A daemon the CMD started (its own session) gets SIGTERM once the CMD has ended;
    entrypoint exits only when no child is left, with the CMD's status."""
    pidfile = tmp_path / "daemon.pid"
    script = f"setsid sleep 60 & echo $! > {pidfile}; exit 4"
    done = subprocess.run([PYTHON, "-m", "entrypoint", "--", "/bin/sh", "-c", script],
                          cwd=tmp_path, env=tagged, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (4, "", "")
    daemon = int(pidfile.read_text())
    assert state_of(daemon) == "", "the daemon outlived entrypoint"


def test_plain_init_second_term_kills_at_once(tagged, tmp_path):
    """The CMD notes SIGTERM and carries on: the first one is passed on, the second kills
    it (no 15 s wait), as the runner does with services (exit 128+9)."""
    started = Started([PYTHON, "-m", "entrypoint", "--"], tagged, tmp_path, stay=True)
    proc = started.proc
    try:
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: started.got(signal.SIGTERM), what="the CMD getting SIGTERM")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 128 + signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
