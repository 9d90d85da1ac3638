"""`entrypoint check` keeps the validated config; `run` starts from it only while it is
current and trustworthy, and validates as before otherwise (real runner, real files).

How a test tells the two apart: the service's program is deleted after `check`. A run
that trusts the kept form starts (and the spawn fails, said on its output); a run that
validates refuses the config with exit 2, naming the missing program."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from conftest import entrypoint_env

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def prepared(tmp_path, write_config, run_entrypoint):
    tool = tmp_path / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho tool ran\nexec sleep 3600\n")
    tool.chmod(0o755)
    path = write_config('[[services]]\nname = "app"\ncommand = "${TOOL}"\nrestart = "no"\n')
    env = entrypoint_env(TOOL=str(tool), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    checked = run_entrypoint("check", "-c", path, cwd=tmp_path, env=env)
    assert checked.wait(30) == 0, checked.stderr
    kept = tmp_path / ".services.toml.validated.json"
    assert kept.is_file()
    tool.unlink()
    return path, env, kept, tool


def validated_again(runner) -> bool:
    """Exit 2 naming the missing program: the config was validated at this start."""
    status = runner.wait(30)
    assert "Traceback" not in runner.stderr
    return status == 2 and "tool" in runner.stderr


def test_run_starts_from_what_check_kept(prepared, run_entrypoint, tmp_path):
    path, env, kept, tool = prepared
    runner = run_entrypoint("-c", path, cwd=tmp_path, env=env)
    runner.wait_for(r"app.*(No such file|not found|cannot)", timeout=20)
    runner.signal(15)
    assert runner.wait(20) != 2


def test_a_changed_config_file_is_validated_again(prepared, run_entrypoint, tmp_path):
    path, env, kept, tool = prepared
    with open(path, "a") as f:
        f.write("# edited after the build\n")
    assert validated_again(run_entrypoint("-c", path, cwd=tmp_path, env=env))


def test_a_changed_variable_it_used_is_validated_again(prepared, run_entrypoint, tmp_path):
    path, env, kept, tool = prepared
    env = {**env, "TOOL": str(tool) + "2"}
    assert validated_again(run_entrypoint("-c", path, cwd=tmp_path, env=env))


def test_a_corrupt_kept_file_is_ignored(prepared, run_entrypoint, tmp_path):
    path, env, kept, tool = prepared
    kept.write_bytes(kept.read_bytes()[:100])
    assert validated_again(run_entrypoint("-c", path, cwd=tmp_path, env=env))


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"), reason="needs root")
def test_as_root_a_kept_file_of_another_user_is_ignored(prepared, run_entrypoint, tmp_path):
    path, env, kept, tool = prepared
    name = "epk" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        shutil.chown(kept, user=name)
        assert validated_again(run_entrypoint("-c", path, cwd=tmp_path, env=env))
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_a_kept_file_others_may_write_is_ignored(prepared, run_entrypoint, tmp_path):
    path, env, kept, tool = prepared
    kept.chmod(0o646)
    assert validated_again(run_entrypoint("-c", path, cwd=tmp_path, env=env))


def test_check_says_what_it_kept_and_no_keep_writes_nothing(tmp_path, write_config,
                                                            run_entrypoint):
    path = write_config('[[services]]\nname = "app"\ncommand = "sleep"\nargs = ["1"]\n')
    kept = tmp_path / ".services.toml.validated.json"
    env = entrypoint_env(XDG_CACHE_HOME=str(tmp_path / "xdg"))
    for words in (["--no-keep"], []):
        checked = run_entrypoint("check", "-c", path, *words, cwd=tmp_path, env=env)
        assert checked.wait(30) == 0, checked.stderr
        if words:
            assert not kept.exists() and "kept the validated" not in checked.output
    assert kept.is_file() and f"kept the validated config in {kept}" in checked.output
