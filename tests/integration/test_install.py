"""CONTRACT §8 `install`: a venv-installed runner, started as root by its venv path,
puts `entrypoint` on PATH by itself; `entrypoint install` does it on demand.

The venv gets the package with `pip install --no-deps -e` (the rest comes from the system
site-packages). The link goes to a temporary directory named by ENTRYPOINT_INSTALL_DIR,
never to the real /usr/local/bin.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    where = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(where)],
                   check=True, capture_output=True, timeout=120)
    pip = [str(where / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)]
    attempts = [pip + ["--no-build-isolation"], pip]   # offline first; else fetch the backend
    errors = []
    for argv in attempts:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=150)
        if done.returncode == 0 and (where / "bin" / "entrypoint").exists():
            return where
        errors.append(done.stderr[-500:])
    pytest.skip("could not pip-install the package into a venv: " + " | ".join(errors))


@pytest.fixture
def place(tmp_path):
    """An empty install dir on PATH (the venv's bin/ is not), and the env to use."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTRYPOINT_")}
    env.update(PATH=f"{bindir}:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
               ENTRYPOINT_INSTALL_DIR=str(bindir), ENTRYPOINT_SOCKET=str(tmp_path / "ctl.sock"),
               NO_COLOR="1", PYTHONPATH="")
    config = tmp_path / "services.toml"
    config.write_text('[[services]]\nname = "app"\ncommand = "sleep"\nargs = ["1000"]\n')
    return bindir, env, str(config)


def _run_until_up(argv, env, sock):
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        wait_until(lambda: os.path.exists(sock) or proc.poll() is not None, 30, what="the socket")
    except AssertionError:
        _stop(proc)
        raise
    return proc


def _stop(proc) -> str:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="auto-install happens only as root")
def test_a_root_runner_started_from_its_venv_puts_itself_on_path(venv, place):
    bindir, env, config = place
    script = str(venv / "bin" / "entrypoint")
    link = bindir / "entrypoint"
    proc = _run_until_up([script, "-c", config], env, env["ENTRYPOINT_SOCKET"])
    try:
        assert proc.poll() is None
        # The socket is bound first, then the link made, in the same start-up step.
        wait_until(lambda: os.path.islink(link) or proc.poll() is not None, 30, what="the link")
        assert os.path.islink(link) and os.readlink(link) == script
        # `docker exec CONTAINER entrypoint list`: found on PATH, it reaches the runner.
        done = subprocess.run(["entrypoint", "list"], env=env, capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[1].split()[:2] == ["app", "RUNNING"]
    finally:
        out = _stop(proc)
    assert f"installed {link} -> {script}" in out
    # Once on PATH, the next start leaves it alone and says nothing.
    proc = _run_until_up([script, "-c", config], env, env["ENTRYPOINT_SOCKET"])
    out = _stop(proc)
    assert "installed" not in out and os.readlink(link) == script


@pytest.mark.skipif(os.geteuid() != 0, reason="auto-install happens only as root")
def test_no_install_by_flag_or_variable(venv, place):
    bindir, env, config = place
    script = str(venv / "bin" / "entrypoint")
    for argv, extra in (([script, "--no-install", "-c", config], {}),
                        ([script, "-c", config], {"ENTRYPOINT_NO_INSTALL": "1"})):
        proc = _run_until_up(argv, {**env, **extra}, env["ENTRYPOINT_SOCKET"])
        out = _stop(proc)
        assert "installed" not in out
        assert not os.path.lexists(bindir / "entrypoint")


def test_install_command(venv, place, tmp_path):
    bindir, env, _ = place
    script = str(venv / "bin" / "entrypoint")
    link = bindir / "entrypoint"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    off_path = {**env, "ENTRYPOINT_INSTALL_DIR": str(elsewhere)}

    done = subprocess.run([script, "install"], env=off_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"installed {elsewhere}/entrypoint -> {script}\n"
    assert f"note: {elsewhere} is not on PATH" in done.stderr
    again = subprocess.run([script, "install"], env=off_path, capture_output=True, text=True)
    assert again.returncode == 0 and "already installed" in again.stdout      # idempotent

    done = subprocess.run([script, "install"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and os.readlink(link) == script
    done = subprocess.run([script, "install"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == f"entrypoint is on PATH already: {link}\n"

    # Something else in the way: refused, untouched.
    os.unlink(link)
    link.write_text("#!/bin/sh\n")
    done = subprocess.run([script, "install"], env={**env, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)
    assert done.returncode == 1 and "exists already and is not a link" in done.stderr
    assert link.read_text() == "#!/bin/sh\n"
    # A dangling link (an old venv) is replaced.
    os.unlink(link)
    os.symlink(str(tmp_path / "gone" / "entrypoint"), link)
    done = subprocess.run([script, "install"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and os.readlink(link) == script
    assert done.stdout == f"installed {link} -> {script}\n"


def test_install_names_another_installation_on_path_and_leaves_it(venv, place, tmp_path):
    bindir, env, _ = place
    script = str(venv / "bin" / "entrypoint")
    other = tmp_path / "old-venv" / "bin" / "entrypoint"
    other.parent.mkdir(parents=True)
    other.write_text("#!/bin/sh\necho old\n")
    os.chmod(other, 0o755)
    link = bindir / "entrypoint"
    os.symlink(other, link)
    done = subprocess.run([script, "install"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"another entrypoint is on PATH: {link} -> {other}; this one is {script}" \
        in done.stderr
    assert "Nothing was changed" in done.stderr and "Traceback" not in done.stderr
    assert os.readlink(link) == str(other)
