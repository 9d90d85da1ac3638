"""Shutdown is bounded, always; a reload's validation is bounded and isolated.

A process the kernel cannot kill (uninterruptible sleep, D state) cannot be made on demand,
so one test uses the test seam ENTRYPOINT_TEST_KILL_DOES_NOT_TAKE=NAME: the runner's
SIGKILLs to that service are not sent, as if they stayed pending on a D-state process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time

import pytest

from conftest import PYTHON, entrypoint_env
from control_helpers import ctl, ctl_env, start_runner, wait_states

pytestmark = pytest.mark.timeout(60)

STUCK = """
[timeouts]
service_shutdown_timeout = 0.5
global_shutdown_timeout = 1.5
[[services]]
name = "stuck"
command = "sh"
args = ["-c", "trap '' TERM; echo ready; while :; do sleep 0.2; done"]
"""


def test_a_service_that_cannot_be_killed_does_not_hold_the_shutdown(run_entrypoint, write_config):
    """TERM ignored, SIGKILL never taking effect: the runner still exits shortly after
    global_shutdown_timeout, with status 1, naming what it could not stop."""
    env = entrypoint_env(ENTRYPOINT_TEST_KILL_DOES_NOT_TAKE="stuck")
    r = run_entrypoint("-c", write_config(STUCK), env=env)
    pid = int(r.wait_for(r"stuck: started \(pid (\d+)\)").group(1))
    r.wait_for(r"stuck +\| ready")
    began = time.monotonic()
    r.signal(signal.SIGTERM)
    try:
        assert r.wait(15) == 1, r.output
        took = time.monotonic() - began
        assert took < 1.5 + 3.0 + 2.0, f"took {took:.1f}s\n{r.output}"
        assert any("could not stop everything" in line and f"stuck (pid {pid}" in line
                   for line in r.lines), r.output
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _no_proc_prefix() -> list[str]:
    return ["unshare", "--mount", "sh", "-c", 'umount -l /proc && exec "$@"', "sh"]


def _can_unmount_proc() -> bool:
    try:
        done = subprocess.run([*_no_proc_prefix(), "sh", "-c", "test ! -e /proc/self"],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@pytest.mark.skipif(not _can_unmount_proc(), reason="cannot unmount /proc in a mount namespace")
def test_without_proc_the_shutdown_still_ends_in_time(run_entrypoint, write_config, tagged):
    """No /proc: the sweep cannot find the process that escaped the service's session,
    and says so; the run still ends within global_shutdown_timeout plus the margin."""
    config = write_config("""
        [timeouts]
        global_shutdown_timeout = 1
        [[services]]
        name = "app"
        command = "sh"
        args = ["-c", "setsid sh -c 'echo escaped; exec sleep 60' & exec sleep 60"]
    """)
    r = run_entrypoint("-c", config, env=tagged, prefix=_no_proc_prefix())
    r.wait_for(r"app +\| escaped")      # printed after setsid(): out of the service's group
    began = time.monotonic()
    r.signal(signal.SIGTERM)
    r.wait(15)
    took = time.monotonic() - began
    assert took < 1 + 3.0 + 2.0, f"took {took:.1f}s\n{r.output}"
    assert "cannot look for leftover processes: /proc is not mounted" in r.output, r.output
    assert "could not stop everything" in r.output, r.output


# -- reload: the validating child ----------------------------------------------------------

def _service(name: str, extra: str = "") -> str:
    return textwrap.dedent(f"""
        [[services]]
        name = "{name}"
        command = "sleep"
        args = ["60"]
        {extra}
    """)


def test_a_hanging_validation_is_rejected_and_later_reloads_work(run_entrypoint, tmp_path):
    """The new config names an env_file that is a FIFO nobody writes: reading it blocks
    forever. The validation is killed after ENTRYPOINT_RELOAD_TIMEOUT and the reload
    rejected; the next reload (config fixed) is applied at once."""
    fifo = tmp_path / "blocks.env"
    os.mkfifo(fifo)
    config = tmp_path / "services.toml"
    config.write_text(_service("app"))
    sock = str(tmp_path / "ctl.sock")
    env = ctl_env(sock, ENTRYPOINT_RELOAD_TIMEOUT="1.5")
    r = start_runner(run_entrypoint, str(config), sock, env=env, app="RUNNING")
    config.write_text(_service("app", f'env_file = "{fifo}"'))
    began = time.monotonic()
    done = ctl(sock, "reload", timeout=20)
    assert done.returncode != 0, done.stdout
    assert time.monotonic() - began < 10
    assert "took longer than 1.5s" in done.stderr + done.stdout, done.stderr
    assert "entrypoint.config.isolate" not in _command_lines()   # the validator was killed
    config.write_text(_service("app") + _service("added"))
    done = ctl(sock, "reload", timeout=20)
    assert done.returncode == 0, done.stderr
    wait_states(sock, added="RUNNING")
    r.signal(signal.SIGTERM)
    assert r.wait(20) == 0, r.output


def _command_lines() -> str:
    lines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    lines.append(f.read().replace(b"\0", b" ").decode("utf-8", "replace"))
            except OSError:
                continue
    return "\n".join(lines)


SCRIPT = os.path.join(os.path.dirname(PYTHON), "entrypoint")


@pytest.mark.skipif(not os.access(SCRIPT, os.X_OK), reason="needs the installed entrypoint script")
def test_the_validation_never_imports_modules_from_the_workdir(tmp_path):
    """A `tomllib.py` planted in the runner's working directory is not imported by the
    reload's validating child: it runs `python -I` from "/". The runner is started as
    installed (its script), which puts its own directory on sys.path, not the WORKDIR."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    marker = tmp_path / "planted-ran"
    for module in ("tomllib", "dotenv"):
        (workdir / f"{module}.py").write_text(f"open({str(marker)!r}, 'a').write('{module}\\n')\n"
                                              f"raise ImportError('planted')\n")
    config = tmp_path / "services.toml"
    config.write_text(_service("app"))
    sock = str(tmp_path / "ctl.sock")
    runner = subprocess.Popen([SCRIPT, "-c", str(config), "--socket", sock], env=ctl_env(sock),
                              cwd=str(workdir), stdin=subprocess.DEVNULL,
                              stdout=open(tmp_path / "out", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_states(sock, app="RUNNING")
        assert not marker.exists(), marker.read_text()     # not at startup either
        config.write_text(_service("app") + _service("added"))
        done = ctl(sock, "reload", timeout=20)
        assert done.returncode == 0, done.stderr + done.stdout
        wait_states(sock, added="RUNNING")
        assert not marker.exists(), marker.read_text()
    finally:
        os.killpg(runner.pid, signal.SIGTERM)
        try:
            runner.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(5)
