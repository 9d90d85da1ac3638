"""The command line as a new user meets it: bad options and variables, typos, help."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from conftest import ROOT, entrypoint_env
from entrypoint.cli.options import OPTIONS

pytestmark = pytest.mark.timeout(60)

# A value each variable's flag refuses, with a word the message must show.
BAD_VALUES = {
    "ENTRYPOINT_LOG_FORMAT": ("xml", "text or json"),
    "ENTRYPOINT_COLOR": ("blue", "auto, always or never"),
    "ENTRYPOINT_LOG_LINES": ("abc", "whole number"),
    "ENTRYPOINT_READY_TIMEOUT": ("soon", "seconds"),
    "ENTRYPOINT_TIMESTAMPS": ("maybe", "true"),
    "ENTRYPOINT_NO_INSTALL": ("perhaps", "true"),
    "ENTRYPOINT_QUIET": ("loud", "true"),
}


def finished(runner, timeout: float = 30.0) -> tuple[int, str]:
    status = runner.wait(timeout)
    return status, runner.stderr


@pytest.mark.parametrize("variable", sorted(BAD_VALUES))
def test_bad_variable_is_a_usage_error_naming_it(variable, run_entrypoint, tmp_path):
    value, expected = BAD_VALUES[variable]
    env = entrypoint_env(**{variable: value})
    status, err = finished(run_entrypoint("--", "true", cwd=tmp_path, env=env))
    assert status == 2, err
    assert variable in err and expected in err and repr(value) in err
    assert "Traceback" not in err


@pytest.mark.parametrize("variable", sorted(BAD_VALUES))
def test_check_refuses_a_bad_variable_too(variable, run_entrypoint, write_config, tmp_path):
    path = write_config('[[services]]\nname = "a"\ncommand = "true"\n')
    env = entrypoint_env(**{variable: BAD_VALUES[variable][0]})
    status, err = finished(run_entrypoint("check", "-c", path, cwd=tmp_path, env=env))
    assert status == 2 and variable in err and "Traceback" not in err


def test_typo_of_a_subcommand_suggests_it(run_entrypoint, tmp_path):
    status, err = finished(run_entrypoint("lst", cwd=tmp_path))
    assert status == 127
    assert 'command "lst" not found' in err and 'did you mean "list"?' in err
    status, err = finished(run_entrypoint("no-such-program-xyz", cwd=tmp_path))
    assert status == 127 and "did you mean" not in err


def test_version_help_prints_usage_not_the_version(run_entrypoint, tmp_path):
    runner = run_entrypoint("version", "--help", cwd=tmp_path)
    status, err = finished(runner)
    assert status == 0, err
    assert "usage: entrypoint version" in runner.output
    assert not re.fullmatch(r"entrypoint \S+", runner.output.strip())


def _variables_in_source() -> set[str]:
    found = set()
    for path in Path(ROOT, "entrypoint").rglob("*.py"):
        found.update(re.findall(r"\bENTRYPOINT_[A-Z][A-Z0-9_]*\b", path.read_text()))
    return found


def test_help_lists_every_variable(run_entrypoint, tmp_path):
    runner = run_entrypoint("--help", cwd=tmp_path)
    status, err = finished(runner)
    assert status == 0, err
    documented = {o.env for o in OPTIONS} | _variables_in_source()
    assert len(documented) >= 10
    missing = sorted(v for v in documented if not re.search(rf"^\s*{v}\b", runner.output, re.M))
    assert not missing, f"not in `entrypoint --help`: {missing}\n{runner.output}"


def test_every_subcommand_option_has_help(run_entrypoint, tmp_path):
    from entrypoint.cli.main import SUBCOMMANDS

    for command in SUBCOMMANDS:
        runner = run_entrypoint(command, "--help", cwd=tmp_path)
        status, err = finished(runner)
        assert status == 0, (command, err)
        text = runner.output
        assert f"usage: entrypoint {command}" in text or command == "run", (command, text)
        assert not _options_without_help(text), (command, text)


def _options_without_help(text: str) -> list[str]:
    """Option lines of an argparse help with no description beside or below them."""
    lines = text.splitlines()
    bare = []
    for i, line in enumerate(lines):
        m = re.match(r"( +)-", line)
        if not m:
            continue
        beside = re.search(r"\S {2,}\S", line)
        below = i + 1 < len(lines) and re.match(rf"{m[1]} +[^ -]", lines[i + 1])
        if not (beside or below):
            bare.append(line)
    return bare


def test_check_reports_every_problem_located_never_a_traceback(run_entrypoint, write_config,
                                                              tmp_path):
    path = write_config(r'''
        [[services]]
        name = "app"
        command = "no-such-program-q"
        restart = "sometimes"
        user = "no-such-user-q"
        directory = "/nonexistent-dir-q"

        [[services]]
        name = "sh"
        command = "echo"
        args = ["a"]
        shell = true

        [[services]]
        name = "nul"
        command = "/bin/ec\u0000ho"
        directory = "/tm\u0000p"
        user = "ro\u0000ot"
        ''')
    status, err = finished(run_entrypoint("check", "-c", path, cwd=tmp_path))
    assert status == 2, err
    assert "Traceback" not in err
    for expected in ('services[0] "app": restart:', 'services[0] "app": command:',
                     'services[0] "app": user:', 'services[0] "app": directory:',
                     'services[1] "sh": shell: shell = true cannot be used with args',
                     'services[2] "nul": command: contains a NUL character',
                     'services[2] "nul": directory: contains a NUL character',
                     'services[2] "nul": user: contains a NUL character'):
        assert expected in err, (expected, err)
    assert "8 problems" in err, err


def test_example_web_server_listens_where_web_host_says(run_entrypoint, tagged, tmp_path):
    # Dockerfile.example sets WEB_HOST=0.0.0.0 so that `docker run -p` reaches the demo;
    # without it the example stays on loopback. `tagged` kills every service at the end.
    from conftest import free_port

    for host in ("0.0.0.0", None):
        port = free_port()
        env = {k: v for k, v in tagged.items() if k != "WEB_HOST"}
        env["WEB_PORT"] = str(port)
        if host:
            env["WEB_HOST"] = host
        runner = run_entrypoint("-c", str(ROOT / "services.toml.example"), cwd=tmp_path, env=env)
        runner.wait_for(rf"^web +\| Serving HTTP on {re.escape(host or '127.0.0.1')} "
                        rf"port {port}\b", timeout=30)
        runner.wait_for(r"^entrypoint +\| web: healthy", timeout=30)
        runner.signal(signal.SIGTERM)
        assert runner.wait(20) == 0, runner.output
