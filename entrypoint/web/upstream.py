"""The web face's side of the control socket: requests, and one shared stream of state
changes and log lines with ids for Server-Sent Events.

One `events` stream and one `logs -f` stream from the runner feed every browser: the
hub numbers each item (`EPOCH-N`, the epoch new at each start of this process) and keeps
the last ones, so a client that reconnects with `Last-Event-ID` gets what it missed.
Each client has a bounded queue: a slow one is told it fell behind, never slows others.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections import deque

from entrypoint.control.protocol import VERSION, encode

READ_LIMIT = 32 << 20          # one reply line (a `logs` tail of 100,000 lines fits)
KEEP = 20_000                  # items kept for Last-Event-ID resume
CLIENT_QUEUE = 5_000           # items queued for one SSE client before it fell behind
LOGS_LINGER = 30.0             # seconds log lines are still followed after the last viewer


class Unavailable(Exception):
    """The runner cannot be reached (it is restarting us, or gone)."""


async def _send(path: str, op: str, args: dict):
    """Connect and send one request; (reader, writer). Unavailable when unreachable."""
    try:
        reader, writer = await asyncio.open_unix_connection(path, limit=READ_LIMIT)
    except OSError as exc:
        raise Unavailable(f"cannot reach the runner at {path}: {exc.strerror or exc}") from None
    try:
        writer.write(encode({"v": VERSION, "op": op, "args": args}))
        await writer.drain()
    except OSError as exc:
        writer.close()
        raise Unavailable(f"connection to the runner lost: {exc}") from None
    return reader, writer


async def request(path: str, op: str, **args) -> dict:
    """One request; the runner's reply object (ok or error). Unavailable when unreachable."""
    reader, writer = await _send(path, op, args)
    try:
        line = await reader.readline()
    except (OSError, ValueError) as exc:
        raise Unavailable(f"connection to the runner lost: {exc}") from None
    finally:
        writer.close()
    if not line:
        raise Unavailable("the runner closed the connection without answering")
    return json.loads(line)


async def stream(path: str, op: str, **args):
    """The reply, then every object the runner sends on that connection, until it closes."""
    reader, writer = await _send(path, op, args)
    try:
        while line := await reader.readline():
            yield json.loads(line)
    except (OSError, ValueError):
        return
    finally:
        writer.close()


class Client:
    """One SSE client's bounded queue: (id, kind, data) items it asked for."""

    def __init__(self, logs: set[str] | None, states: bool = True):
        self.logs = logs                # None: no logs; {"*"}: all; else those services
        self.states = states
        self.queue: deque = deque()
        self.fell_behind = False
        self.wake = asyncio.Event()

    def wants(self, kind: str, service: str) -> bool:
        if kind == "log":
            return self.logs is not None and ("*" in self.logs or service in self.logs)
        return self.states

    def put(self, item) -> None:
        if len(self.queue) >= CLIENT_QUEUE:
            self.queue.clear()
            self.fell_behind = True
        self.queue.append(item)
        self.wake.set()


class Hub:
    """The runner's state changes and log lines, numbered, kept, and fanned out."""

    def __init__(self, socket_path: str):
        self.path = socket_path
        self.epoch = secrets.token_hex(4)
        self.seq = 0
        self.kept: deque = deque(maxlen=KEEP)
        self.clients: set[Client] = set()
        self.states: dict[str, dict] = {}       # service -> its last event
        self._tasks: list[asyncio.Task] = []
        self._logs: asyncio.Task | None = None
        self._logs_idle: asyncio.TimerHandle | None = None
        self.logs_since = None      # seq from which log lines are complete (None: not followed)
        self.logs_ready = asyncio.Event()     # set while the runner streams log lines to us

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._follow_events())]

    async def stop(self) -> None:
        for task in [*self._tasks, self._logs]:
            if task is not None:
                task.cancel()

    # Log lines are followed only while some client wants them (and LOGS_LINGER seconds
    # after, so a reconnect resumes): with no one watching, the runner sends us nothing.
    def add(self, client: Client) -> None:
        self.clients.add(client)
        if client.logs is not None:
            if self._logs_idle is not None:
                self._logs_idle.cancel()
                self._logs_idle = None
            if self._logs is None:
                self.logs_since = self.seq
                self._logs = asyncio.ensure_future(self._follow_logs())

    def remove(self, client: Client) -> None:
        self.clients.discard(client)
        if self._logs is not None and not any(c.logs is not None for c in self.clients):
            if self._logs_idle is None:
                self._logs_idle = asyncio.get_running_loop().call_later(LOGS_LINGER, self._drop_logs)

    def _drop_logs(self) -> None:
        self._logs_idle = None
        if self._logs is not None and not any(c.logs is not None for c in self.clients):
            self._logs.cancel()
            self._logs = None
            self.logs_since = None
            self.logs_ready.clear()

    @property
    def last_id(self) -> str:
        return f"{self.epoch}-{self.seq}"

    def publish(self, kind: str, service: str, data: dict) -> None:
        self.seq += 1
        item = (f"{self.epoch}-{self.seq}", kind, service, json.dumps(data, separators=(",", ":")))
        self.kept.append((self.seq, item))
        for client in self.clients:
            if client.wants(kind, service):
                client.put(item)

    def since(self, last_event_id: str, client: Client) -> list | None:
        """The kept items after `last_event_id` that `client` wants; None when they are
        no longer all kept (or the id is of another run of this process)."""
        epoch, _, number = last_event_id.partition("-")
        if epoch != self.epoch or not number.isdigit():
            return None
        seq = int(number)
        if client.logs is not None and (self.logs_since is None or seq < self.logs_since):
            return None     # log lines were not followed all along since then
        if seq > self.seq or (self.kept and seq < self.kept[0][0] - 1) or (not self.kept and seq != self.seq):
            return None
        return [item for n, item in self.kept if n > seq and client.wants(item[1], item[2])]

    async def _follow_events(self) -> None:
        while True:
            try:
                async for obj in stream(self.path, "events"):
                    if "result" in obj:
                        for event in obj["result"]["services"]:
                            self.states[event["service"]] = event
                        self.publish("snapshot", "", {"services": list(self.states.values())})
                    elif obj.get("event") == "state":
                        obj.pop("v", None)
                        obj.pop("event", None)
                        self.states[obj["service"]] = obj
                        self.publish("state", obj["service"], obj)
                    elif obj.get("event") == "fell_behind":
                        for event in obj.get("services", []):
                            self.states[event["service"]] = event
                        self.publish("snapshot", "", {"services": list(self.states.values())})
            except Unavailable:
                pass
            await asyncio.sleep(0.5)

    async def _follow_logs(self) -> None:
        while True:
            try:
                async for obj in stream(self.path, "logs", names=[], lines=0, follow=True):
                    if "result" in obj:
                        self.logs_ready.set()
                    elif obj.get("event") == "log":
                        self.publish("log", obj["service"], {"service": obj["service"],
                                                             "lines": obj["lines"]})
            except Unavailable:
                pass
            self.logs_ready.clear()
            self.logs_since = self.seq      # lines may be missing before this point
            await asyncio.sleep(0.5)


def parent_socket(ppid: int | None = None) -> str | None:
    """The path of the Unix stream socket our parent (the runner) listens on, or None.

    Read from /proc: the socket inodes among the parent's fds, matched with the listening
    sockets of /proc/net/unix. So the web face needs no path passed (and none to keep in
    sync with --socket or ENTRYPOINT_SOCKET).
    """
    ppid = os.getppid() if ppid is None else ppid
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{ppid}/fd"):
            try:
                target = os.readlink(f"/proc/{ppid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                parts = line.split()
                # Flags 00010000 = listening; Type 0001 = stream; a path, not abstract.
                if (len(parts) >= 8 and parts[6] in inodes and parts[3] == "00010000"
                        and parts[4] == "0001" and parts[7].startswith("/")):
                    return parts[7]
    except OSError:
        return None
    return None
