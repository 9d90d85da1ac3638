"""The notify protocol: parsing, per-service state, and the socket's own checks (real
datagrams on a real socket; the sender's pid comes from the kernel)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from entrypoint.core.notify import (MAX_DATAGRAM, NotifyError, NotifySocket, NotifyState, parse,
                                    parse_when, send, session_and_group)

pytestmark = pytest.mark.timeout(30)


def test_parse_lines_and_last_key_wins():
    assert parse(b"READY=1\nSTATUS=a=b c\n\nSTATUS=x") == {"READY": "1", "STATUS": "x"}


@pytest.mark.parametrize("data", [b"", b"\n", b"ready=1", b"READY", b"=1", b"READY=1\0",
                                  b"\xff\xfe=1", b"STATUS=ok\nno equals here"])
def test_parse_refuses_malformed(data):
    with pytest.raises(NotifyError):
        parse(data)


def test_parse_when_forms():
    now = 1_700_000_000.0
    assert parse_when("+60", now) == now + 60
    assert parse_when("1700000500", now) == 1_700_000_500
    assert parse_when("2023-11-14T22:13:20Z", now) == 1_700_000_000
    for bad in ("soon", "+x", "-5", "+1e400", "9" * 40):
        with pytest.raises(NotifyError):
            parse_when(bad, now)


def test_state_progress_rate_eta_and_clear():
    state = NotifyState()
    said = state.apply({"STATUS": "importing", "X_PROGRESS": "10/110"}, 0.0, 100.0)
    assert said == {"STATUS", "X_PROGRESS"}
    state.apply({"X_PROGRESS": "60/110", "X_FAILED": "2", "X_NEXT_RUN": "+30"}, 50.0, 110.0)
    shown = state.to_json(110.0)
    assert shown["status"] == "importing"
    assert shown["progress"] == {"done": 60, "total": 110, "failed": 2, "percent": 54.5,
                                 "rate": 5.0, "eta": 10.0}
    assert shown["next_run"] == 80.0
    assert not shown["ready"]
    assert "READY" in state.apply({"READY": "1"}, 0, 111.0) and state.ready
    state.clear_run()
    assert state.to_json()["progress"] is None and state.status == "" and not state.ready
    assert state.next_run == 80.0          # about the next run: kept


def test_state_bad_value_applies_nothing():
    state = NotifyState()
    with pytest.raises(NotifyError):
        state.apply({"STATUS": "x", "X_PROGRESS": "lots"}, 0, 0)
    assert state.status == "" and state.done is None


def test_session_and_group_of_this_process():
    assert session_and_group(os.getpid()) == (os.getsid(0), os.getpgid(0))
    assert session_and_group(2**22 + 12345) is None


class Owner:
    name = "svc"

    def __init__(self):
        self.got = []

    def on_notify(self, fields):
        self.got.append(fields)


def run_socket(scenario, find):
    """Open a NotifySocket on a fresh loop, run `scenario(sock, owner)` in a thread-free way:
    datagrams are sent from this process (blocking sends are fine: the queue is large)."""
    owner = Owner()
    refusals = []

    async def main():
        loop = asyncio.get_running_loop()
        ns = NotifySocket(loop, lambda svc, f: svc.on_notify(f), lambda pid: find(pid, owner),
                          refusals.append)
        try:
            await scenario(ns, owner)
        finally:
            ns.close()
        assert not os.path.exists(ns.path)
    asyncio.run(main())
    return owner, refusals


async def settle(ns, received):
    for _ in range(200):
        if ns.counters["received"] >= received:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {ns.counters} after 2s")


def raw_send(path, data):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(data, path)


def test_socket_accepts_own_refuses_bad_and_counts():
    async def scenario(ns, owner):
        assert oct(os.stat(ns.path).st_mode & 0o777) == "0o666"
        raw_send(ns.path, b"READY=1\nSTATUS=up")
        raw_send(ns.path, b"X" * (MAX_DATAGRAM + 100))
        raw_send(ns.path, b"\xff\xff")
        raw_send(ns.path, b"X_PROGRESS=lots")
        await settle(ns, 4)
        assert owner.got == [{"READY": "1", "STATUS": "up"}, {"X_PROGRESS": "lots"}]
        c = ns.counters
        assert (c["received"], c["accepted"], c["oversized"], c["malformed"]) == (4, 2, 1, 1)

    def find(pid, owner):
        assert pid == os.getpid()       # the kernel's word, not the message's
        return owner

    class Strict(Owner):
        pass

    owner, refusals = run_socket(scenario, find)
    # One log line for the first refusal; the next ones are counted, not logged each.
    assert len(refusals) == 1 and "over 4096 bytes" in refusals[0]


def test_socket_refuses_strangers_and_acknowledges():
    async def scenario(ns, owner):
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(None, lambda: send(ns.path, "READY=1", wait=5))
        assert reply.startswith("refused:") and "belongs to no service" in reply
        assert owner.got == [] and ns.counters["stranger"] == 1

    run_socket(scenario, lambda pid, owner: None)


def test_socket_acknowledges_accepted():
    async def scenario(ns, owner):
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(None, lambda: send(ns.path, "STATUS=x", wait=5))
        assert reply == "ok"
        assert owner.got == [{"STATUS": "x", "X_ENTRYPOINT_ACK": "1"}]

    run_socket(scenario, lambda pid, owner: owner)


def test_sweep_removes_only_dead_runners_directories(tmp_path):
    from entrypoint.core.notify import DIR_PREFIX, sweep_stale

    dead = tmp_path / (DIR_PREFIX + "dead")
    dead.mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(dead / "notify.sock"))
    sock.close()                                   # its runner is gone: the file stays
    live = tmp_path / (DIR_PREFIX + "live")
    live.mkdir()
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    bound.bind(str(live / "notify.sock"))
    young = tmp_path / (DIR_PREFIX + "young")
    young.mkdir()
    other = tmp_path / "something-else"
    other.mkdir()
    try:
        now = os.stat(dead).st_mtime + 3600
        os.utime(young, (now - 5, now - 5))        # just made: maybe binding right now
        assert sweep_stale(str(tmp_path), now) == 1
        assert not dead.exists() and live.exists() and young.exists() and other.exists()
    finally:
        bound.close()
