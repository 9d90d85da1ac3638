"""The connection side of the control client: find the runner's socket, check who serves
it, send one request, read the reply. `cli/control_commands.py` parses the subcommands
and prints the results.

Standard library only, plus `protocol` and `errors`: no pydantic, no asyncio, no runtime,
so that `entrypoint list` answers in tens of milliseconds.
"""

from __future__ import annotations

import json
import os
# `_socket`, the C module under `socket`: `socket.py` costs milliseconds per start (it
# builds enums of every constant) and this path needs only connect, send and recv.
import _socket
import struct

from entrypoint.errors import EXIT_FAILURE, EntrypointError, Unreachable
from entrypoint.control.protocol import EXIT_FOR_CODE, VERSION, client_path, encode

QUERY_TIMEOUT = 10.0        # list, status, health, logs: a runner silent this long is stuck
_CRED = struct.Struct("3i")    # struct ucred: pid, uid, gid


class ReplyError(EntrypointError):
    """The runner answered with an error; rendered as `entrypoint: MESSAGE`."""

    def __init__(self, reply: dict):
        code = reply.get("code", "")
        super().__init__(str(reply.get("error", "the runner reported an error")),
                         EXIT_FOR_CODE.get(code, EXIT_FAILURE))
        self.reply = reply
        self.code = code

    def render(self) -> str:
        lines = [f"entrypoint: {self.message}" if self.code != "invalid_config"
                 else f"entrypoint: reload rejected: {self.message}:"]
        details = self.reply.get("details") or {}
        lines += [f"  error: {p}" for p in details.get("problems", [])]
        for result in details.get("services", []):
            if not result.get("ok", True):
                lines += [f"  {result['name']} | {line}" for line in result.get("log", [])]
        return "\n".join(lines)


class Connection:
    """One connection to the runner; requests go out and replies come in as JSON lines.

    `server_pid`, `server_uid` and `server_gid` are the kernel's word (SO_PEERCRED) on
    who listens, not the runner's: `exec` never takes more privilege than `server_uid`.
    A socket found by looking in the usual places (no --socket, no $ENTRYPOINT_SOCKET) is
    trusted only when root or this user serves it: anyone may bind /tmp/entrypoint-0.sock
    first and answer `exec` with a uid of their choosing.
    """

    def __init__(self, path: str | None = None, timeout: float | None = QUERY_TIMEOUT):
        explicit = bool(path or os.environ.get("ENTRYPOINT_SOCKET"))
        self.path, places = client_path(path)
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self._buffer = bytearray()
        self._send_failed = False
        self.sock.settimeout(timeout)
        hint = ("is entrypoint running? If its socket is elsewhere, point at it with "
                "ENTRYPOINT_SOCKET=PATH or --socket PATH")
        if len(places) > 1:
            hint += f" (looked at {', '.join(places)})"
        try:
            self.sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            what = "nothing listens there"
            if isinstance(exc, FileNotFoundError):
                directory = os.path.dirname(self.path) or "."
                what = ("no such socket" if os.path.isdir(directory)
                        else f"no such socket: directory {directory} does not exist")
            self.sock.close()
            raise Unreachable(f"cannot reach a running entrypoint at {self.path} ({what}); "
                              f"{hint}{_others_hint(explicit)}") from None
        except PermissionError:
            self.sock.close()
            raise EntrypointError(_denied(self.path)) from None
        except TimeoutError:
            self.sock.close()
            raise Unreachable(f"the entrypoint at {self.path} did not accept the connection") from None
        except OSError as exc:
            self.sock.close()
            raise Unreachable(f"cannot reach a running entrypoint at {self.path} "
                              f"({exc.strerror or exc}); {hint}") from None
        self.server_pid, self.server_uid, self.server_gid = _CRED.unpack(
            self.sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _CRED.size))
        if not explicit and self.server_uid not in (0, os.geteuid()):
            self.sock.close()
            raise EntrypointError(
                f"refusing {self.path}: it is served by {_who(self.server_uid)} (pid "
                f"{self.server_pid}), neither root nor you, so its answers cannot be trusted; "
                f"if you mean that runner, name it: --socket {self.path} "
                f"(or ENTRYPOINT_SOCKET={self.path})")

    def send(self, op: str, **args) -> None:
        try:
            # MSG_NOSIGNAL: the client restores SIGPIPE's default for its stdout (as
            # `cat`), and a runner that hung up must not kill us before we read why.
            self.sock.sendall(encode({"v": VERSION, "op": op, "args": args}), _socket.MSG_NOSIGNAL)
        except (BrokenPipeError, ConnectionResetError):
            # The runner may have answered and closed before reading our request: it
            # refuses a stranger at once. Its reply is still in our receive queue.
            self._send_failed = True

    def receive(self) -> dict | None:
        """The next object from the runner, or None when it closed the connection."""
        try:
            line = self._readline()
        except TimeoutError:
            raise Unreachable(f"the entrypoint at {self.path} did not answer within "
                              f"{self.sock.gettimeout():g}s") from None
        except OSError as exc:
            raise EntrypointError(f"connection to {self.path} lost: {exc.strerror or exc}") from None
        if not line:
            return None
        try:
            return json.loads(line)
        except ValueError:
            raise EntrypointError(f"the runner at {self.path} sent something that is not "
                                  f"JSON: {line[:80]!r}") from None

    def _readline(self) -> bytes:
        searched = 0
        while (end := self._buffer.find(b"\n", searched)) < 0:
            searched = len(self._buffer)
            chunk = self.sock.recv(262144)
            if not chunk:
                line, self._buffer = bytes(self._buffer), bytearray()
                return line
            self._buffer += chunk
        line = bytes(self._buffer[:end + 1])
        del self._buffer[:end + 1]
        return line

    def request(self, op: str, **args):
        """Send one request; the result, or ReplyError when the runner says no."""
        self.send(op, **args)
        reply = self.receive()
        if reply is None:
            if self._send_failed:
                raise EntrypointError(f"the runner at {self.path} closed the connection "
                                      f"before reading the {op} request")
            raise EntrypointError(f"the runner closed the connection without answering "
                                  f"{op} (is it shutting down?)")
        if not reply.get("ok"):
            raise ReplyError(reply)
        return reply.get("result")

    def server_groups(self) -> list[int]:
        """The supplementary groups of the runner's process, from the kernel."""
        try:
            with open(f"/proc/{self.server_pid}/status") as f:
                for line in f:
                    if line.startswith("Groups:"):
                        return [int(g) for g in line.split()[1:]]
        except (OSError, ValueError):
            pass
        return []

    def close(self) -> None:
        self.sock.close()


def _who(uid: int) -> str:
    import pwd      # C module: cheap, and only on this error path
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _others_hint(explicit: bool) -> str:
    """Root's client no longer talks to other users' runners by itself; say where one is."""
    if explicit or os.geteuid() != 0:
        return ""
    try:
        names = sorted(n for n in os.listdir("/tmp") if n.startswith("entrypoint-")
                       and n.endswith(".sock") and n[11:-5].isdigit() and n != "entrypoint-0.sock")
    except OSError:
        return ""
    if not names:
        return ""
    return (f"; a runner of another user may listen at {', '.join('/tmp/' + n for n in names)}"
            f": name it with --socket to use it")


def _denied(path: str) -> str:
    try:
        owner = os.stat(path).st_uid
    except OSError:
        return f"permission denied on {path}"
    if owner == 0:
        return (f"permission denied: the runner runs as uid 0; run this as root "
                f"(e.g. `docker exec -u 0 CONTAINER entrypoint ...`) [{path}]")
    return f"permission denied: the runner runs as uid {owner}; run as root or as uid {owner} [{path}]"


def call(op: str, socket_path: str | None = None, timeout: float | None = QUERY_TIMEOUT, **args):
    conn = Connection(socket_path, timeout)
    try:
        return conn.request(op, **args)
    finally:
        conn.close()
