"""The HTTP face's rules of who may do what (pure logic; the real server is tested in
tests/integration/test_web.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")

from entrypoint.web.auth import Auth, Denied, _loopback_host  # noqa: E402

ORIGIN = "http://127.0.0.1:9180"
LOCAL = {"host": "127.0.0.1:9180"}


def check(auth, method="GET", **headers):
    return auth.check(method, {**LOCAL, **headers}, {}, ORIGIN)


def status(auth, method="GET", **headers):
    try:
        check(auth, method, **headers)
        return 200
    except Denied as exc:
        return exc.status


def test_loopback_hosts():
    for host in ("127.0.0.1:9180", "localhost:1", "[::1]:9180", "127.3.4.5", "LOCALHOST"):
        assert _loopback_host(host), host
    for host in ("evil.example:9180", "10.0.0.1:9180", "[2001:db8::1]:80", "", "127.evil.com"):
        assert not _loopback_host(host), host


def test_roles_of_tokens():
    auth = Auth(token="o" * 20, read_token="r" * 20)
    assert check(auth, authorization="Bearer " + "o" * 20) == "operate"
    assert check(auth, authorization="bearer " + "r" * 20) == "read"
    assert status(auth) == 401
    assert status(auth, authorization="Bearer " + "x" * 20) == 401
    assert status(auth, authorization="Bearer") == 401
    assert status(auth, authorization="Basic abc") == 401
    assert status(auth, "POST", authorization="Bearer " + "r" * 20) == 403
    assert status(auth, "POST", authorization="Bearer " + "o" * 20) == 200
    assert status(auth, "POST", authorization="Bearer " + "o" * 20, origin="http://evil") == 403


def test_open_mode_is_loopback_and_same_origin_only():
    auth = Auth()
    assert auth.open and check(auth) == "operate"
    assert status(auth, "POST") == 200                       # curl: no Origin
    assert status(auth, "POST", origin=ORIGIN) == 200        # our own page
    assert status(auth, "POST", origin="http://evil.example") == 403
    assert status(auth, host="evil.example:9180") == 403     # DNS rebinding
