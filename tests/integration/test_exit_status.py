"""CONTRACT §7: every row of the exit-status table, on the real CLI and real processes."""

import signal

import pytest

pytestmark = pytest.mark.timeout(60)


def test_cmd_status_becomes_ours(run_entrypoint, write_config):
    cfg = write_config("""
        [[services]]
        name = "bg"
        command = "sleep 30"
    """)
    r = run_entrypoint("-c", cfg, "--", "sh", "-c", "echo from-cmd; exit 3")
    assert r.wait() == 3
    assert "from-cmd" in r.lines            # the CMD's output is not prefixed
    r.wait_for(r"bg +\| |bg stopped")


def test_cmd_killed_by_signal_gives_128_plus_n(run_entrypoint, write_config):
    cfg = write_config("[timeouts]\nservice_shutdown_timeout = 2\n")
    r = run_entrypoint("-c", cfg, "sh", "-c", "kill -USR2 $$")  # a CMD is not interpolated
    assert r.wait() == 128 + signal.SIGUSR2


def test_docker_form_without_double_dash(run_entrypoint, write_config):
    cfg = write_config("")
    r = run_entrypoint("-c", cfg, "python3", "-c", "import sys; print('argv', sys.argv[1:])", "-x")
    assert r.wait() == 0
    assert "argv ['-x']" in r.lines


@pytest.mark.parametrize("script, expected", [
    ("exit 7", 7),
    ("kill -9 $$$$", 128 + 9),   # $$ is a literal $ in services.toml
    ("exit 0", 1),
])
def test_required_service_failed(run_entrypoint, write_config, script, expected):
    cfg = write_config(f"""
        [[services]]
        name = "other"
        command = "sleep 30"

        [[services]]
        name = "critical"
        command = "sh"
        args = ["-c", "sleep 0.2; {script}"]
        required = true
        restart = "always"
        restart_delay = 0.1
        restart_limit = 2
        oneshot = false
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait() == expected
    r.wait_for(r"critical: gave up after 2 quick failures")


def test_graceful_shutdown_on_signal_is_0(run_entrypoint, write_config):
    cfg = write_config("""
        [[services]]
        name = "a"
        command = "sleep 60"
        [[services]]
        name = "b"
        command = "sleep 60"
        depends_on = "a"
    """)
    r = run_entrypoint("-c", cfg)
    r.wait_for(r"b: started")
    r.signal(signal.SIGTERM)
    assert r.wait() == 0


@pytest.mark.parametrize("second, expected", [("exit 0", 0), ("exit 4", 1)])
def test_every_service_ended_by_itself(run_entrypoint, write_config, second, expected):
    cfg = write_config(f"""
        [[services]]
        name = "once"
        command = "true"
        oneshot = true
        [[services]]
        name = "loop"
        command = "sh"
        args = ["-c", "echo hi; {second}"]
        restart = "no"
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait() == expected


def test_never_ready_for_cmd_is_1_and_names_them(run_entrypoint, write_config):
    cfg = write_config("""
        [[services]]
        name = "db"
        command = "python3"
        args = ["-u", "-c", "print('db booting'); import time; time.sleep(60)"]
        healthcheck = { tcp = "127.0.0.1:1", interval = 0.2 }
    """)
    r = run_entrypoint("-c", cfg, "--ready-timeout", "1.5", "--", "echo", "never-runs")
    assert r.wait() == 1
    assert "never-runs" not in r.lines
    r.wait_for(r"not ready after 1.5s.*db")
    r.wait_for(r"db +\| db booting")


def test_invalid_config_is_2_and_starts_nothing(run_entrypoint, write_config, tmp_path):
    marker = tmp_path / "started"
    cfg = write_config(f"""
        [[services]]
        name = "fine"
        command = "touch"
        args = ["{marker}"]
        [[services]]
        name = "broken"
        command = "sleep 1"
        depends_on = "nope"
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait() == 2
    assert 'unknown service "nope"' in r.stderr
    assert not marker.exists()


def test_no_config_and_no_cmd_is_2_naming_places(run_entrypoint, tmp_path):
    r = run_entrypoint(cwd=str(tmp_path))
    assert r.wait() == 2
    assert "services.toml" in r.stderr and "Procfile" in r.stderr


def test_cmd_not_found_is_127_and_starts_nothing(run_entrypoint, write_config):
    cfg = write_config("""
        [[services]]
        name = "a"
        command = "sleep 60"
    """)
    r = run_entrypoint("-c", cfg, "no-such-command-xyz")
    assert r.wait() == 127
    assert "no-such-command-xyz" in r.stderr
    assert not any("started" in line for line in r.lines)
