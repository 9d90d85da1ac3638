"""CONTRACT §2 `tty`, §4 sessions and §1 the CMD's stdio, on real processes and real PTYs.

A service runs under a PTY of its own by default (a terminal on 0/1/2, its controlling
terminal, its own session); `tty = false` gives pipes, stdin /dev/null and stderr apart.
The CMD gets entrypoint's stdio as it is, and the terminal's foreground group when
entrypoint's stdin is a terminal.

Every process a test starts carries a unique environment token; the `tagged` fixture
SIGKILLs whatever still carries it at the end, even on failure.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import re
import select
import signal
import subprocess
import termios
import time

import pytest

from conftest import PYTHON, service_lines

pytestmark = pytest.mark.timeout(60)




def script(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# Prints how its stdio and session look from the inside, as key=value words.
INSPECT = r"""
import os, sys
def ctty():
    try:
        os.close(os.open("/dev/tty", os.O_RDWR))
        return True
    except OSError:
        return False
def fg():
    try:
        return os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False
null = os.stat("/dev/null")
st0 = os.fstat(0)
facts = {
    "tty0": os.isatty(0), "tty1": os.isatty(1), "tty2": os.isatty(2),
    "ctty": ctty(), "fg": fg(),
    "leader": os.getsid(0) == os.getpid() and os.getpgrp() == os.getpid(),
    "devnull": (st0.st_dev, st0.st_ino) == (null.st_dev, null.st_ino),
    "sid": os.getsid(0), "pid": os.getpid(),
    # Open fds beyond stdio (the listing's own fd is one): none of the runner's may leak.
    "extra_fds": len(set(map(int, os.listdir("/proc/self/fd"))) - {0, 1, 2}) - 1,
}
print("facts " + " ".join(f"{k}={v}" for k, v in facts.items()), flush=True)
print("to-stderr", file=sys.stderr, flush=True)
"""


def facts_of(line: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in line.split()[1:])


def service_facts(runner, name: str) -> dict[str, str]:
    for line in service_lines(runner, name):
        if line.startswith("facts "):
            return facts_of(line)
    raise AssertionError(f"{name} printed no facts:\n{runner.output}")


# -- services under a PTY, or with pipes ------------------------------------------------

def test_service_has_its_own_pty_as_controlling_terminal(run_entrypoint, write_config, tagged,
                                                         tmp_path):
    inspect = script(tmp_path, "inspect.py", INSPECT)
    cfg = write_config(f"""
        [[services]]
        name = "one"
        command = "{PYTHON}"
        args = ["{inspect}"]
        oneshot = true
        [[services]]
        name = "two"
        command = "{PYTHON}"
        args = ["{inspect}"]
        oneshot = true
    """)
    r = run_entrypoint("-c", cfg, env=tagged)
    assert r.wait() == 0
    one, two = service_facts(r, "one"), service_facts(r, "two")
    for facts in (one, two):
        assert facts["tty0"] == facts["tty1"] == facts["tty2"] == "True", facts
        assert facts["ctty"] == "True", facts       # /dev/tty opens: a controlling terminal
        assert facts["fg"] == "True", facts         # and the service is its foreground group
        assert facts["leader"] == "True", facts     # its own session and process group
        assert facts["devnull"] == "False", facts
        assert facts["extra_fds"] == "0", facts
    assert one["sid"] != two["sid"]                 # a session each
    assert int(one["sid"]) != r.pid and int(two["sid"]) != r.pid
    assert "to-stderr" in service_lines(r, "one")   # stderr is the same terminal


def test_tty_false_gives_pipes_devnull_and_stderr_apart(run_entrypoint, write_config, tagged,
                                                        tmp_path):
    inspect = script(tmp_path, "inspect.py", INSPECT)
    cfg = write_config(f"""
        [[services]]
        name = "piped"
        command = "{PYTHON}"
        args = ["{inspect}"]
        oneshot = true
        tty = false
    """)
    r = run_entrypoint("-c", cfg, "--log-format", "json", env=tagged)
    assert r.wait() == 0
    records = []
    for line in r.lines:
        record = json.loads(line)                     # every line is one JSON object
        assert {"ts", "service", "stream", "line"} <= set(record), record
        records.append(record)
    mine = [(rec["stream"], rec["line"]) for rec in records if rec["service"] == "piped"]
    facts_lines = [text for stream, text in mine if text.startswith("facts ")]
    assert facts_lines and ("stdout", facts_lines[0]) in mine, mine
    facts = facts_of(facts_lines[0])
    assert facts["tty0"] == facts["tty1"] == facts["tty2"] == "False", facts
    assert facts["devnull"] == "True", facts         # stdin is /dev/null
    assert facts["ctty"] == "False", facts           # no controlling terminal at all
    assert facts["leader"] == "True", facts          # still its own session and group
    assert facts["extra_fds"] == "0", facts
    assert ("stderr", "to-stderr") in mine, mine


def test_pty_service_output_is_one_stream(run_entrypoint, write_config, tagged, tmp_path):
    inspect = script(tmp_path, "inspect.py", INSPECT)
    cfg = write_config(f"""
        [[services]]
        name = "termed"
        command = "{PYTHON}"
        args = ["{inspect}"]
        oneshot = true
    """)
    r = run_entrypoint("-c", cfg, "--log-format", "json", env=tagged)
    assert r.wait() == 0
    mine = [json.loads(line) for line in r.lines]
    mine = [(rec["stream"], rec["line"]) for rec in mine if rec["service"] == "termed"]
    # One terminal: what the service wrote to stderr comes back on the PTY's only stream.
    assert ("stdout", "to-stderr") in mine, mine


# -- the CMD ----------------------------------------------------------------------------

CMD_STDIO = r"""
import os, sys
for fd in (0, 1, 2):
    mine = os.readlink(f"/proc/self/fd/{fd}")
    runner = os.readlink(f"/proc/{os.getppid()}/fd/{fd}")
    print(f"fd{fd} same={mine == runner} tty={os.isatty(fd)}", flush=True)
print("extra_fds=%d" % (len(set(map(int, os.listdir("/proc/self/fd"))) - {0, 1, 2}) - 1),
      flush=True)
print("cmd-err", file=sys.stderr, flush=True)
"""


def test_cmd_inherits_entrypoints_stdio_untouched(run_entrypoint, write_config, tagged,
                                                  tmp_path):
    prog = script(tmp_path, "stdio.py", CMD_STDIO)
    cfg = write_config("""
        [[services]]
        name = "svc"
        command = "sleep 60"
    """)
    r = run_entrypoint("-c", cfg, "--", PYTHON, prog, env=tagged)
    assert r.wait() == 0
    # Not prefixed, not under a PTY of ours: the very pipes and /dev/null the runner has.
    for fd in (0, 1, 2):
        assert f"fd{fd} same=True tty=False" in r.lines, r.output
    assert "extra_fds=0" in r.lines              # nothing of the runner's leaks into it
    assert "cmd-err" in r.stderr.splitlines()
    assert "cmd-err" not in r.output


class OnPty:
    """The runner with a real terminal as its controlling terminal and stdio (docker -it)."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.master, slave = pty.openpty()

        def adopt_terminal() -> None:     # after setsid(): the slave becomes our ctty
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        try:
            self.proc = subprocess.Popen([PYTHON, "-m", "entrypoint", *args], env=env,
                                         stdin=slave, stdout=slave, stderr=slave,
                                         start_new_session=True, preexec_fn=adopt_terminal)
        finally:
            os.close(slave)
        self.data = b""

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace").replace("\r\n", "\n")

    def _read(self, timeout: float) -> bool:
        """Read what is there; False at EOF (every slave fd closed)."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return False
            raise
        self.data += chunk
        return bool(chunk)

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match:
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.text)
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 0.2)):
                m = regex.search(self.text)
                if m:
                    return m
                raise AssertionError(f"no {pattern!r} on the terminal within {timeout}s:\n"
                                     f"{self.text}")

    def wait(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        while self._read(0.05):       # the rest of the output, until EOF or silence
            if time.monotonic() > deadline + 2:
                break
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0.2)[0]:
                break
        if self.proc.poll() is None:
            raise AssertionError(f"entrypoint still running after {timeout}s:\n{self.text}")
        return self.proc.returncode

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        os.close(self.master)


@pytest.fixture
def on_pty():
    started: list[OnPty] = []

    def start(args: list[str], env: dict[str, str]) -> OnPty:
        runner = OnPty(args, env)
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.close()


def test_cmd_is_the_terminals_foreground_group(on_pty, write_config, tagged):
    cfg = write_config("""
        [[services]]
        name = "svc"
        command = "sleep 60"
    """)
    prog = ("import os; print('cmd fg=%s own=%s tty=%s' % (os.tcgetpgrp(0) == os.getpgrp(), "
            "os.getpgrp() == os.getpid(), os.isatty(0) and os.isatty(1)), flush=True)")
    t = on_pty(["-c", cfg, "--", PYTHON, "-c", prog], tagged)
    assert t.wait() == 0
    assert re.search(r"^cmd fg=True own=True tty=True$", t.text, re.M), t.text
    assert re.search(r"entrypoint \| svc stopped", t.text), t.text


def test_ctrl_c_on_the_terminal_goes_to_the_cmd(on_pty, write_config, tagged, tmp_path):
    prog = script(tmp_path, "ctrlc.py", (
        "import signal, sys, time\n"
        "def on_int(*_):\n"
        "    print('cmd got SIGINT', flush=True); sys.exit(3)\n"
        "signal.signal(signal.SIGINT, on_int)\n"
        "print('cmd ready', flush=True)\n"
        "time.sleep(30)\n"
        "print('cmd timed out', flush=True)\n"))
    cfg = write_config("""
        [[services]]
        name = "svc"
        command = "sleep 60"
    """)
    t = on_pty(["-c", cfg, "--", PYTHON, "-u", prog], tagged)
    t.wait_for(r"^cmd ready")
    os.write(t.master, b"\x03")               # the terminal's interrupt character
    assert t.wait() == 3                      # the CMD's status: it got the SIGINT ...
    assert "cmd got SIGINT" in t.text
    assert "SIGINT received" not in t.text    # ... and the runner, not in the foreground, did not
