"""`check --strict` (CONTRACT §13): each service checked as its own user, every problem at
once; a throwaway user, real files and modes."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid

import pytest

from conftest import PYTHON, entrypoint_env

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root"),
    pytest.mark.skipif(not shutil.which("useradd"), reason="useradd not available"),
]


@pytest.fixture
def user():
    name = "epp" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "-f", name], capture_output=True)


@pytest.fixture
def place():
    """A directory the throwaway user can traverse (pytest's tmp_path is under a 0700 one)."""
    import tempfile
    path = tempfile.mkdtemp(prefix="ep-preflight-", dir="/tmp")
    os.chmod(path, 0o755)
    try:
        from pathlib import Path
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def check(config: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "entrypoint", "check", *extra, "-c", config],
                          env=entrypoint_env(), capture_output=True, text=True, timeout=30)


def test_strict_checks_as_the_services_user_all_at_once(user, place, write_config):
    tmp_path = place
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    (secret / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (secret / "run.sh").chmod(0o755)
    app = tmp_path / "app"
    app.mkdir(mode=0o755)
    (app / "bad-shebang.sh").write_text("#!/nonexistent/bash\necho\n")
    (app / "bad-shebang.sh").chmod(0o755)
    (app / "unreadable.sh").write_text("#!/bin/sh\necho\n")
    (app / "unreadable.sh").chmod(0o711)
    (app / "binary").write_bytes(open("/bin/true", "rb").read())
    (app / "binary").chmod(0o711)          # a binary runs without read permission
    (app / ".env").write_text("A=1\n")
    (app / ".env").chmod(0o600)
    config = write_config(f"""
        [[services]]
        name = "hidden"
        command = "{secret / 'run.sh'}"
        user = "{user.pw_name}"
        directory = "{secret}"
        env_file = "{app / '.env'}"
        [[services]]
        name = "scripts"
        command = "{app / 'bad-shebang.sh'}"
        pre_script = "{app / 'unreadable.sh'}"
        user = "{user.pw_name}"
        [[services]]
        name = "fine"
        command = "{app / 'binary'}"
        user = "{user.pw_name}"
        directory = "{app}"
        [[services]]
        name = "as-root"
        command = "{secret / 'run.sh'}"
    """)
    # The ordinary check runs as root, who can do all of it.
    assert check(config).returncode == 0
    done = check(config, "--strict")
    assert done.returncode == 2, done
    err = done.stderr
    assert "Traceback" not in err
    who = f'as user "{user.pw_name}" (uid {user.pw_uid})'
    expected = [
        f'service "hidden": command: {who}: "{secret / "run.sh"}" cannot be reached',
        f'service "hidden": directory: {who}: "{secret}" cannot be entered',
        f'service "hidden": env_file: {who}: "{app / ".env"}" is not readable',
        f'service "scripts": command (its #! interpreter): {who}: "/nonexistent/bash": No such file',
        f'service "scripts": pre_script: {who}: script "{app / "unreadable.sh"}" is not readable',
    ]
    for line in expected:
        assert line in err, f"{line!r} not in:\n{err}"
    assert '"fine"' not in err and '"as-root"' not in err
    assert "5 problems" in err


def test_strict_passes_a_good_config_and_reads_the_variable(user, write_config):
    config = write_config(f"""
        [[services]]
        name = "ok"
        command = "/bin/sleep"
        args = ["1"]
        user = "{user.pw_name}"
        directory = "/tmp"
    """)
    done = subprocess.run([PYTHON, "-m", "entrypoint", "check", "-c", config],
                          env=entrypoint_env(ENTRYPOINT_STRICT="1"), capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([PYTHON, "-m", "entrypoint", "check", "-c", config],
                          env=entrypoint_env(ENTRYPOINT_STRICT="maybe"), capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "ENTRYPOINT_STRICT" in done.stderr
