"""CONTRACT §6 signals on real processes: forwarding to the CMD, the CMD stops first, every
shutdown signal is graceful, `stop_signal`, and stop signals reach the whole process group.

Every process a test starts carries a unique environment token; the `tagged` fixture
SIGKILLs whatever still carries it at the end, even on failure.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from conftest import PYTHON, index_of, service_lines

pytestmark = pytest.mark.timeout(60)




def gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")



def script(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# A process that prints the name of each signal it gets, and exits 0 after `N` of them.
REPORTER = r"""
import os, signal, sys, time
label, wanted = sys.argv[1], int(sys.argv[2])
got = []
def name(sig):
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"SIGRTMIN+{sig - signal.SIGRTMIN}"
def handler(sig, _frame):
    print(f"{label} got {name(sig)}", flush=True)
    got.append(sig)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
          signal.SIGUSR2, signal.SIGALRM, signal.SIGWINCH, signal.SIGPWR, signal.SIGURG,
          signal.SIGCONT, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO, signal.SIGRTMIN + 3):
    signal.signal(s, handler)
print(f"{label} ready pid={os.getpid()}", flush=True)
while len(got) < wanted:
    time.sleep(0.05)
sys.exit(0)
"""

SLEEPER = """
[[services]]
name = "svc"
command = "sleep 60"
"""


# -- forwarding to the CMD -------------------------------------------------------------

def test_usr1_and_usr2_are_forwarded_to_the_cmd(run_entrypoint, write_config, tagged, tmp_path):
    reporter = script(tmp_path, "reporter.py", REPORTER)
    cfg = write_config(SLEEPER)
    r = run_entrypoint("-c", cfg, "--", PYTHON, "-u", reporter, "cmd", "2", env=tagged)
    r.wait_for(r"^cmd ready")
    r.signal(signal.SIGUSR1)
    r.wait_for(r"^cmd got SIGUSR1$")
    r.signal(signal.SIGUSR2)
    r.wait_for(r"^cmd got SIGUSR2$")
    assert r.wait() == 0
    assert not any("shutting down" in line for line in r.lines)
    r.wait_for(r"svc stopped")


# Catchable signals that are neither a shutdown signal nor SIGHUP, nor job control.
# SIGRTMIN+3 is what `docker kill -s` / systemd-style tooling sends to ask for a halt.
OTHER_SIGNALS = [signal.SIGALRM, signal.SIGWINCH, signal.SIGPWR, signal.SIGURG, signal.SIGCONT,
                 signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO, signal.SIGRTMIN + 3]


def signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"SIGRTMIN+{sig - signal.SIGRTMIN}"


@pytest.mark.parametrize("sig", OTHER_SIGNALS, ids=signame)
def test_other_signals_go_to_the_cmd(run_entrypoint, write_config, tagged, tmp_path, sig):
    """CONTRACT §6: with a CMD, signals other than TERM/INT/QUIT/HUP go to the CMD."""
    reporter = script(tmp_path, "reporter.py", REPORTER)
    cfg = write_config(SLEEPER)
    r = run_entrypoint("-c", cfg, "--", PYTHON, "-u", reporter, "cmd", "1", env=tagged)
    r.wait_for(r"^cmd ready")
    r.signal(sig)
    r.wait_for(rf"^cmd got {re.escape(signame(sig))}$")
    assert r.wait() == 0


@pytest.mark.parametrize("sig", OTHER_SIGNALS, ids=signame)
def test_other_signals_without_cmd_do_not_kill_the_runner(run_entrypoint, write_config,
                                                          tagged, sig):
    cfg = write_config(SLEEPER)
    r = run_entrypoint("-c", cfg, env=tagged)
    r.wait_for(r"svc: started")
    r.signal(sig)
    r.signal(signal.SIGUSR2)                 # a no-op; then ask for a normal shutdown
    r.signal(signal.SIGTERM)
    assert r.wait() == 0, r.output
    r.wait_for(r"SIGTERM received")


def test_usr1_usr2_without_cmd_do_not_kill_the_runner(run_entrypoint, write_config, tagged):
    # PID 1 has no default dispositions, and not as PID 1 the default would kill us.
    cfg = write_config(SLEEPER)
    r = run_entrypoint("-c", cfg, env=tagged)
    r.wait_for(r"svc: started")
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR2):
        r.signal(sig)
    time.sleep(0.5)   # a signal's default action would have ended the runner by now
    assert r.proc.poll() is None, r.output
    r.signal(signal.SIGTERM)
    assert r.wait() == 0


@pytest.mark.parametrize("on_term, expected", [
    ("exit", 0),        # the CMD exits 0 on SIGTERM: our status is 0
    ("die", 143),       # the CMD dies of SIGTERM: 128 + 15
])
def test_sigterm_with_cmd_stops_the_cmd_first(run_entrypoint, write_config, tagged, tmp_path,
                                              on_term, expected):
    cmd = script(tmp_path, "cmd.py", (
        "import os, signal, sys, time\n"
        "def term(*_):\n"
        "    print('cmd got SIGTERM', flush=True)\n"
        f"    if {on_term == 'die'}:\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_DFL); os.kill(os.getpid(), signal.SIGTERM)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "print('cmd ready', flush=True)\n"
        "while True: time.sleep(1)\n"))
    reporter = script(tmp_path, "reporter.py", REPORTER)
    cfg = write_config(f"""
        [[services]]
        name = "svc"
        command = "{PYTHON}"
        args = ["-u", "{reporter}", "svc", "1"]
    """)
    r = run_entrypoint("-c", cfg, "--", PYTHON, "-u", cmd, env=tagged)
    r.wait_for(r"^cmd ready")
    r.wait_for(r"svc +\| svc ready")     # "started" gates the CMD before svc's handlers exist
    r.signal(signal.SIGTERM)
    assert r.wait() == expected
    lines = r.lines
    # The CMD's own output goes straight to our stdout, the service's through the runner:
    # "cmd got SIGTERM" is written before the CMD exits, and the service is signalled only
    # after that exit, so the order in the stream is the order of events.
    assert index_of(lines, r"^cmd got SIGTERM$") < index_of(lines, r"svc +\| svc got SIGTERM")
    assert index_of(lines, r"^cmd got SIGTERM$") < index_of(lines, r"svc stopped")
    assert service_lines(r, "svc")[-1] == "svc got SIGTERM"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_shutdown_signals_are_graceful(run_entrypoint, write_config, tagged, tmp_path, sig):
    reporter = script(tmp_path, "reporter.py", REPORTER)
    cfg = write_config(f"""
        [[services]]
        name = "a"
        command = "{PYTHON}"
        args = ["-u", "{reporter}", "a", "1"]
        [[services]]
        name = "b"
        command = "sleep 60"
        depends_on = "a"
    """)
    r = run_entrypoint("-c", cfg, env=tagged)
    r.wait_for(r"a +\| a ready")
    r.wait_for(r"b: started")
    r.signal(sig)
    assert r.wait() == 0
    lines = r.lines
    index_of(lines, rf"{signal.Signals(sig).name} received: shutting down")
    # The services get their stop signal (TERM), whatever signal started the shutdown.
    assert service_lines(r, "a")[-1] == "a got SIGTERM"
    assert index_of(lines, r"b stopped") < index_of(lines, r"a stopped \(exit status 0\)")


@pytest.mark.parametrize("stop_signal", ["INT", "QUIT", "HUP", "USR1"])
def test_stop_signal_is_what_the_service_receives(run_entrypoint, write_config, tagged,
                                                  tmp_path, stop_signal):
    reporter = script(tmp_path, "reporter.py", REPORTER)
    cfg = write_config(f"""
        [[services]]
        name = "svc"
        command = "{PYTHON}"
        args = ["-u", "{reporter}", "svc", "1"]
        stop_signal = "{stop_signal}"
    """)
    r = run_entrypoint("-c", cfg, env=tagged)
    r.wait_for(r"svc +\| svc ready")
    r.signal(signal.SIGTERM)
    assert r.wait() == 0
    assert service_lines(r, "svc")[1:] == [f"svc got SIG{stop_signal}"]
    r.wait_for(r"svc stopped \(exit status 0\)")


@pytest.mark.parametrize("tty", [True, False])
def test_stop_signals_the_whole_process_group(run_entrypoint, write_config, tagged, tty):
    cfg = write_config(f"""
        [[services]]
        name = "parent"
        command = "sh"
        args = ["-c", "sleep 1000 & echo child=$!; wait"]
        tty = {str(tty).lower()}
    """)
    r = run_entrypoint("-c", cfg, env=tagged)
    child = int(r.wait_for(r"parent +\| child=(\d+)").group(1))
    parent = int(r.wait_for(r"parent: started \(pid (\d+)\)").group(1))
    assert os.getpgid(child) == parent          # same group as the service, not escaped
    r.signal(signal.SIGTERM)
    assert r.wait() == 0
    assert gone(child)
    # The stop signal got it, not the final sweep.
    assert not any("leftover" in line for line in r.lines), r.output
