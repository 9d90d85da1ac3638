"""Procfile mode (CONTRACT §2): first exit stops all, with that status; .env is loaded."""

import signal

import pytest

from conftest import service_lines

pytestmark = pytest.mark.timeout(60)


def write(tmp_path, text, env=None):
    (tmp_path / "Procfile").write_text(text)
    if env is not None:
        (tmp_path / ".env").write_text(env)
    return str(tmp_path / "Procfile")


def test_first_exit_stops_all_with_its_status(run_entrypoint, tmp_path):
    procfile = write(tmp_path, "# comment\n\nweb: echo web up; sleep 30\n"
                               "job: sleep 0.5; echo job done $GREETING; exit 6\n",
                     env="GREETING=hi\n")
    r = run_entrypoint("--procfile", procfile)
    assert r.wait() == 6
    assert service_lines(r, "job") == ["job done hi"]
    r.wait_for(r"web stopped")


def test_exit_zero_also_stops_all(run_entrypoint, tmp_path):
    procfile = write(tmp_path, "web: sleep 30\nquick: true\n")
    r = run_entrypoint("--procfile", procfile)
    assert r.wait() == 0


def test_killed_process_gives_128_plus_n(run_entrypoint, tmp_path):
    procfile = write(tmp_path, "web: sleep 30\nvictim: sleep 0.3; kill -TERM $$\n")
    r = run_entrypoint("--procfile", procfile)
    assert r.wait() == 128 + signal.SIGTERM


def test_found_in_cwd_and_signal_is_graceful(run_entrypoint, tmp_path):
    write(tmp_path, "a: echo a up; sleep 30\nb: echo b up; sleep 30\n")
    r = run_entrypoint(cwd=str(tmp_path))
    r.wait_for(r"a +\| a up")
    r.wait_for(r"b +\| b up")
    r.signal(signal.SIGINT)
    assert r.wait() == 0
