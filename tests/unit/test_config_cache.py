"""config/cache.py: the validated config kept by `check` is used only while it is current
and only when nobody else could have written it (real files in a temp dir)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest

from entrypoint.config import cache, load as config_mod

pytestmark = pytest.mark.timeout(30)

CONFIG = """
[[services]]
name = "app"
command = "/bin/sh"
args = ["-c", "echo ${GREETING:-hello}"]
env_file = "app.env"

[[services]]
name = "db"
command = "/bin/sleep"
args = ["3600"]
depends_on = "app"
"""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "services.toml"
    path.write_text(CONFIG)
    (tmp_path / "app.env").write_text("A=1\nB=${FROM_ENV}\n")
    return str(path)


def kept(path: str, environ: dict) -> tuple:
    """What `check` does: validate with a recording environment, then save."""
    recording = cache.RecordingEnv(environ)
    config, warnings = config_mod.load(path, "toml", recording)
    where = cache.save(path, "toml", config, warnings, recording)
    assert where is not None
    return config, where


def test_the_kept_form_is_the_validated_config(setup):
    env = {"PATH": os.environ["PATH"], "GREETING": "hi", "FROM_ENV": "x"}
    recording = cache.RecordingEnv(env)
    config, warnings = config_mod.load(setup, "toml", recording)
    where = cache.save(setup, "toml", config, warnings, recording)
    assert where == cache.locations(setup)[0]
    assert warnings and cache.load(setup, "toml", dict(env)) == (config, warnings)
    assert config.service("app").argv[-1] == "echo hi"


def test_a_variable_that_was_not_used_does_not_matter(setup):
    env = {"PATH": os.environ["PATH"], "GREETING": "hi"}
    kept(setup, env)
    assert cache.load(setup, "toml", {**env, "UNRELATED": "1"}) is not None


@pytest.mark.parametrize("change", [
    {"GREETING": "bye"},            # changed
    {"GREETING": None},             # removed
    {"FROM_ENV": "y"},              # used by python-dotenv inside the env file
    {"PATH": "/nowhere"},           # commands were resolved along it
])
def test_a_changed_variable_it_used_means_validate_again(setup, change):
    env = {"PATH": os.environ["PATH"], "GREETING": "hi", "FROM_ENV": "x"}
    kept(setup, env)
    changed = {k: v for k, v in {**env, **change}.items() if v is not None}
    assert cache.load(setup, "toml", changed) is None


def test_a_changed_config_or_env_file_means_validate_again(setup, tmp_path):
    env = {"PATH": os.environ["PATH"]}
    kept(setup, env)
    os.utime(setup, (0, 0))                         # a touch alone changes nothing
    assert cache.load(setup, "toml", env) is not None
    (tmp_path / "app.env").write_text("A=2\n")
    assert cache.load(setup, "toml", env) is None
    kept(setup, env)
    with open(setup, "a") as f:
        f.write("# one comment more\n")
    assert cache.load(setup, "toml", env) is None


@pytest.mark.parametrize("garbage", [
    b"", b"{", b"\xff\xfe", b"[]", b'{"key": 1}',
    json.dumps({"key": None, "config": {"@": "Config", "source": 1}}).encode(),
])
def test_a_corrupt_cache_is_ignored(setup, garbage):
    env = {"PATH": os.environ["PATH"]}
    _, where = kept(setup, env)
    with open(where, "wb") as f:
        f.write(garbage)
    assert cache.load(setup, "toml", env) is None


def test_a_forged_class_name_is_never_built(setup):
    env = {"PATH": os.environ["PATH"]}
    _, where = kept(setup, env)
    with open(where) as f:
        body = json.load(f)
    body["config"]["services"][0]["@"] = "Literal"      # a name in spec.py, not a spec class
    with open(where, "w") as f:
        json.dump(body, f)
    assert cache.load(setup, "toml", env) is None


def test_a_cache_others_may_write_or_a_link_is_not_trusted(setup, tmp_path):
    env = {"PATH": os.environ["PATH"]}
    _, where = kept(setup, env)
    os.chmod(where, 0o666)
    assert cache.load(setup, "toml", env) is None
    os.chmod(where, 0o644)
    assert cache.load(setup, "toml", env) is not None
    os.rename(where, tmp_path / "elsewhere.json")
    os.symlink(tmp_path / "elsewhere.json", where)
    assert cache.load(setup, "toml", env) is None


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"), reason="needs root")
def test_as_root_a_cache_owned_by_another_user_is_not_trusted(setup):
    env = {"PATH": os.environ["PATH"]}
    _, where = kept(setup, env)
    name = "epc" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        shutil.chown(where, user=name)
        assert cache.load(setup, "toml", env) is None
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_the_cache_is_no_more_readable_than_what_it_holds(setup, tmp_path):
    os.chmod(tmp_path / "app.env", 0o600)           # a secret in an env file
    _, where = kept(setup, {"PATH": os.environ["PATH"]})
    assert os.stat(where).st_mode & 0o777 == 0o600


def test_a_read_only_config_directory_uses_the_cache_directory(setup, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere; the fallback is the same code")
    os.chmod(tmp_path, 0o555)
    try:
        _, where = kept(setup, {"PATH": os.environ["PATH"]})
        assert where == cache.locations(setup)[1]
    finally:
        os.chmod(tmp_path, 0o755)
