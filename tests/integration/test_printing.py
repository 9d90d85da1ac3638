"""CONTRACT §5 on real processes: prefixes, no lost or cut lines, partial lines, formats."""

import json
import os
import re
import signal

import pytest

from conftest import entrypoint_env, service_lines

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("tty", ["true", "false"])
def test_every_line_arrives_whole_even_just_before_death(run_entrypoint, write_config, tty):
    # Two services race 20,000 lines each, then die at once (SIGKILL themselves).
    script = ("import os, sys\\n"
              "name = sys.argv[1]\\n"
              "for i in range(20000): sys.stdout.write(f'{name} line {i:05d} ' + 'x' * 60 + '\\\\n')\\n"
              "sys.stdout.write('last words\\\\n'); sys.stdout.flush()\\n"
              "os.kill(os.getpid(), 9)\\n")
    cfg = write_config(f"""
        [[services]]
        name = "a"
        command = "python3"
        args = ["-c", "{script}", "a"]
        tty = {tty}
        restart = "no"
        [[services]]
        name = "bb"
        command = "python3"
        args = ["-c", "{script}", "bb"]
        tty = {tty}
        restart = "no"
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait(40) == 1        # both FAILED (killed by SIGKILL)
    for name in ("a", "bb"):
        lines = service_lines(r, name)
        assert lines[-1] == "last words"
        body = lines[:-1]
        assert len(body) == 20000
        for i, line in enumerate(body):
            assert line == f"{name} line {i:05d} " + "x" * 60
    for line in r.lines:           # nothing interleaved: every line is one whole line
        assert re.fullmatch(r"(entrypoint|a +|bb +) \| .*", line), line


def test_partial_line_is_flushed_after_a_short_delay(run_entrypoint, write_config):
    cfg = write_config("""
        [[services]]
        name = "prompt"
        command = "sh"
        args = ["-c", "printf 'password: '; sleep 30"]
    """)
    r = run_entrypoint("-c", cfg)
    r.wait_for(r"prompt +\| password: $", timeout=5)
    r.signal(signal.SIGTERM)
    assert r.wait() == 0


def test_json_log_format_and_stderr_apart(run_entrypoint, write_config):
    cfg = write_config("""
        [[services]]
        name = "split"
        command = "sh"
        args = ["-c", "echo to-out; echo to-err >&2"]
        tty = false
        oneshot = true
    """)
    r = run_entrypoint("-c", cfg, "--log-format", "json")
    assert r.wait() == 0
    records = [json.loads(line) for line in r.lines]
    assert all({"ts", "service", "stream", "line"} <= set(rec) for rec in records)
    mine = {(rec["stream"], rec["line"]) for rec in records if rec["service"] == "split"}
    assert mine == {("stdout", "to-out"), ("stderr", "to-err")}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", records[0]["ts"])


def test_timestamps(run_entrypoint, write_config):
    cfg = write_config("""
        [[services]]
        name = "t"
        command = "echo stamped"
        oneshot = true
    """)
    r = run_entrypoint("-c", cfg, env=entrypoint_env(ENTRYPOINT_TIMESTAMPS="1"))
    assert r.wait() == 0
    r.wait_for(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z t +\| stamped$")


def test_colour_policy(run_entrypoint, write_config):
    cfg = write_config("""
        [[services]]
        name = "c"
        command = "echo colourful"
        oneshot = true
    """)
    plain = run_entrypoint("-c", cfg)
    assert plain.wait() == 0 and "\x1b[" not in plain.output
    env = entrypoint_env(FORCE_COLOR="1")          # FORCE_COLOR beats NO_COLOR
    forced = run_entrypoint("-c", cfg, env=env)
    assert forced.wait() == 0
    assert re.search(r"\x1b\[[0-9;]+mc +\x1b\[0m? ?\|? ?.*colourful|\x1b\[[0-9;]+mc", forced.output)
    never = run_entrypoint("-c", cfg, "--color", "never", env=env)
    assert never.wait() == 0 and "\x1b[" not in never.output


def test_log_file_rotation(run_entrypoint, write_config, tmp_path):
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    cfg = write_config(f"""
        [[services]]
        name = "app"
        command = "python3"
        args = ["-c", "for i in range(3000): print(f'line {{i:04d}} ' + 'y' * 40)"]
        oneshot = true
        log_file = "{log}"
        log_max_bytes = 20000
        log_backups = 2
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait() == 0
    files = sorted(os.listdir(log.parent))
    assert files == ["app.log", "app.log.1", "app.log.2"]
    for name in files:
        size = (log.parent / name).stat().st_size
        assert 0 < size <= 20000
        text = (log.parent / name).read_text()
        assert text.endswith("\n") and " | " not in text      # raw lines, no prefix
    assert (log.parent / "app.log").read_text().splitlines()[-1].startswith("line 2999 ")
