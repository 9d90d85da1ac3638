"""CONTRACT §2 `user`/`group` and §3 on real processes: services (and their hooks) run as
another user, with that user's uid, gid, supplementary groups, HOME, USER and LOGNAME, and
really without root's rights.

Needs root (to create throwaway users and to switch to them). Users and groups are created
with unique names and removed in the fixture's finalizer, even when a test fails.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid

import pytest

from conftest import service_lines

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root"),
    pytest.mark.skipif(not (shutil.which("useradd") and shutil.which("groupadd")),
                       reason="useradd/groupadd not available"),
]

# The services' own interpreter must be usable by the throwaway users: the test runner's
# may live under /root (pyenv), which they cannot enter.
SYSTEM_PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3")
                      if os.access(p, os.X_OK)), None)


@pytest.fixture
def accounts():
    """Create throwaway users and groups; all are deleted at teardown."""
    users: list[str] = []
    groups: list[str] = []

    class Accounts:
        @staticmethod
        def group() -> grp.struct_group:
            name = "epg" + uuid.uuid4().hex[:8]
            subprocess.run(["groupadd", name], check=True, capture_output=True)
            groups.append(name)
            return grp.getgrnam(name)

        @staticmethod
        def user(*extra_groups: str) -> pwd.struct_passwd:
            name = "epu" + uuid.uuid4().hex[:8]
            extra = ["-G", ",".join(extra_groups)] if extra_groups else []
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", *extra, name], check=True,
                           capture_output=True)
            users.append(name)
            return pwd.getpwnam(name)

    yield Accounts
    for name in users:
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True)
    for name in groups:
        subprocess.run(["groupdel", name], capture_output=True)




# What the service (run as another user) reports about itself, one `key=value` per line.
INSPECT = r"""
import os, sys
secret = sys.argv[1]
print("uid=%d,%d,%d" % os.getresuid(), flush=True)
print("gid=%d,%d,%d" % os.getresgid(), flush=True)
print("groups=" + ",".join(str(g) for g in sorted(os.getgroups())), flush=True)
for key in ("HOME", "USER", "LOGNAME"):
    print(f"{key}={os.environ.get(key)}", flush=True)
try:
    open(secret).read()
    print("secret=read", flush=True)
except PermissionError:
    print("secret=denied", flush=True)
try:
    os.setuid(0)
    print("setuid0=allowed", flush=True)
except PermissionError:
    print("setuid0=denied", flush=True)
try:
    os.close(os.open("/dev/tty", os.O_RDWR))
    print("devtty=ok", flush=True)
except OSError as exc:
    print(f"devtty={exc.strerror}", flush=True)
try:
    os.close(os.open(os.ttyname(0), os.O_RDWR))   # its terminal by name, as `tty`, gpg, ssh do
    print("ownpty=ok", flush=True)
except OSError as exc:
    print(f"ownpty={exc.strerror}", flush=True)
"""


@pytest.fixture
def shared(tmp_path):
    """A directory every user can enter: the inspect script, a pre_script, a root-only file."""
    if SYSTEM_PYTHON is None:
        pytest.skip("no system python3 that other users can run")
    d = tempfile.mkdtemp(prefix="ep-users-")
    os.chmod(d, 0o755)
    inspect = os.path.join(d, "inspect.py")
    with open(inspect, "w") as f:
        f.write(INSPECT)
    os.chmod(inspect, 0o644)
    pre = os.path.join(d, "pre.sh")
    with open(pre, "w") as f:
        f.write('#!/bin/sh\necho "pre uid=$(id -u) gid=$(id -g) HOME=$HOME USER=$USER"\n')
    os.chmod(pre, 0o755)
    secret = os.path.join(d, "secret")
    with open(secret, "w") as f:
        f.write("root only\n")
    os.chmod(secret, 0o600)
    yield {"dir": d, "inspect": inspect, "pre": pre, "secret": secret}
    shutil.rmtree(d, ignore_errors=True)


def report(runner, name: str) -> dict[str, str]:
    out = {}
    for line in service_lines(runner, name):
        key, sep, value = line.partition("=")
        if sep and " " not in key:
            out[key] = value
    return out


def run_service(run_entrypoint, write_config, tagged, shared, identity: str,
                extra: str = "") -> dict[str, str]:
    cfg = write_config(f"""
        [[services]]
        name = "who"
        command = "{SYSTEM_PYTHON}"
        args = ["{shared['inspect']}", "{shared['secret']}"]
        oneshot = true
        directory = "{shared['dir']}"
        {identity}
        {extra}
    """)
    r = run_entrypoint("-c", cfg, env=tagged)
    assert r.wait() == 0, r.output + r.stderr
    facts = report(r, "who")
    assert "devtty" in facts, r.output
    facts["_lines"] = "\n".join(service_lines(r, "who"))
    return facts


def test_user_by_name_gets_uid_gid_groups_and_env(run_entrypoint, write_config, tagged,
                                                  shared, accounts):
    extra = accounts.group()
    user = accounts.user(extra.gr_name)
    facts = run_service(run_entrypoint, write_config, tagged, shared, f'user = "{user.pw_name}"')
    assert facts["uid"] == f"{user.pw_uid},{user.pw_uid},{user.pw_uid}"    # real, eff., saved
    assert facts["gid"] == f"{user.pw_gid},{user.pw_gid},{user.pw_gid}"
    groups = {int(g) for g in facts["groups"].split(",") if g}
    assert groups == {user.pw_gid, extra.gr_gid}          # `id -G`; none of root's
    assert facts["HOME"] == user.pw_dir != "/root"
    assert facts["USER"] == facts["LOGNAME"] == user.pw_name
    # Permissions really dropped.
    assert facts["secret"] == "denied"
    assert facts["setuid0"] == "denied"
    # Its PTY belongs to it, as login, sshd and `docker run -t -u` arrange: it can open its
    # terminal as /dev/tty and by name.
    assert facts["devtty"] == "ok"
    assert facts["ownpty"] == "ok"


def test_group_override(run_entrypoint, write_config, tagged, shared, accounts):
    other = accounts.group()
    user = accounts.user()
    facts = run_service(run_entrypoint, write_config, tagged, shared,
                        f'user = "{user.pw_name}"\ngroup = "{other.gr_name}"')
    assert facts["uid"] == f"{user.pw_uid},{user.pw_uid},{user.pw_uid}"
    assert facts["gid"] == f"{other.gr_gid},{other.gr_gid},{other.gr_gid}"
    assert other.gr_gid in {int(g) for g in facts["groups"].split(",")}
    assert facts["secret"] == "denied"


@pytest.mark.parametrize("form", ["string", "integer"])
def test_numeric_uid_of_a_known_user(run_entrypoint, write_config, tagged, shared, accounts,
                                     form):
    user = accounts.user()
    value = f'"{user.pw_uid}"' if form == "string" else str(user.pw_uid)
    facts = run_service(run_entrypoint, write_config, tagged, shared, f"user = {value}")
    assert facts["uid"] == f"{user.pw_uid},{user.pw_uid},{user.pw_uid}"
    assert facts["gid"] == f"{user.pw_gid},{user.pw_gid},{user.pw_gid}"
    assert facts["HOME"] == user.pw_dir
    assert facts["USER"] == user.pw_name


def test_numeric_uid_not_in_passwd(run_entrypoint, write_config, tagged, shared):
    uid = next(u for u in range(54321, 60000) if not _uid_exists(u))
    facts = run_service(run_entrypoint, write_config, tagged, shared, f"user = {uid}")
    assert facts["uid"] == f"{uid},{uid},{uid}"
    assert facts["groups"] in ("", str(uid)), facts     # no supplementary groups of root
    assert facts["secret"] == "denied"


def _uid_exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def test_hooks_run_as_the_user(run_entrypoint, write_config, tagged, shared, accounts):
    user = accounts.user()
    facts = run_service(run_entrypoint, write_config, tagged, shared, f'user = "{user.pw_name}"',
                        extra=f'pre_script = "{shared["pre"]}"\npost_script = "{shared["pre"]}"')
    expected = (f"pre uid={user.pw_uid} gid={user.pw_gid} HOME={user.pw_dir} "
                f"USER={user.pw_name}")
    assert facts["_lines"].count(expected) == 2, facts["_lines"]   # pre_script and post_script


def test_check_rejects_unknown_user_with_location(run_entrypoint, write_config, tagged):
    name = "epnouser" + uuid.uuid4().hex[:6]
    cfg = write_config(f"""
        [[services]]
        name = "fine"
        command = "sleep 1"
        [[services]]
        name = "app"
        command = "sleep 1"
        user = "{name}"
    """)
    r = run_entrypoint("check", "-c", cfg, env=tagged)
    assert r.wait() == 2
    message = r.stderr + r.output
    assert f'services[1] "app"' in message, message
    assert "user" in message and name in message, message
    # The runner refuses it the same way, and starts nothing.
    r = run_entrypoint("-c", cfg, env=tagged)
    assert r.wait() == 2
    assert name in r.stderr
    assert not any("started" in line for line in r.lines)
