"""The control socket: a Unix socket speaking JSON lines, in the runner's asyncio loop.

Requests and replies are one JSON object per line (see protocol.py and the README).
The socket is created 0600 (bind.py); each peer is checked with SO_PEERCRED (root or the runner's
own uid). A request must fit in MAX_REQUEST bytes and arrive within REQUEST_TIMEOUT
seconds; anything malformed gets an error reply and the connection is closed. Nothing a
peer sends can raise out of here: the services keep running whatever happens on the socket.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import pwd
import time

from entrypoint.control.bind import bind_socket, peer_credentials
from entrypoint.control.operations import OperationError, Operations
from entrypoint.control.protocol import MAX_REQUEST, REQUEST_TIMEOUT, VERSION, encode, error

MAX_CONNECTIONS = 64
WRITE_TIMEOUT = 10.0           # a peer that does not read its reply for this long is dropped
FOLLOW_BACKLOG = 4 << 20       # bytes queued for a `logs -f` peer before it is dropped


def refusal(runner_uid: int) -> str:
    if runner_uid == 0:
        return ("permission denied: the runner runs as uid 0; run this as root "
                "(e.g. `docker exec -u 0 CONTAINER entrypoint ...`)")
    return f"permission denied: the runner runs as uid {runner_uid}; run as root or as uid {runner_uid}"


class ControlServer:
    """Accepts control connections and answers them through `Operations`."""

    def __init__(self, operations: Operations, path: str, printer):
        self.ops = operations
        self.path = path
        self.printer = printer
        self.uid = os.geteuid()
        self._server: asyncio.AbstractServer | None = None
        self._identity: tuple[int, int] | None = None
        self._connections: set[asyncio.Task] = set()
        self._followers: set[asyncio.Event] = set()
        self._refused_logged: dict[int, float] = {}

    async def start(self) -> None:
        sock, self._identity = bind_socket(self.path, self.printer.system)
        self._server = await asyncio.start_unix_server(self._handle, sock=sock, limit=MAX_REQUEST)

    async def close(self) -> None:
        """Stop listening, end `logs -f` streams, drop connections, remove the socket file."""
        if self._server is not None:
            self._server.close()
        for ended in list(self._followers):
            ended.set()
        self.ops.events.close()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=1.0)
        for task in list(self._connections):
            task.cancel()
        self._remove_file()

    def _remove_file(self) -> None:
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:   # still ours, not a successor's
                os.unlink(self.path)
        except OSError:
            pass

    # -- one connection ---------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.CancelledError, asyncio.TimeoutError):
            pass
        except Exception as exc:    # a bug here must not reach the loop
            self.printer.system(f"control: internal error: {exc!r}", "error")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, reply: dict) -> None:
        writer.write(encode(reply))
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)

    async def _converse(self, reader, writer) -> None:
        sock = writer.get_extra_info("socket")
        pid, uid, _ = peer_credentials(sock)
        if uid not in (0, self.uid):
            now = time.monotonic()
            if now - self._refused_logged.get(uid, -60.0) >= 10.0:   # no log flood
                self._refused_logged[uid] = now
                self.printer.system(f"refused a control connection from uid {uid} (pid {pid})",
                                    "warning")
            await self._send(writer, error("forbidden", refusal(self.uid)))
            return
        if len(self._connections) > MAX_CONNECTIONS:
            await self._send(writer, error("busy", f"too many control connections "
                                                   f"(more than {MAX_CONNECTIONS}); try again"))
            return
        first = True
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            except asyncio.TimeoutError:
                if first:
                    await self._send(writer, error(
                        "timeout", f"no complete request line within {REQUEST_TIMEOUT:g}s"))
                return
            except ValueError:      # the line is longer than the stream's limit
                await self._send(writer, error(
                    "too_large", f"request larger than {MAX_REQUEST} bytes"))
                return
            if not line.strip():
                if not line:
                    return          # EOF
                continue
            first = False
            request, problem = parse_request(line)
            if problem is not None:
                await self._send(writer, problem)
                return
            if request["op"] == "logs" and request["args"].get("follow"):
                await self._follow(request, reader, writer)
                return
            if request["op"] == "events":
                await self._events(request, reader, writer)
                return
            origin = _origin(uid)
            via = request["args"].get("via")
            if isinstance(via, str) and via:    # a face on whose behalf it asks (HTTP)
                origin += f", for {via[:120]}"
            await self._send(writer, await self.answer(request, origin=origin))
            if reader.at_eof():
                return

    async def answer(self, request: dict, origin: str = "") -> dict:
        """The reply to a parsed request (also used by tests and, later, other transports)."""
        try:
            result = await self.ops.call(request["op"], request["args"], origin)
            reply = {"v": VERSION, "ok": True, "result": result}
        except OperationError as exc:
            reply = error(exc.code, exc.message, **exc.details)
        except Exception as exc:
            self.printer.system(f"control: {request['op']}: internal error: {exc!r}", "error")
            reply = error("internal", f"internal error: {exc!r}")
        if "id" in request:
            reply["id"] = request["id"]
        return reply

    async def _follow(self, request: dict, reader, writer) -> None:
        """`logs -f`: the tail, then one event per new block, until either side ends."""
        args = request["args"]
        queue: list[bytes] = []
        queued = 0
        wake = asyncio.Event()
        ended = asyncio.Event()
        overflow = False

        def on_block(name: str, block: bytes) -> None:
            nonlocal queued, overflow
            if overflow:
                return
            lines = block.decode("utf-8", "replace").split("\n")
            lines.pop()
            data = encode({"v": VERSION, "event": "log", "service": name, "lines": lines})
            queued += len(data)
            if queued > FOLLOW_BACKLOG:
                overflow = True
                ended.set()
            queue.append(data)
            wake.set()

        reply = await self.answer({**request, "args": {k: v for k, v in args.items()
                                                       if k != "follow"}})
        if not reply["ok"]:
            await self._send(writer, reply)
            return
        unsubscribe = self.ops.follow(args.get("names") or [], on_block)
        self._followers.add(ended)
        closed = asyncio.ensure_future(reader.read(1))      # the peer hung up (or sent junk)
        try:
            await self._send(writer, reply)
            while not ended.is_set() and not closed.done():
                waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(ended.wait())]
                await asyncio.wait([*waits, closed], return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
                wake.clear()
                if queue:
                    data, queue[:] = b"".join(queue), []
                    queued = 0
                    writer.write(data)
                    await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
            if not closed.done():
                reason = ("too far behind: more than 4 MiB of log lines were waiting"
                          if overflow else "the runner is exiting")
                await self._send(writer, {"v": VERSION, "event": "end", "reason": reason})
        finally:
            unsubscribe()
            self._followers.discard(ended)
            closed.cancel()


    async def _events(self, request: dict, reader, writer) -> None:
        """`events`: the snapshot, then one line per state or health change, until either
        side ends. A peer that falls behind gets a `fell_behind` line and a new snapshot."""
        reply = await self.answer(request)
        if not reply["ok"]:
            await self._send(writer, reply)
            return
        names = request["args"].get("names") or None
        subscriber = self.ops.events.subscribe(names)
        closed = asyncio.ensure_future(reader.read(1))      # the peer hung up (or sent junk)
        try:
            await self._send(writer, reply)
            while not closed.done():
                batch = asyncio.ensure_future(subscriber.get())
                await asyncio.wait([batch, closed], return_when=asyncio.FIRST_COMPLETED)
                if not batch.done():
                    batch.cancel()
                    break
                events, dropped = batch.result()
                if not events and subscriber.ended:
                    await self._send(writer, {"v": VERSION, "event": "end",
                                              "reason": "the runner is exiting"})
                    break
                if dropped:
                    writer.write(encode({"v": VERSION, "event": "fell_behind", "dropped": dropped,
                                         "services": self.ops.events.snapshot(names)}))
                writer.write(b"".join(encode({"v": VERSION, "event": "state", **e}) for e in events))
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        finally:
            self.ops.events.unsubscribe(subscriber)
            closed.cancel()


@functools.lru_cache(maxsize=16)
def _origin(uid: int) -> str:
    """Who asked, for the runner's log: `root (uid 0) via control socket`.

    Cached: a user lookup may block (NSS), and only root and the runner's own uid get
    this far, so the loop pays for it once or twice in the runner's life.
    """
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid}) via control socket"
    except KeyError:
        return f"uid {uid} via control socket"


def parse_request(line: bytes) -> tuple[dict | None, dict | None]:
    """(request, None) for a well-formed request line, else (None, error reply)."""
    try:
        request = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, error("bad_request", f"not a JSON object: {exc}")
    if not isinstance(request, dict):
        return None, error("bad_request", "a request must be a JSON object")
    version = request.get("v")
    if version != VERSION:
        return None, error("unsupported_version",
                           f'this runner speaks protocol version {VERSION}; send "v": {VERSION}'
                           + (f" (got {version!r})" if "v" in request else ""))
    op = request.get("op")
    if not isinstance(op, str):
        return None, error("bad_request", 'a request needs "op", the operation\'s name')
    args = request.get("args", {})
    if not isinstance(args, dict):
        return None, error("bad_request", '"args" must be an object')
    parsed = {"op": op, "args": args}
    if "id" in request:
        parsed["id"] = request["id"]
    return parsed, None
