"""The control protocol's pure parts: framing, socket paths, binding, diff, log merge,
rendering, install — without a runner."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from types import SimpleNamespace

import pytest

from entrypoint.cli import install as install_mod
from entrypoint.control import protocol
from entrypoint.cli.render import exit_text, human_duration, render_list
from entrypoint.control.server import bind_socket, parse_request, refusal
from entrypoint.errors import EntrypointError
from entrypoint.control.operations import LogIndex, OperationError, Operations
from entrypoint.output.ring import LogRing
from entrypoint.core.reload import diff
from entrypoint.config.spec import Config, ServiceSpec

pytestmark = pytest.mark.timeout(30)


# -- framing ---------------------------------------------------------------------------

def test_encode_is_one_line_with_version():
    line = protocol.encode({"v": 1, "ok": True, "result": {"text": "a\nb"}})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"v": 1, "ok": True, "result": {"text": "a\nb"}}
    assert protocol.error("busy", "later", n=3) == {
        "v": 1, "ok": False, "code": "busy", "error": "later", "details": {"n": 3}}


@pytest.mark.parametrize("line, code", [
    (b"nope\n", "bad_request"),
    (b"\xff\xfe{}\n", "bad_request"),
    (b"[]\n", "bad_request"),
    (b'{"op": "list"}\n', "unsupported_version"),
    (b'{"v": "1", "op": "list"}\n', "unsupported_version"),
    (b'{"v": 1}\n', "bad_request"),
    (b'{"v": 1, "op": 3}\n', "bad_request"),
    (b'{"v": 1, "op": "list", "args": []}\n', "bad_request"),
    (b"[" * 50000 + b"\n", "bad_request"),
])
def test_bad_requests_get_an_error_reply(line, code):
    request, reply = parse_request(line)
    assert request is None and reply["ok"] is False and reply["code"] == code
    assert reply["v"] == 1 and reply["error"]


def test_good_request_keeps_op_args_and_id():
    request, reply = parse_request(b'{"v": 1, "op": "logs", "args": {"names": ["a"]}, "id": "x"}\n')
    assert reply is None
    assert request == {"op": "logs", "args": {"names": ["a"]}, "id": "x"}
    assert parse_request(b'{"v":1,"op":"list"}')[0] == {"op": "list", "args": {}}


def test_refusal_names_the_runner_uid():
    assert refusal(0).startswith("permission denied: the runner runs as uid 0; run this as root")
    assert refusal(1000) == ("permission denied: the runner runs as uid 1000; "
                             "run as root or as uid 1000")


# -- socket paths ----------------------------------------------------------------------

def test_server_path_order(tmp_path, monkeypatch):
    assert protocol.server_path("/x.sock", {"ENTRYPOINT_SOCKET": "/y.sock"}) == "/x.sock"
    assert protocol.server_path(None, {"ENTRYPOINT_SOCKET": "/y.sock"}) == "/y.sock"
    writable = {"/run": True}
    monkeypatch.setattr(protocol.os.path, "isdir", lambda p: True)
    monkeypatch.setattr(protocol.os, "access", lambda p, mode: writable.get(p, True))
    assert protocol.server_path(None, {}) == "/run/entrypoint.sock"
    writable["/run"] = False
    assert protocol.server_path(None, {"XDG_RUNTIME_DIR": "/run/user/5"}) == \
        "/run/user/5/entrypoint.sock"
    assert protocol.server_path(None, {}) == f"/tmp/entrypoint-{os.getuid()}.sock"


def test_client_prefers_a_socket_that_exists(tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    sock_path = xdg / "entrypoint.sock"
    monkeypatch.setattr(protocol, "DEFAULT_PATH", str(tmp_path / "run" / "entrypoint.sock"))
    env = {"XDG_RUNTIME_DIR": str(xdg)}
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        path, places = protocol.client_path(None, env)
    assert path == str(sock_path)
    assert places[:2] == [protocol.DEFAULT_PATH, str(sock_path)]
    assert protocol.client_path(None, {"ENTRYPOINT_SOCKET": "/e.sock"}) == ("/e.sock", ["/e.sock"])
    assert protocol.client_path("/o.sock", {"ENTRYPOINT_SOCKET": "/e.sock"})[0] == "/o.sock"


# -- binding ---------------------------------------------------------------------------

def test_bind_is_0600_replaces_stale_and_refuses_live(tmp_path):
    path = str(tmp_path / "ctl.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()
    said = []
    sock, identity = bind_socket(path, said.append)
    try:
        assert said == [f"removed a stale control socket {path} (its runner is gone)"]
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert identity == (st.st_dev, st.st_ino)
        with pytest.raises(EntrypointError, match=rf"another entrypoint \(pid {os.getpid()}\) "
                                                  rf"is already listening on {path}"):
            bind_socket(path)
        assert os.stat(path).st_ino == identity[1]      # the live one is untouched
    finally:
        sock.close()


def test_bind_refuses_other_files_and_long_paths(tmp_path):
    path = tmp_path / "file.sock"
    path.write_text("data")
    with pytest.raises(EntrypointError, match="exists and is not a socket"):
        bind_socket(str(path))
    assert path.read_text() == "data"
    with pytest.raises(EntrypointError, match="too long"):
        bind_socket(str(tmp_path / ("x" * 120)))


# -- reload diff -----------------------------------------------------------------------

def _spec(name, *argv, **kw):
    return ServiceSpec(name=name, argv=tuple(argv) or ("/bin/true",), **kw)


def test_diff_by_spec_equality():
    old = Config("a.toml", (_spec("db"), _spec("web", "/bin/web"), _spec("old")))
    new = Config("a.toml", (_spec("web", "/bin/web", env=(("A", "1"),)), _spec("db"),
                            _spec("new")))
    d = diff(old, new)
    assert (d.added, d.removed, d.changed, d.unchanged) == (("new",), ("old",), ("web",), ("db",))
    assert d.describe() == "added new; removed old; changed web; 1 unchanged"
    assert diff(old, old).empty


# -- log merge -------------------------------------------------------------------------

def test_log_index_merges_in_arrival_order_and_follows(monkeypatch):
    rings = {"a": LogRing(3), "b": LogRing(3)}
    index = LogIndex()
    index.attach_all(rings)
    got = []
    unfollow = index.follow(["b"], lambda name, block: got.append((name, block)))
    rings["a"].append(b"a1\na2\n")
    rings["b"].append(b"b1\n")
    rings["a"].append(b"a3\n")
    rings["b"].append(b"b2\nb3\n")
    assert index.tail(rings, ["a", "b"], 4) == [("b", "b1"), ("a", "a3"), ("b", "b2"), ("b", "b3")]
    assert index.tail(rings, ["a", "b"], 100) == [
        ("a", "a1"), ("a", "a2"), ("b", "b1"), ("a", "a3"), ("b", "b2"), ("b", "b3")]
    rings["a"].append(b"a4\n")
    rings["a"].append(b"a5\n")            # the ring drops the block a1 a2: so does the index
    assert index.tail(rings, ["a"], 100) == [("a", "a3"), ("a", "a4"), ("a", "a5")]
    assert len(rings["a"]) == 3
    assert got == [("b", b"b1\n"), ("b", b"b2\nb3\n")]
    unfollow()
    rings["b"].append(b"b4\n")
    assert len(got) == 2
    assert index.tail(rings, ["a"], 0) == []


# -- operations over a stand-in supervisor ---------------------------------------------

def test_unknown_names_are_listed_with_a_suggestion():
    sup = SimpleNamespace(services={"web": object(), "worker": object()})
    ops = Operations(sup)
    with pytest.raises(OperationError) as info:
        ops.services(["web", "wrker", "zzz"])
    assert info.value.code == "unknown_service"
    assert info.value.message == ('unknown services "wrker" (did you mean "worker"?), "zzz"; '
                                  'known services: web, worker')
    assert info.value.details == {"unknown": ["wrker", "zzz"], "known": ["web", "worker"]}


@pytest.mark.parametrize("op, args, code", [
    ("nope", {}, "unknown_operation"),
    ("list", [], "bad_request"),
    ("start", {}, "usage"),
    ("stop", {"names": "web"}, "unknown_service"),
    ("logs", {"lines": True}, "bad_request"),
    ("logs", {"lines": 10**9}, "bad_request"),
    ("exec_spec", {}, "bad_request"),
])
def test_call_checks_its_arguments(op, args, code):
    import asyncio
    ops = Operations(SimpleNamespace(services={}, shutting_down=False))
    with pytest.raises(OperationError) as info:
        asyncio.run(ops.call(op, args))
    assert info.value.code == code


# -- rendering -------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, text", [
    (None, "-"), (0.4, "0s"), (3, "3s"), (59.9, "59s"), (125, "2m05s"), (3720, "1h02m"),
    (90000, "1d01h")])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_list_table():
    services = [
        {"name": "web", "state": "RUNNING", "health": "healthy", "pid": 42, "uptime": 125,
         "restarts": 1, "exit": {"code": None, "signal": 9, "text": "killed by SIGKILL"}},
        {"name": "init", "state": "COMPLETED", "health": "-", "pid": None, "uptime": None,
         "restarts": 0, "exit": {"code": 0, "signal": None, "text": "exit status 0"}},
        {"name": "x", "state": "PENDING", "health": "-", "pid": None, "uptime": None,
         "restarts": 0, "exit": None},
    ]
    assert render_list(services).splitlines() == [
        "NAME  STATE      HEALTH   PID  UPTIME  RESTARTS  EXIT",
        "web   RUNNING    healthy  42   2m05s   1         SIGKILL",
        "init  COMPLETED  -        -    -       0         0",
        "x     PENDING    -        -    -       0         -",
    ]
    assert exit_text({"code": 3, "signal": None}) == "3"


# -- install ---------------------------------------------------------------------------

def test_install_links_once_and_refuses_strangers(tmp_path, monkeypatch):
    target = tmp_path / "venv" / "bin" / "entrypoint"
    target.parent.mkdir(parents=True)
    target.write_text("#!/bin/sh\n")
    target.chmod(0o755)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    assert install_mod.install(str(bindir), str(target)) == (str(bindir / "entrypoint"), True)
    assert install_mod.install(str(bindir), str(target)) == (str(bindir / "entrypoint"), False)
    assert install_mod.find_executable(str(target), "/nowhere/python") == str(target)
    assert install_mod.find_executable("/x/__main__.py", str(target.parent / "python")) == str(target)
    assert install_mod.find_executable("/x/__main__.py", "/nowhere/python") is None

    def denied(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(install_mod.os, "symlink", denied)
    with pytest.raises(install_mod.InstallError, match="permission denied"):
        install_mod.install(str(tmp_path / "other"), str(target))


def test_client_does_not_load_the_runtime():
    code = ("import sys, entrypoint.cli.main, entrypoint.control.client, entrypoint.control.protocol\n"
            "import entrypoint.cli.control_commands, entrypoint.cli.render\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'asyncio', "
            "'subprocess', 'dotenv') or m in ('entrypoint.core.supervisor', 'entrypoint.core.service', "
            "'entrypoint.config.load', 'entrypoint.control.server', 'entrypoint.control.operations')]\n"
            "print(heavy)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": root}, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_exec_identity_never_exceeds_the_runner():
    from entrypoint.cli.control_commands import exec_identity

    claims_root = {"uid": 0, "gid": 0, "groups": [0]}
    # A runner that is not root: its own identity, whatever it claims.
    assert exec_identity(claims_root, 1000, 1000, [1000, 27]) == (1000, 1000, [1000, 27])
    # A root runner may run a service as anyone: its word goes.
    assert exec_identity({"uid": 33, "gid": 33, "groups": [33, 4]}, 0, 0, [0]) == (33, 33, [33, 4])
    assert exec_identity(claims_root, 0, 0, [0]) == (0, 0, [0])
    # A runner that does not say: the service runs as the runner.
    assert exec_identity({"uid": None, "gid": None}, 0, 0, [0, 1]) == (0, 0, [0, 1])
