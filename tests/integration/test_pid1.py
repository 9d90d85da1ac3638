"""CONTRACT §6 (and §4, §7) on real processes: entrypoint as PID 1 of a PID namespace, and
as a child subreaper when it is not PID 1.

As PID 1 the runner is started under `unshare --pid --fork --mount-proc`: `Runner.pid` is
then the `unshare` process, and the runner itself is its only child (host pid found through
/proc/<unshare>/task/*/children). Every process a test starts carries a unique environment
token; the `tagged` fixture SIGKILLs whatever still carries it at the end, even on failure.
"""

from __future__ import annotations

import glob
import os
import signal
import time

import pytest

from conftest import PYTHON, index_of, pid_alive, service_lines, wait_until

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]

pytestmark = pytest.mark.timeout(60)


def _can_unshare() -> bool:
    import subprocess
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


needs_pidns = pytest.mark.skipif(not _can_unshare(), reason="cannot create a PID namespace here")


# -- helpers ----------------------------------------------------------------------------





def children_of(pid: int) -> list[int]:
    out = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def ns_init(runner) -> int:
    """Host pid of the runner that is PID 1 in the namespace (the child of `unshare`)."""
    return wait_until(lambda: (children_of(runner.pid) or [None])[0], timeout=10,
                      what="the namespace's PID 1")


def host_pid(init_host_pid: int, ns_pid: int) -> int | None:
    """Host pid of the process known as `ns_pid` in the PID namespace of `init_host_pid`."""
    ns = os.readlink(f"/proc/{init_host_pid}/ns/pid")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                continue
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("NSpid:"):
                        if int(line.split()[-1]) == ns_pid:
                            return int(entry)
                        break
        except (OSError, ValueError):
            continue
    return None


def gone(pid: int) -> bool:
    """The process no longer exists at all: exited AND reaped (a zombie still has /proc)."""
    return not os.path.exists(f"/proc/{pid}")


def ppid_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])



def script(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def escaping_service(tmp_path, on_term: str) -> tuple[str, "os.PathLike"]:
    """A [[services]] entry whose child escapes its session and group with setsid.

    The daemon runs `on_term` on SIGTERM (sh trap syntax) and touches the returned `ready`
    file once its trap is set; the service prints `escaped=PID` (its own pid namespace's).
    """
    ready = tmp_path / "daemon-ready"
    daemon = script(tmp_path, "daemon.sh", (
        f"trap '{on_term}' TERM\n"
        f"touch {ready}\n"
        "while :; do sleep 0.1; done\n"))
    return (f"""
        [[services]]
        name = "spawner"
        command = "sh"
        args = ["-c", "setsid sh {daemon} </dev/null >/dev/null 2>&1 & echo escaped=$!; exec sleep 60"]
    """, ready)


ZOMBIE_COUNTER = r"""
import os, sys, time

def orphan():
    # Double fork: the middle process exits at once, so the grandchild is re-parented
    # (to PID 1 here) and becomes a zombie that only PID 1 can collect.
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            time.sleep(0.1)
            if os.getppid() != 1:
                print(f"orphan ppid {os.getppid()}", flush=True)
            os._exit(0)
        os._exit(0)
    os.waitpid(middle, 0)

def zombies():
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        n += 1
            except OSError:
                pass
    return n

for _ in range(20):
    orphan()
print("spawned 20 orphans", flush=True)
time.sleep(0.3)             # every orphan has exited by now
for _ in range(200):
    print(f"zombies={zombies()}", flush=True)
    time.sleep(0.1)
"""


# -- 1. as PID 1 ------------------------------------------------------------------------

@needs_pidns
def test_runs_as_pid1_and_reaps_orphans_of_services(run_entrypoint, write_config, tagged,
                                                    tmp_path):
    counter = script(tmp_path, "zombies.py", ZOMBIE_COUNTER)
    cfg = write_config(f"""
        [[services]]
        name = "forker"
        command = "{PYTHON}"
        args = ["-u", "{counter}"]
    """)
    r = run_entrypoint("-c", cfg, prefix=UNSHARE, env=tagged)
    r.wait_for(r"as PID 1")
    r.wait_for(r"forker +\| spawned 20 orphans")
    r.wait_for(r"forker +\| zombies=0$", timeout=10)
    assert not any("orphan ppid" in line for line in service_lines(r, "forker")), r.output
    os.kill(ns_init(r), signal.SIGTERM)
    assert r.wait() == 0


@needs_pidns
def test_sigterm_to_pid1_stops_in_reverse_dependency_order(run_entrypoint, write_config,
                                                           tagged, tmp_path):
    # "top" takes a while to stop: were the stops parallel, "mid" and "base" would report first.
    slow = script(tmp_path, "slow.py", (
        "import signal, sys, time\n"
        "def term(*_):\n"
        "    time.sleep(0.6); print('top done', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "print('top up', flush=True)\n"
        "while True: time.sleep(1)\n"))
    cfg = write_config(f"""
        [timeouts]
        service_shutdown_timeout = 5
        [[services]]
        name = "base"
        command = "sleep 60"
        [[services]]
        name = "mid"
        command = "sleep 60"
        depends_on = "base"
        [[services]]
        name = "top"
        command = "{PYTHON}"
        args = ["-u", "{slow}"]
        depends_on = ["mid"]
        [[services]]
        name = "loner"
        command = "sleep 60"
    """)
    r = run_entrypoint("-c", cfg, prefix=UNSHARE, env=tagged)
    r.wait_for(r"top +\| top up")
    r.wait_for(r"loner: started")
    os.kill(ns_init(r), signal.SIGTERM)
    assert r.wait() == 0
    lines = r.lines
    assert index_of(lines, r"SIGTERM received")
    assert index_of(lines, r"top +\| top done") < index_of(lines, r"top stopped")
    assert index_of(lines, r"top stopped") < index_of(lines, r"mid stopped")
    assert index_of(lines, r"mid stopped") < index_of(lines, r"base stopped")
    index_of(lines, r"loner stopped")
    index_of(lines, r"exit status 0")


@needs_pidns
@pytest.mark.parametrize("cmd, expected", [
    (["sh", "-c", "exit 5"], 5),
    (["sh", "-c", "kill -USR2 $$"], 128 + signal.SIGUSR2),
    (["true"], 0),
])
def test_cmd_status_passes_through_pid1_and_unshare(run_entrypoint, write_config, tagged,
                                                    cmd, expected):
    cfg = write_config("""
        [timeouts]
        service_shutdown_timeout = 2
        [[services]]
        name = "bg"
        command = "sleep 60"
    """)
    r = run_entrypoint("-c", cfg, "--", *cmd, prefix=UNSHARE, env=tagged)
    assert r.wait() == expected
    r.wait_for(r"as PID 1")
    r.wait_for(r"bg stopped")


@needs_pidns
@pytest.mark.parametrize("script_text, expected", [("exit 7", 7), ("kill -9 $$$$", 137)])
def test_required_service_status_as_pid1(run_entrypoint, write_config, tagged, script_text,
                                         expected):
    cfg = write_config(f"""
        [[services]]
        name = "other"
        command = "sleep 60"
        [[services]]
        name = "critical"
        command = "sh"
        args = ["-c", "sleep 0.2; {script_text}"]
        required = true
        restart = "no"
    """)
    r = run_entrypoint("-c", cfg, prefix=UNSHARE, env=tagged)
    assert r.wait() == expected
    r.wait_for(r'required service "critical" failed')


@needs_pidns
def test_final_sweep_as_pid1_catches_escaped_daemon(run_entrypoint, write_config, tagged,
                                                    tmp_path):
    marker = tmp_path / "daemon-got-term"
    # The daemon leaves the service's session and group with setsid: the stop signal to the
    # service's group cannot reach it; only the final sweep can. It records the SIGTERM
    # (the kernel's namespace teardown would SIGKILL it instead).
    service, ready = escaping_service(tmp_path, f"touch {marker}; exit 0")
    cfg = write_config(service)
    r = run_entrypoint("-c", cfg, prefix=UNSHARE, env=tagged)
    ns_pid = int(r.wait_for(r"spawner +\| escaped=(\d+)").group(1))
    init = ns_init(r)
    escaped = wait_until(lambda: host_pid(init, ns_pid), what="the escaped daemon's host pid")
    wait_until(ready.exists, what="the daemon's trap set")
    assert os.getsid(escaped) == escaped                # really out of the service's session
    os.kill(init, signal.SIGTERM)
    assert r.wait() == 0
    assert gone(escaped)
    assert marker.exists(), "the escaped daemon was not sent SIGTERM by the final sweep"
    r.wait_for(r"leftover process\(es\):.*\(sh\)")


@needs_pidns
def test_service_ignoring_sigterm_is_killed_after_service_shutdown_timeout(
        run_entrypoint, write_config, tagged):
    cfg = write_config("""
        [timeouts]
        service_shutdown_timeout = 1
        [[services]]
        name = "stubborn"
        command = "sh"
        args = ["-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"]
    """)
    r = run_entrypoint("-c", cfg, prefix=UNSHARE, env=tagged)
    r.wait_for(r"stubborn +\| ready")
    began = time.monotonic()
    os.kill(ns_init(r), signal.SIGTERM)
    r.wait(10)
    took = time.monotonic() - began
    assert 0.9 <= took < 5, took
    r.wait_for(r"stubborn: did not stop within 1s of SIGTERM; sending SIGKILL")
    r.wait_for(r"stubborn stopped \(killed by SIGKILL\)")


@needs_pidns
def test_global_shutdown_timeout_bounds_the_whole_shutdown(run_entrypoint, write_config,
                                                           tagged):
    stubborn = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
    cfg = write_config(f"""
        [timeouts]
        service_shutdown_timeout = 20
        global_shutdown_timeout = 1.5
        [[services]]
        name = "a"
        command = "sh"
        args = ["-c", "{stubborn}"]
        [[services]]
        name = "b"
        command = "sh"
        args = ["-c", "{stubborn}"]
        depends_on = "a"
    """)
    r = run_entrypoint("-c", cfg, prefix=UNSHARE, env=tagged)
    r.wait_for(r"b +\| ready")
    began = time.monotonic()
    os.kill(ns_init(r), signal.SIGTERM)
    status = r.wait(15)
    took = time.monotonic() - began
    assert 1.4 <= took < 5, took
    r.wait_for(r"longer than 1.5s \(global_shutdown_timeout\)")
    # Not "everything stopped in time" (CONTRACT §7): not the 0 of a graceful shutdown.
    assert status != 0


@needs_pidns
@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_during_slow_shutdown_kills_everything(run_entrypoint, write_config,
                                                             tagged, second):
    cfg = write_config("""
        [timeouts]
        service_shutdown_timeout = 30
        global_shutdown_timeout = 50
        [[services]]
        name = "stubborn"
        command = "sh"
        args = ["-c", "trap '' TERM INT; echo pid=$$$$; while :; do sleep 0.1; done"]
        [[services]]
        name = "dependent"
        command = "sh"
        args = ["-c", "trap '' TERM INT; echo ready; while :; do sleep 0.1; done"]
        depends_on = "stubborn"
    """)
    r = run_entrypoint("-c", cfg, prefix=UNSHARE, env=tagged)
    ns_pid = int(r.wait_for(r"stubborn +\| pid=(\d+)").group(1))
    r.wait_for(r"dependent +\| ready")
    init = ns_init(r)
    stubborn = wait_until(lambda: host_pid(init, ns_pid), what="the service's host pid")
    os.kill(init, signal.SIGTERM)
    r.wait_for(r"stopping \(SIGTERM\)")
    time.sleep(0.3)          # well inside the 30 s the slow shutdown would take
    assert r.proc.poll() is None and pid_alive(stubborn)
    began = time.monotonic()
    os.kill(init, second)
    r.wait(10)
    assert time.monotonic() - began < 5
    r.wait_for(rf"{signal.Signals(second).name} again: killing everything now")
    assert gone(stubborn)


# -- 2. not PID 1: a child subreaper -----------------------------------------------------

GRANDCHILD = r"""
import os, sys, time
flag = sys.argv[1]
r, w = os.pipe()
middle = os.fork()
if middle == 0:
    grandchild = os.fork()
    if grandchild == 0:
        while not os.path.exists(flag):
            time.sleep(0.05)
        os._exit(0)
    os.write(w, str(grandchild).encode())
    os._exit(0)
os.waitpid(middle, 0)
print(f"grandchild={os.read(r, 32).decode()}", flush=True)
while True:
    time.sleep(1)
"""


def test_subreaper_adopts_and_reaps_grandchildren(run_entrypoint, write_config, tagged,
                                                  tmp_path):
    flag = tmp_path / "exit-now"
    prog = script(tmp_path, "grandchild.py", GRANDCHILD)
    cfg = write_config(f"""
        [[services]]
        name = "forker"
        command = "{PYTHON}"
        args = ["-u", "{prog}", "{flag}"]
    """)
    r = run_entrypoint("-c", cfg, env=tagged)
    grandchild = int(r.wait_for(r"forker +\| grandchild=(\d+)").group(1))
    # Its parent exited: the orphan goes to the nearest subreaper, the runner, not to init.
    wait_until(lambda: ppid_of(grandchild) == r.pid, timeout=5,
               what=f"grandchild re-parented to the runner ({r.pid})")
    flag.touch()
    wait_until(lambda: gone(grandchild), timeout=5, what="the exited grandchild reaped")
    assert r.proc.poll() is None
    r.signal(signal.SIGTERM)
    assert r.wait() == 0


def test_final_sweep_not_pid1_kills_escaped_process(run_entrypoint, write_config, tagged,
                                                    tmp_path):
    marker = tmp_path / "daemon-got-term"
    service, ready = escaping_service(tmp_path, f"touch {marker}; exit 0")
    cfg = write_config(service)
    r = run_entrypoint("-c", cfg, env=tagged)
    escaped = int(r.wait_for(r"spawner +\| escaped=(\d+)").group(1))
    wait_until(ready.exists, what="the daemon's trap set")
    assert os.getsid(escaped) == escaped
    r.signal(signal.SIGTERM)
    assert r.wait() == 0
    assert gone(escaped)
    assert marker.exists(), "the escaped process was not sent SIGTERM by the final sweep"
    r.wait_for(rf"leftover process\(es\): {escaped} \(sh\)")


def test_final_sweep_sigkills_what_ignores_sigterm(run_entrypoint, write_config, tagged,
                                                   tmp_path):
    service, ready = escaping_service(tmp_path, "")      # trap '' TERM: ignored
    cfg = write_config(service)
    r = run_entrypoint("-c", cfg, env=tagged)
    escaped = int(r.wait_for(r"spawner +\| escaped=(\d+)").group(1))
    wait_until(ready.exists, what="the daemon's trap set")
    r.signal(signal.SIGTERM)
    assert r.wait(20) == 0
    assert gone(escaped)
    r.wait_for(r"leftover process\(es\)")
    r.wait_for(r"sending SIGKILL to \d+ process")


# -- a reaped orphan's pid, recycled ------------------------------------------------------

RECYCLER = r"""
import os, time
r, w = os.pipe()
middle = os.fork()
if middle == 0:
    orphan = os.fork()
    if orphan == 0:
        time.sleep(0.2)
        os._exit(0)
    os.write(w, str(orphan).encode())
    os._exit(0)
os.waitpid(middle, 0)
orphan = int(os.read(r, 32))
while os.path.exists(f"/proc/{orphan}"):   # until PID 1 has reaped it (for nobody)
    time.sleep(0.02)
# The next process created in this namespace gets the orphan's pid.
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(orphan - 1))
print(f"orphan={orphan}", flush=True)
"""


@needs_pidns
def test_recycled_pid_of_a_reaped_orphan_is_not_a_stale_exit(run_entrypoint, write_config,
                                                             tagged, tmp_path):
    """Regression: the reaper kept statuses of orphans it reaped, and handed one to the next
    child that got the same pid, so a service that had just started was reported exited."""
    prog = script(tmp_path, "recycler.py", RECYCLER)
    cfg = write_config(f"""
        [[services]]
        name = "recycler"
        command = "{PYTHON}"
        args = ["-u", "{prog}"]
        oneshot = true
        [[services]]
        name = "victim"
        command = "sh"
        args = ["-c", "echo pid=$$$$; exec sleep 60"]
        depends_on = "recycler"
    """)
    r = run_entrypoint("-c", cfg, prefix=UNSHARE, env=tagged)
    orphan = int(r.wait_for(r"recycler +\| orphan=(\d+)").group(1))
    victim = int(r.wait_for(r"victim +\| pid=(\d+)").group(1))
    assert victim == orphan, "precondition: the victim did not get the orphan's pid"
    time.sleep(1.5)     # longer than DRAIN_GRACE: a stale exit would have been reported
    assert not any("victim: exited" in line for line in r.lines), r.output
    assert r.proc.poll() is None, r.output
    os.kill(ns_init(r), signal.SIGTERM)
    assert r.wait() == 0
    r.wait_for(r"victim stopped \(killed by SIGTERM\)")


def test_final_sweep_also_gets_what_leftovers_start_on_sigterm(run_entrypoint, write_config,
                                                              tagged, tmp_path):
    """A leftover whose TERM handler starts another process (a cleanup, a respawn): the
    runner must not exit while that one is still its descendant (CONTRACT §6)."""
    late = tmp_path / "late-pid"
    service, ready = escaping_service(
        tmp_path, f"setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > {late}; exit 0")
    cfg = write_config(service)
    r = run_entrypoint("-c", cfg, env=tagged)
    escaped = int(r.wait_for(r"spawner +\| escaped=(\d+)").group(1))
    wait_until(ready.exists, what="the daemon's trap set")
    r.signal(signal.SIGTERM)
    r.wait(30)
    assert gone(escaped)
    started_late = int(wait_until(lambda: late.exists() and late.read_text().strip(), timeout=2,
                                  what="the process started on SIGTERM"))
    assert gone(started_late), f"{started_late} outlived the runner:\n{r.output}"


@needs_pidns
def test_global_shutdown_timeout_bounds_the_final_sweep_too(run_entrypoint, write_config,
                                                            tagged, tmp_path):
    """`global_shutdown_timeout`: the whole shutdown, then SIGKILL to everything left — a
    leftover that ignores SIGTERM must not stretch it (Docker's SIGKILL would come first)."""
    service, ready = escaping_service(tmp_path, "")      # the daemon ignores SIGTERM
    cfg = write_config("""
        [timeouts]
        service_shutdown_timeout = 1
        global_shutdown_timeout = 2
    """ + service)
    r = run_entrypoint("-c", cfg, prefix=UNSHARE, env=tagged)
    ns_pid = int(r.wait_for(r"spawner +\| escaped=(\d+)").group(1))
    init = ns_init(r)
    escaped = wait_until(lambda: host_pid(init, ns_pid), what="the escaped daemon's host pid")
    wait_until(ready.exists, what="the daemon's trap set")
    began = time.monotonic()
    os.kill(init, signal.SIGTERM)
    r.wait(20)
    took = time.monotonic() - began
    r.wait_for(r"leftover process\(es\)")
    assert took < 3.5, f"shutdown took {took:.1f}s with global_shutdown_timeout = 2"
    assert gone(escaped)


@needs_pidns
def test_signals_reach_the_cmd_through_pid1(run_entrypoint, write_config, tagged, tmp_path):
    """PID 1 gets no default dispositions: a signal it does not handle is dropped. USR1 must
    still reach the CMD, and SIGTERM still stop it first."""
    prog = script(tmp_path, "cmd.py", (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGUSR1, lambda *_: print('cmd got SIGUSR1', flush=True))\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('cmd got SIGTERM', flush=True), "
        "sys.exit(0)))\n"
        "print('cmd ready', flush=True)\n"
        "while True: time.sleep(0.1)\n"))
    cfg = write_config("""
        [[services]]
        name = "svc"
        command = "sleep 60"
    """)
    r = run_entrypoint("-c", cfg, "--", PYTHON, "-u", prog, prefix=UNSHARE, env=tagged)
    r.wait_for(r"^cmd ready")
    init = ns_init(r)
    os.kill(init, signal.SIGUSR1)
    r.wait_for(r"^cmd got SIGUSR1$")
    os.kill(init, signal.SIGTERM)
    assert r.wait() == 0
    assert index_of(r.lines, r"^cmd got SIGTERM$") < index_of(r.lines, r"svc stopped")
