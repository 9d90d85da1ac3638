"""The `[web]` table: its checks, and the service it becomes (pure logic, no process)."""

from __future__ import annotations

import pytest

from entrypoint.config import web
from entrypoint.config.web import WEB_SERVICE, is_loopback, split_listen, web_service


def build(raw, environ=None, taken=()):
    problems = []
    spec = web_service(raw, environ or {}, "/", problems, set(taken))
    return spec, problems


def test_listen_forms():
    assert split_listen("127.0.0.1:9180") == ("127.0.0.1", 9180)
    assert split_listen("[::1]:80") == ("::1", 80)
    assert split_listen(":9180") == ("0.0.0.0", 9180)
    for bad in ("9180", "host:", "host:0", "host:70000", "host:http"):
        with pytest.raises(ValueError):
            split_listen(bad)
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.org")


def test_no_table_no_face():
    assert build(None) == (None, [])


@pytest.mark.skipif(not web.web_extra_installed(), reason="needs entrypoint[web]")
def test_the_face_is_a_service_with_its_credentials_in_its_environment():
    spec, problems = build({"token": "t" * 20, "read_token": "r" * 20})
    assert problems == []
    assert spec.name == WEB_SERVICE and spec.restart == "always" and not spec.tty
    assert "t" * 20 not in " ".join(spec.argv)
    env = dict(spec.env)
    assert env["ENTRYPOINT_WEB_TOKEN"] == "t" * 20 and env["ENTRYPOINT_WEB_READ_TOKEN"] == "r" * 20
    assert env["ENTRYPOINT_WEB_LISTEN"] == "127.0.0.1:9180"
    spec, _ = build(None, {"ENTRYPOINT_WEB_LISTEN": "127.0.0.1:9999"})
    assert dict(spec.env)["ENTRYPOINT_WEB_LISTEN"] == "127.0.0.1:9999"


def test_every_problem_is_located():
    _, problems = build({"listen": "0.0.0.0:9180"})
    assert [p.where for p in problems] == ["web: listen"] and "credential" in problems[0].message
    _, problems = build({"listen": "nowhere", "token": "short", "pam_group": "ops", "colour": 1})
    assert [p.where for p in problems] == ["web: colour"]       # shape first
    _, problems = build({"listen": "nowhere", "token": "short", "pam_group": "ops"})
    assert {p.where for p in problems} == {"web: listen", "web: token", "web: pam_group"}
    _, problems = build({}, taken={WEB_SERVICE})
    assert problems and WEB_SERVICE in problems[0].message


def test_without_the_extra_it_is_a_warning_and_stays_off(monkeypatch):
    monkeypatch.setattr(web, "web_extra_installed", lambda: False)
    spec, problems = build({})
    assert spec is None and len(problems) == 1 and problems[0].warning
    assert "entrypoint[web]" in problems[0].hint
