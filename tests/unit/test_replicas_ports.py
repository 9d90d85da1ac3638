"""Replicas expansion, dependency rewriting, duplicate ports, and /proc/net/tcp parsing."""

from __future__ import annotations

import socket

import pytest

from entrypoint.config.replicas import (expand, group_of, port_problems, resolve_dependencies,
                                        same_but_replicas)
from entrypoint.config.spec import ServiceSpec
from entrypoint.core.ports import listening_inodes, taken_by

pytestmark = pytest.mark.timeout(30)


def spec(name, **kw):
    return ServiceSpec(name=name, argv=("/bin/true",), **kw)


def test_expand_names_env_and_ports():
    web = expand(spec("web", env=(("A", "1"),)), 3, 8000)
    assert [s.name for s in web] == ["web.1", "web.2", "web.3"]
    assert dict(web[2].env) == {"A": "1", "ENTRYPOINT_REPLICA": "3", "PORT": "8002"}
    assert web[1].replica_of == "web" and web[1].port == 8001
    assert expand(spec("db"), None, None) == [spec("db")]
    assert dict(expand(spec("db"), None, 5432)[0].env) == {"PORT": "5432"}


def test_dependents_wait_for_every_replica_and_are_unchanged_by_the_count():
    two = resolve_dependencies([*expand(spec("web"), 2, None),
                                spec("app", depends_on=(("web", "started"),))])
    three = resolve_dependencies([*expand(spec("web"), 3, None),
                                  spec("app", depends_on=(("web", "started"),))])
    assert two[-1].depends_on == (("web.1", "started"), ("web.2", "started"))
    assert same_but_replicas(two[-1], three[-1])
    assert two[0] == three[0]                       # web.1 itself is the same spec
    assert not same_but_replicas(two[-1], spec("app"))
    assert group_of("web.12") == "web" and group_of("web") == "web"


def test_duplicate_ports_located():
    specs = [*expand(spec("a"), 2, 9000), *expand(spec("b"), None, 9001), *expand(spec("c"), None, 9002)]
    found = port_problems(specs, {"a": 'services[0] "a"', "b": 'services[1] "b"'})
    assert [(p.where, p.message) for p in found] == [
        ('services[1] "b": port', 'port 9001 of "b" is already declared by "a.2"')]


TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0
"""


def test_listening_inodes_only_listen_state_on_the_port():
    assert listening_inodes(TCP, 8080) == {4242}
    assert listening_inodes(TCP, 22) == {77}
    assert listening_inodes(TCP, 9999) == set()
    assert listening_inodes("garbage\n1: x y", 80) == set()


def test_taken_by_finds_this_process():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert taken_by(port) is None            # bound, not listening
        s.listen()
        import os
        assert f"pid {os.getpid()} (" in taken_by(port)
    assert taken_by(port) is None


def test_replicas_follow_their_port_in_healthchecks_and_own_their_log_file():
    from entrypoint.config.spec import HealthSpec

    http = HealthSpec(kind="http", target="http://127.0.0.1:8000/health")
    web = expand(spec("web", healthcheck=http, log_file="/var/log/web.log"), 2, 8000)
    assert [s.healthcheck.target for s in web] == ["http://127.0.0.1:8000/health",
                                                    "http://127.0.0.1:8001/health"]
    assert [s.log_file for s in web] == ["/var/log/web.1.log", "/var/log/web.2.log"]
    tcp = HealthSpec(kind="tcp", target="127.0.0.1:7000")
    assert expand(spec("r", healthcheck=tcp), 2, 7000)[1].healthcheck.target == "127.0.0.1:7001"
    other = HealthSpec(kind="tcp", target="127.0.0.1:9999")       # another port: left alone
    assert expand(spec("r", healthcheck=other), 2, 7000)[1].healthcheck.target == "127.0.0.1:9999"
    assert expand(spec("r", log_file="/var/log/r"), 2, None)[1].log_file == "/var/log/r.2"
