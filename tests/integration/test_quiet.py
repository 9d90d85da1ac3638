"""A plain init is quiet; `--quiet` keeps the runner to warnings and errors; a CMD that
cannot run says why, in the shell's words and statuses. Real runs of the CLI."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import PYTHON, entrypoint_env

pytestmark = pytest.mark.timeout(60)

ONE_SERVICE = """
[[services]]
name = "app"
command = "echo app says hello"
oneshot = true
pos_script = "/bin/true"
"""


def run(tmp_path, *args, **env) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "entrypoint", *args], cwd=tmp_path,
                          env=entrypoint_env(**env), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)


def test_plain_init_prints_nothing_of_its_own(tmp_path):
    done = run(tmp_path, "--", "sh", "-c", "echo only the command; exit 4")
    assert (done.returncode, done.stdout, done.stderr) == (4, "only the command\n", "")


def test_config_without_services_is_a_quiet_plain_init(tmp_path):
    (tmp_path / "services.toml").write_text("[timeouts]\nservice_shutdown_timeout = 5\n")
    done = run(tmp_path, "--", "echo", "only the command")
    assert (done.returncode, done.stdout, done.stderr) == (0, "only the command\n", "")


@pytest.mark.parametrize("how", ["option", "environment"])
def test_quiet_keeps_warnings_and_the_services_output(tmp_path, how):
    (tmp_path / "services.toml").write_text(ONE_SERVICE)
    if how == "option":
        done = run(tmp_path, "--quiet", "--", "echo", "the command")
    else:
        done = run(tmp_path, "--", "echo", "the command", ENTRYPOINT_QUIET="1")
    assert done.returncode == 0, done.stderr
    ours = [line for line in done.stdout.splitlines() if line.startswith("entrypoint ")]
    assert ours == ['entrypoint | warning: services[0] "app": pos_script is read as '
                    'post_script (rename it to post_script)']
    assert "app        | app says hello" in done.stdout.splitlines()
    assert done.stdout.splitlines()[-1] == "the command"


def test_without_quiet_the_runner_tells_what_it_does(tmp_path):
    (tmp_path / "services.toml").write_text(ONE_SERVICE)
    done = run(tmp_path, "--", "echo", "the command")
    assert "entrypoint | exit status 0" in done.stdout.splitlines()


# -- a CMD that cannot run ----------------------------------------------------------------

@pytest.fixture(params=["plain init", "with services"])
def mode(request, tmp_path):
    """Run the CMD as a plain init, or after a service that leaves a mark if it ran."""
    if request.param == "with services":
        mark = tmp_path / "started"
        (tmp_path / "services.toml").write_text(
            f'[[services]]\nname = "app"\ncommand = "touch {mark}"\noneshot = true\n')
        return mark
    return None


def _nothing_started(mark) -> bool:
    return mark is None or not mark.exists()


def test_missing_path_says_no_such_file(tmp_path, mode):
    done = run(tmp_path, "--", "/no/such", "arg")
    assert done.returncode == 127
    assert done.stderr == "entrypoint: /no/such: no such file\n"
    assert done.stdout == "" and _nothing_started(mode)


def test_path_that_is_not_executable_exits_126(tmp_path, mode):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    os.chmod(script, 0o644)
    done = run(tmp_path, "--", str(script))
    assert done.returncode == 126
    assert done.stderr == f"entrypoint: {script}: not executable (permission denied)\n"
    assert done.stdout == "" and _nothing_started(mode)


def test_name_not_in_path_exits_127(tmp_path, mode):
    done = run(tmp_path, "--", "no-such-program-xyz")
    assert done.returncode == 127
    assert done.stderr == ('entrypoint: command "no-such-program-xyz" not found in PATH; '
                           'nothing was started\n')
    assert done.stdout == "" and _nothing_started(mode)
