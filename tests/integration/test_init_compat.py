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
             signal.SIGCONT, signal.SIGRTMIN, signal.SIGRTMIN + 3, signal.SIGRTMAX]
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
# argv[2]: signals to leave at their default (comma-separated numbers).
out = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
keep = {int(s) for s in sys.argv[2].split(",") if s} if len(sys.argv) > 2 else set()

def note(text):
    os.write(out, (text + "\\n").encode())

def handler(sig, frame):
    note(f"got {sig}")
    if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
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

    def __init__(self, init_argv, env, tmp_path, keep_default=()):
        self.notes = str(tmp_path / "notes")
        catcher = program(tmp_path, "catcher.py", CATCHER)
        argv = [*init_argv, PYTHON, catcher, self.notes, ",".join(map(str, keep_default))]
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
    started.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: state_of(started.cmd_pid) not in ("T", ""), timeout=5,
               what="the CMD resumed")
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
