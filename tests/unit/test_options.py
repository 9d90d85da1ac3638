"""cli/options.py: one table of options and variables, parsed and checked alike."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from entrypoint.cli import options
from entrypoint.cli.options import OPTIONS, RunOptions, parse_run, split_run_args
from entrypoint.errors import UsageError


def test_defaults_without_flags_or_variables():
    assert parse_run([], {}) == RunOptions()


def test_variables_set_every_option_with_its_type():
    env = {"ENTRYPOINT_PROCFILE": "Procfile", "ENTRYPOINT_READY_TIMEOUT": "2.5",
           "ENTRYPOINT_TIMESTAMPS": "yes", "ENTRYPOINT_LOG_FORMAT": "json",
           "ENTRYPOINT_COLOR": "never", "ENTRYPOINT_LOG_LINES": "50", "ENTRYPOINT_QUIET": "on",
           "ENTRYPOINT_SOCKET": "/tmp/s.sock", "ENTRYPOINT_REPORT": "r.json",
           "ENTRYPOINT_NO_INSTALL": "TRUE"}
    assert parse_run(["sleep", "1"], env) == RunOptions(
        procfile="Procfile", ready_timeout=2.5, timestamps=True, log_format="json",
        color="never", log_lines=50, quiet=True, socket="/tmp/s.sock", report="r.json",
        no_install=True, cmd=("sleep", "1"))


def test_flag_wins_over_its_variable():
    env = {"ENTRYPOINT_LOG_FORMAT": "json", "ENTRYPOINT_LOG_LINES": "abc"}
    got = parse_run(["--log-format", "text", "--log-lines=7", "--", "x"], env)
    assert (got.log_format, got.log_lines, got.cmd) == ("text", 7, ("x",))


@pytest.mark.parametrize("word,value", [("1", True), ("TRUE", True), ("yes", True), ("On", True),
                                        ("0", False), ("false", False), ("No", False),
                                        ("off", False), ("", False)])
def test_switch_variables_take_true_and_false_words(word, value):
    got = parse_run([], {"ENTRYPOINT_TIMESTAMPS": word, "ENTRYPOINT_NO_INSTALL": word})
    assert (got.timestamps, got.no_install) == (value, value)


def test_config_variable_is_left_to_the_lookup():
    # The lookup names $ENTRYPOINT_CONFIG in its messages; -c is only the flag.
    assert parse_run([], {"ENTRYPOINT_CONFIG": "a.toml"}).config is None
    assert parse_run(["-c", "b.toml"], {"ENTRYPOINT_CONFIG": "a.toml"}).config == "b.toml"


@pytest.mark.parametrize("env,flag", [("ENTRYPOINT_LOG_LINES", "0"), ("ENTRYPOINT_LOG_LINES", "-3"),
                                      ("ENTRYPOINT_READY_TIMEOUT", "0"),
                                      ("ENTRYPOINT_READY_TIMEOUT", "nan"),
                                      ("ENTRYPOINT_READY_TIMEOUT", "inf")])
def test_a_variable_and_its_flag_refuse_the_same_values_with_the_same_words(env, flag, capsys):
    opt = options.option(env)
    with pytest.raises(UsageError) as caught:
        parse_run([], {env: flag})
    assert caught.value.message.startswith(f"{env} ({opt.flags[0]}): ")
    with pytest.raises(options.AlreadyReported) as reported:
        parse_run([f"{opt.flags[0]}={flag}"], {})
    assert reported.value.exit_status == 2
    flag_message = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag_message.endswith(caught.value.message.split(": ", 1)[1])


def test_split_keeps_option_values_out_of_the_cmd():
    assert split_run_args(["-c", "x.toml", "--timestamps", "pytest", "-x"]) == \
        (["-c", "x.toml", "--timestamps"], ["pytest", "-x"])
    assert split_run_args(["--log-format=json", "--", "-weird"]) == (["--log-format=json"], ["-weird"])


def test_run_options_are_frozen():
    with pytest.raises(AttributeError):
        RunOptions().log_lines = 5


def test_every_option_is_in_the_environment_help():
    text = options.environment_help()
    for o in OPTIONS:
        assert o.env in text and o.flags[0] in text


README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_option_table_has_every_variable():
    text = README.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    for o in OPTIONS:
        assert any(f"`{o.env}" in row and f"`{o.flags[0]}" in row.replace("`install ", "`")
                   for row in rows), o.env


def test_readme_stands_alone():
    text = README.read_text()
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert "://" not in target, target
        path = (README.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(README.parent) and path.exists(), target
    for term in ("CONTRACT", "DESIGN", "§", "the seed"):
        assert term not in text, term


def test_every_bad_variable_is_reported_at_once():
    with pytest.raises(UsageError) as caught:
        parse_run([], {"ENTRYPOINT_COLOR": "blue", "ENTRYPOINT_LOG_LINES": "x"})
    text = caught.value.render()
    assert "ENTRYPOINT_COLOR (--color)" in text and "ENTRYPOINT_LOG_LINES (--log-lines)" in text
    assert caught.value.exit_status == 2
