"""The one child handle (core/child.py) on real processes: one stop per run, no signal to a
reaped pid, exhausted resources as failed starts, and the CMD's wait ending on a failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap

import pytest

from conftest import PYTHON, entrypoint_env, service_lines, wait_until
from control_helpers import ctl, ctl_env, services, start_runner, wait_states

pytestmark = pytest.mark.timeout(60)

# Counts every SIGTERM it gets; stops gracefully 1.5 s after the first, then says how many.
COUNTING = textwrap.dedent("""
    import signal, time
    n = 0
    def on_term(sig, frame):
        global n
        n += 1
        print(f"TERM {n}", flush=True)
    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    while n == 0:
        time.sleep(0.02)
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        time.sleep(0.02)
    print(f"TERMS {n}", flush=True)
""")


def test_a_stop_during_a_shutdown_sends_one_term(run_entrypoint, tmp_path):
    """`entrypoint stop app`, then a SIGTERM to the runner while app stops gracefully: both
    wait for the same stop, and app gets ONE SIGTERM (a second one means "force" to many
    apps)."""
    (tmp_path / "counting.py").write_text(COUNTING)
    config = tmp_path / "services.toml"
    config.write_text(textwrap.dedent(f"""
        [timeouts]
        service_shutdown_timeout = 10
        [[services]]
        name = "app"
        command = "{PYTHON}"
        args = ["-u", "{tmp_path / 'counting.py'}"]
        [[services]]
        name = "other"
        command = "sleep"
        args = ["60"]
    """))
    sock = str(tmp_path / "ctl.sock")
    r = start_runner(run_entrypoint, str(config), sock, app="RUNNING")
    r.wait_for(r"app +\| ready")
    stopper = subprocess.Popen([PYTHON, "-m", "entrypoint", "stop", "app"], env=ctl_env(sock),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    try:
        r.wait_for(r"app +\| TERM 1")
        r.signal(signal.SIGTERM)
        assert r.wait(20) == 0, r.output
        stopper.communicate(timeout=10)
    finally:
        if stopper.poll() is None:
            stopper.kill()
            stopper.wait(5)
    assert "TERMS 1" in service_lines(r, "app"), r.output
    assert "TERM 2" not in service_lines(r, "app"), r.output


RECYCLER = textwrap.dedent("""
    # PID 1 of a PID namespace: start the runner, wait for its service "svc" to exit and be
    # reaped, create a process with the SAME pid (ns_last_pid), then SIGTERM the runner
    # twice (a forced shutdown SIGKILLs every service) while the runner is still draining
    # svc's output. The recycled process must survive.
    import os, re, signal, subprocess, sys, time
    runner = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, text=True)
    pid = None
    for line in runner.stdout:
        print(line, end="", flush=True)
        m = re.search(r"svc: started \\(pid (\\d+)\\)", line)
        if m:
            pid = int(m.group(1))
            break
    if pid is None:
        sys.exit("svc never started")
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.002)           # gone from /proc: svc was reaped by the runner
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))
    victim = subprocess.Popen(["sleep", "30"], start_new_session=True)
    print(f"victim {victim.pid} svc {pid}", flush=True)
    runner.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    runner.send_signal(signal.SIGTERM)
    for line in runner.stdout:
        print(line, end="", flush=True)
    runner.wait(20)
    print("victim alive" if victim.poll() is None else f"victim died {victim.returncode}",
          flush=True)
    victim.kill()
""")


def _can_recycle_pids() -> bool:
    try:
        done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c",
                               "echo 100 > /proc/sys/kernel/ns_last_pid"],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@pytest.mark.skipif(not _can_recycle_pids(), reason="needs a PID namespace and ns_last_pid")
def test_a_reaped_service_pid_is_never_signalled(tmp_path):
    """svc exits leaving a descendant on its terminal (the runner drains for up to a second);
    its pid is recycled at once for an unrelated process; a forced shutdown then SIGKILLs
    every service. The handle knows svc was reaped: the recycled pid is not touched."""
    (tmp_path / "recycler.py").write_text(RECYCLER)
    config = tmp_path / "services.toml"
    config.write_text(textwrap.dedent("""
        [[services]]
        name = "svc"
        command = "sh"
        args = ["-c", "setsid sleep 20 & sleep 0.2; exit 0"]
        [[services]]
        name = "keep"
        command = "sleep"
        args = ["60"]
    """))
    argv = ["unshare", "--pid", "--fork", "--mount-proc", PYTHON, str(tmp_path / "recycler.py"),
            PYTHON, "-m", "entrypoint", "-c", str(config)]
    proc = subprocess.Popen(argv, env=entrypoint_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    victim = [line for line in out.splitlines() if line.startswith("victim ")]
    assert victim and victim[0].split()[1] == victim[0].split()[3], \
        f"the pid was not recycled, the test proves nothing:\n{out}"
    assert "victim alive" in out, out


def test_the_cmd_wait_ends_when_a_service_fails_for_good(run_entrypoint, write_config):
    """flaky starts (so it was "started" once), then gives up after quick failures; slow
    never becomes healthy. The CMD's wait ends at once with exit 1, naming flaky — not
    after --ready-timeout."""
    config = write_config("""
        [[services]]
        name = "flaky"
        command = "sh"
        args = ["-c", "sleep 0.1; exit 3"]
        restart = "on-failure"
        restart_delay = 0.1
        restart_limit = 2
        [[services]]
        name = "slow"
        command = "sleep"
        args = ["60"]
        healthcheck = { exec = ["false"], interval = 0.5, timeout = 1, retries = 100 }
    """)
    r = run_entrypoint("-c", config, "--ready-timeout", "40", "--", "echo", "CMD RAN")
    assert r.wait(15) == 1, r.output
    assert "CMD RAN" not in r.output
    assert any("flaky" in line and "FAILED before the command could start" in line
               for line in r.lines), r.output


def _devpts_prefix(max_ptys: int) -> list[str]:
    # A mount namespace of its own, with a new devpts instance limited to `max_ptys`
    # terminals and its ptmx bound over /dev/ptmx: openpty() past the limit gets ENOSPC.
    script = (f"mount -t devpts -o newinstance,ptmxmode=0666,max={max_ptys} devpts /dev/pts "
              f"&& mount --bind /dev/pts/ptmx /dev/ptmx && exec \"$@\"")
    return ["unshare", "--mount", "sh", "-c", script, "sh"]


def _can_limit_ptys() -> bool:
    try:
        done = subprocess.run([*_devpts_prefix(1), PYTHON, "-c", "import os; os.openpty()"],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@pytest.mark.skipif(not _can_limit_ptys(), reason="cannot mount a devpts instance here")
def test_no_free_pty_is_a_failed_start_and_the_restart_policy_applies(run_entrypoint, tmp_path):
    """Two terminals for three tty services: the third cannot start (ENOSPC). That is a
    failed start, in its log and history, retried by its policy; the runner goes on, and
    once a terminal is free the service starts."""
    config = tmp_path / "services.toml"
    config.write_text(textwrap.dedent("""
        [[services]]
        name = "a"
        command = "sleep"
        args = ["60"]
        [[services]]
        name = "b"
        command = "sleep"
        args = ["60"]
        depends_on = "a"
        [[services]]
        name = "c"
        command = "sleep"
        args = ["60"]
        depends_on = "b"
        restart_delay = 0.2
        restart_delay_max = 0.2
        restart_limit = 1000
    """))
    sock = str(tmp_path / "ctl.sock")
    r = run_entrypoint("-c", str(config), "--socket", sock, env=ctl_env(sock),
                       prefix=_devpts_prefix(2))
    r.wait_for(r"c: cannot start: cannot get a terminal \(PTY\): No space left on device")
    r.wait_for(r"c: restarting in 0.2s", count=2)          # its policy retries it
    done = ctl(sock, "status", "c", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    history = (status[0] if isinstance(status, list) else status)["history"]
    assert any("No space left on device" in h["reason"] for h in history), history
    assert services(sock)["a"]["state"] == "RUNNING"
    assert "internal error" not in r.output
    assert ctl(sock, "stop", "a").returncode == 0       # frees a terminal
    wait_states(sock, c="RUNNING")
    r.signal(signal.SIGTERM)
    assert r.wait(20) == 0, r.output


def _processes_with(argv_text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().replace(b"\0", b" ").strip().endswith(argv_text.encode()):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_a_probe_cancelled_by_the_service_exit_is_killed_and_reaped(run_entrypoint, write_config):
    """The service exits while its exec health probe runs (timeout 40 s): the probe is
    killed and reaped at once, not left running until its timeout."""
    config = write_config("""
        [[services]]
        name = "short"
        command = "sh"
        args = ["-c", "sleep 1.5"]
        restart = "no"
        healthcheck = { exec = ["sleep", "37.25"], interval = 0.1, timeout = 40 }
        [[services]]
        name = "keep"
        command = "sleep"
        args = ["60"]
    """)
    r = run_entrypoint("-c", config)
    wait_until(lambda: _processes_with("sleep 37.25"), timeout=10, what="the probe")
    r.wait_for(r"short: exited")
    wait_until(lambda: not _processes_with("sleep 37.25"), timeout=5,
               what="the probe gone after the service exit")
    r.signal(signal.SIGTERM)
    assert r.wait(20) == 0, r.output


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v prlimit"], capture_output=True).returncode,
                    reason="needs prlimit (util-linux)")
def test_no_free_fd_is_a_failed_start_and_the_runner_goes_on(run_entrypoint, write_config):
    """Thirty fds for twelve services with pipes: the last ones cannot get their pipes
    (EMFILE). Each is a failed start, retried by its policy; the runner stays up and stops
    everything gracefully on SIGTERM."""
    config = write_config("".join(textwrap.dedent(f"""
        [[services]]
        name = "s{i}"
        command = "sleep"
        args = ["60"]
        tty = false
        restart_delay = 0.2
        restart_delay_max = 0.2
        restart_limit = 1000
    """) for i in range(12)))
    r = run_entrypoint("-c", config, prefix=["prlimit", "--nofile=30:30"])
    m = r.wait_for(r"(s\d+): cannot start: cannot get a pipe: Too many open files \(EMFILE\)")
    r.wait_for(rf"{m.group(1)}: restarting in 0.2s", count=2)
    r.signal(signal.SIGTERM)
    assert r.wait(20) == 0, r.output
    assert "internal error" not in r.output
