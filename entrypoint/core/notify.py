"""The notify socket: systemd's sd_notify protocol, heard for each service (CONTRACT §11, §12).

One `SOCK_DGRAM` Unix socket per runner, with `SO_PASSCRED`: the kernel stamps every
datagram with its sender's pid, and a message counts only when that pid belongs to a
service's session or process group (each service leads its own). Anything else is a
counted, logged refusal: a stranger's `READY=1`, an oversized or malformed datagram.

Public surface (also used by the jobs code and the `entrypoint notify` client):

- `parse(data) -> dict[str, str]`: a datagram's `KEY=VALUE` lines; `NotifyError` if malformed.
- `NotifyState`: what a service told us in its current run (ready, status text, progress,
  errno, ...) plus the next-run hint; `apply(fields, now)` returns the keys that changed
  something; `to_json()` is what `list --json` and `status` show under "notify".
- `parse_when(text, now) -> float`: an `X_NEXT_RUN=` value (Unix time, ISO 8601, `+SECONDS`).
- `NotifySocket(loop, on_message, find)`: the runner's socket. `find(pid)` returns the
  service owning a pid or None; `on_message(service, fields)` is called for each accepted
  datagram. `.path` goes into a service's `NOTIFY_SOCKET`; `.counters` are shown by `list`.
- `open_notify_socket(supervisor)`: the runner's socket, finding services by session/group.
- `send(path, text, wait=...)`: send one datagram (as sd_notify does), optionally waiting for
  the runner's acknowledgement: our own client asks for one with `X_ENTRYPOINT_ACK=1`, so
  it cannot exit (and be reaped) before the runner has looked up its pid.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

MAX_DATAGRAM = 4096      # systemd's own limit (NOTIFY_BUFFER_MAX), so the same daemons fit
BATCH = 512              # datagrams read per loop callback: a flood cannot starve the loop
REFUSAL_LOG_EVERY = 5.0  # seconds between two log lines about refused datagrams
ACK_KEY = "X_ENTRYPOINT_ACK"
_CREDS = struct.Struct("3i")   # struct ucred: pid, uid, gid


class NotifyError(ValueError):
    """A datagram that is not `KEY=VALUE` lines, or a value out of range."""


def parse(data: bytes) -> dict[str, str]:
    """`KEY=VALUE` newline-separated lines (the last newline optional) as a dict.

    Keys are upper-case letters, digits and `_`, as systemd requires; a later key wins."""
    if b"\0" in data:
        raise NotifyError("contains a NUL byte")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotifyError("not UTF-8") from None
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key or not all(c.isascii() and (c.isupper() or c.isdigit() or c == "_")
                                         for c in key):
            raise NotifyError(f"not a KEY=VALUE line: {line[:40]!r}")
        fields[key] = value
    if not fields:
        raise NotifyError("empty")
    return fields


def parse_when(text: str, now: float) -> float:
    """A next-run time as a Unix time: `+SECONDS`, a Unix time, or ISO 8601 (UTC if naive)."""
    text = text.strip()
    try:
        if text.startswith("+"):
            value = now + float(text[1:])
        elif text.replace(".", "", 1).isdigit():
            value = float(text)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            value = moment.timestamp()
    except (ValueError, OverflowError):
        raise NotifyError(f"not a time: {text[:40]!r} (use +SECONDS, a Unix time or ISO 8601)") from None
    if not math.isfinite(value) or value < 0 or value > now + 366 * 86400 * 100:
        raise NotifyError(f"time out of range: {text[:40]!r}")
    return value


def _count(value: str, key: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise NotifyError(f"{key}={value[:20]!r}: expected a whole number")
    return int(value)


@dataclass
class NotifyState:
    """What a service said on its notify socket. `clear_run()` at the end of each run keeps
    only the next-run hint (it is about the next run)."""

    ready: bool = False
    status: str = ""
    done: int | None = None
    total: int | None = None
    failed: int | None = None
    errno: int | None = None
    reloading: bool = False
    stopping: bool = False
    main_pid: int | None = None
    next_run: float | None = None       # a Unix time the service asked to run next at
    last_watchdog: float | None = None  # monotonic time of the last WATCHDOG=1
    messages: int = 0
    _progress_start: tuple[float, int] | None = field(default=None, repr=False)
    _progress_last: float | None = field(default=None, repr=False)

    def apply(self, fields: dict[str, str], now: float, monotonic: float) -> set[str]:
        """Take in one datagram; return the keys that changed something. Raises
        NotifyError (nothing applied) when a value is malformed."""
        changes: dict[str, object] = {}
        if "X_PROGRESS" in fields:
            done, sep, total = fields["X_PROGRESS"].partition("/")
            changes["done"] = _count(done.strip(), "X_PROGRESS")
            changes["total"] = _count(total.strip(), "X_PROGRESS") if sep else None
        if "X_FAILED" in fields:
            changes["failed"] = _count(fields["X_FAILED"].strip(), "X_FAILED")
        if "ERRNO" in fields:
            changes["errno"] = _count(fields["ERRNO"].strip(), "ERRNO")
        if "MAINPID" in fields:
            changes["main_pid"] = _count(fields["MAINPID"].strip(), "MAINPID")
        if "X_NEXT_RUN" in fields:
            changes["next_run"] = parse_when(fields["X_NEXT_RUN"], now)
        if "STATUS" in fields:
            changes["status"] = fields["STATUS"][:1000]
        said: set[str] = set()
        self.messages += 1
        for name, value in changes.items():
            setattr(self, name, value)
        if "done" in changes:
            if self._progress_start is None or changes["done"] < self._progress_start[1]:
                self._progress_start = (monotonic, changes["done"])
            self._progress_last = monotonic
            said.add("X_PROGRESS")
        said |= {k for k in ("STATUS", "X_FAILED", "ERRNO", "MAINPID", "X_NEXT_RUN") if k in fields}
        if fields.get("READY") == "1":
            self.ready, self.reloading = True, False
            said.add("READY")
        if fields.get("RELOADING") == "1":
            self.reloading = True
            said.add("RELOADING")
        if fields.get("STOPPING") == "1":
            self.stopping = True
            said.add("STOPPING")
        if fields.get("WATCHDOG") == "1":
            self.last_watchdog = monotonic
            said.add("WATCHDOG")
        if fields.get("WATCHDOG") == "trigger":
            said.add("WATCHDOG_TRIGGER")
        return said

    def clear_run(self) -> None:
        """A run ended: forget what it said, except when to run next."""
        next_run = self.next_run
        self.__init__()
        self.next_run = next_run

    def rate(self, monotonic: float) -> float | None:
        """Items done per second since the first progress report of this run."""
        if self._progress_start is None or self.done is None or self._progress_last is None:
            return None
        elapsed = self._progress_last - self._progress_start[0]
        if elapsed <= 0:
            return None
        return (self.done - self._progress_start[1]) / elapsed

    def to_json(self, monotonic: float | None = None) -> dict:
        monotonic = time.monotonic() if monotonic is None else monotonic
        percent = eta = None
        rate = self.rate(monotonic)
        if self.done is not None and self.total:
            percent = round(min(100.0, 100.0 * self.done / self.total), 1)
            if rate and rate > 0:
                eta = round(max(0.0, (self.total - self.done) / rate), 1)
        return {"ready": self.ready, "status": self.status or None,
                "progress": None if self.done is None else {
                    "done": self.done, "total": self.total, "failed": self.failed,
                    "percent": percent, "rate": None if rate is None else round(rate, 3),
                    "eta": eta},
                "errno": self.errno, "reloading": self.reloading, "stopping": self.stopping,
                "next_run": self.next_run}


def session_and_group(pid: int) -> tuple[int, int] | None:
    """(session id, process group id) of `pid` from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ")".
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[3]), int(fields[2])
    except (IndexError, ValueError):
        return None


class NotifySocket:
    """The runner's notify socket; bound in a private directory, removed by `close()`."""

    def __init__(self, loop, on_message: Callable[[object, dict[str, str]], None],
                 find: Callable[[int], object | None],
                 on_refused: Callable[[str], None] | None = None):
        self._loop = loop
        self._on_message = on_message
        self._find = find
        self._on_refused = on_refused
        self.counters = {"received": 0, "accepted": 0, "refused": 0, "malformed": 0,
                         "oversized": 0, "stranger": 0}
        import tempfile     # here: the `entrypoint notify` client does without it

        self._unlogged: dict[str, int] = {}
        self._last_log = -math.inf
        parent = _runtime_dir() or tempfile.gettempdir()
        sweep_stale(parent)
        self._dir = tempfile.mkdtemp(prefix=DIR_PREFIX, dir=parent)
        # Services of other users must reach the socket: the directory is searchable (not
        # listable) and the socket writable by all. Who is heard is decided by the sender's
        # pid that the kernel stamps on each datagram, not by file modes.
        os.chmod(self._dir, 0o711)
        self.path = os.path.join(self._dir, "notify.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.bind(self.path)
            os.chmod(self.path, 0o666)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            try:   # room for a burst of datagrams while the loop is busy elsewhere
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            except OSError:
                pass
            self._sock.setblocking(False)
        except BaseException:
            self.close()
            raise
        loop.add_reader(self._sock.fileno(), self._read)

    def close(self) -> None:
        try:
            self._loop.remove_reader(self._sock.fileno())
        except (ValueError, OSError):
            pass
        self._sock.close()
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)

    def _read(self) -> None:
        for _ in range(BATCH):
            try:
                data, ancdata, flags, addr = self._sock.recvmsg(
                    MAX_DATAGRAM + 1, socket.CMSG_SPACE(_CREDS.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.counters["received"] += 1
            pid = None
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CREDS.unpack(payload[:_CREDS.size])[0]
            try:
                self._handle(data, flags, addr, pid)
            except Exception as exc:  # a bug must not stop the socket (nor PID 1)
                self._refuse("malformed", f"a datagram we failed on: {exc!r}; please report", None)

    def _handle(self, data: bytes, flags: int, addr, pid: int | None) -> None:
        if flags & socket.MSG_TRUNC or len(data) > MAX_DATAGRAM:
            return self._refuse("oversized", f"a datagram over {MAX_DATAGRAM} bytes"
                                + (f" from pid {pid}" if pid else ""), addr)
        try:
            fields = parse(data)
        except NotifyError as exc:
            return self._refuse("malformed", f"a malformed datagram ({exc})"
                                + (f" from pid {pid}" if pid else ""), addr)
        service = self._find(pid) if pid else None
        if service is None:
            # The kernel gives pid 0 for a sender outside our PID namespace.
            sender = f"pid {pid}, which belongs to" if pid else "a process outside this PID namespace:"
            return self._refuse("stranger", f"{_summary(fields)} from {sender} no service with "
                                f"a notify socket", addr, fields)
        self.counters["accepted"] += 1
        try:
            self._on_message(service, fields)
        except NotifyError as exc:
            return self._refuse("malformed", f"{service.name}: {exc}", addr, fields)
        self._ack(addr, fields, "ok")

    def _refuse(self, kind: str, what: str, addr, fields: dict | None = None) -> None:
        self.counters["refused"] += 1
        self.counters[kind] += 1
        self._ack(addr, fields, f"refused: {what}")
        # A flood must not flood the log: one line, then a count at most every few seconds.
        self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
        now = self._loop.time()
        if self._on_refused is not None and now - self._last_log >= REFUSAL_LOG_EVERY:
            more = sum(self._unlogged.values()) - 1
            self._on_refused(f"notify socket: ignored {what}"
                             + (f" (and {more} more refused since the last report)" if more else ""))
            self._unlogged.clear()
            self._last_log = now

    def _ack(self, addr, fields: dict | None, text: str) -> None:
        if not addr or fields is None or fields.get(ACK_KEY) != "1":
            return
        try:   # never blocks: a client that is not reading loses its reply, not us
            self._sock.sendto(text.encode()[:MAX_DATAGRAM], socket.MSG_DONTWAIT, addr)
        except OSError:
            pass


def open_notify_socket(sup) -> NotifySocket | None:
    """The supervisor's notify socket; None (with an error line) if it cannot be made:
    services that need it then never become ready, a failed start each."""
    def sender(pid: int):
        # The service whose session or process group `pid` is in, if it has a notify
        # socket: what the kernel says of the sender, not what the message claims.
        ids = session_and_group(pid)
        if ids is None:
            return None
        for service in sup.services.values():
            leader = service.pid
            if leader is not None and leader in ids and service.spec.wants_notify:
                return service
        return None

    try:
        return NotifySocket(sup._loop, lambda service, fields: service.on_notify(fields), sender,
                            lambda text: sup.printer.system(text, "warning"))
    except OSError as exc:
        sup.printer.system(f"cannot open the notify socket: {exc.strerror or exc}; services "
                           f'with ready = "notify" or a watchdog cannot become ready', "error")
        return None


def _summary(fields: dict[str, str]) -> str:
    keys = ", ".join(f"{k}={fields[k][:20]}" if k in ("READY", "WATCHDOG") else k
                     for k in list(fields)[:4])
    return f"a message ({keys})"


DIR_PREFIX = "entrypoint-notify-"
STALE_AFTER = 60.0      # seconds: younger directories may belong to a runner binding right now


def sweep_stale(parent: str, now: float | None = None) -> int:
    """Remove notify directories of runners that died without cleaning up (SIGKILL): ours
    by name and owner, older than a minute, whose socket has nobody bound to it (a
    datagram connect() to it is refused). Returns how many went."""
    import shutil

    now = time.time() if now is None else now
    removed = 0
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(DIR_PREFIX)][:100]
    except OSError:
        return 0
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not entry.is_dir(follow_symlinks=False) or st.st_uid != os.geteuid() \
                or now - st.st_mtime < STALE_AFTER:
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(os.path.join(entry.path, "notify.sock"))
                continue            # a live runner's
            except (ConnectionRefusedError, FileNotFoundError):
                pass
            except OSError:
                continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed


def _runtime_dir() -> str | None:
    for place in ("/run", os.environ.get("XDG_RUNTIME_DIR")):
        if place and os.access(place, os.W_OK | os.X_OK):
            return place
    return None     # tempfile's default: $TMPDIR or /tmp


def send(path: str, text: str, *, wait: float = 0.0) -> str | None:
    """Send `text` as one datagram to the notify socket at `path` (a leading `@` is an
    abstract address, as systemd allows). With `wait`, ask our runner to acknowledge and
    return its reply ("ok" or "refused: ..."), or None if none came (e.g. systemd)."""
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        if wait:
            sock.bind("")         # an autobound abstract address the reply can come back to
            text = text.rstrip("\n") + f"\n{ACK_KEY}=1\n"
        sock.sendto(text.encode(), address)
        if not wait:
            return None
        sock.settimeout(wait)
        try:
            return sock.recv(MAX_DATAGRAM).decode("utf-8", "replace")
        except (socket.timeout, OSError):
            return None


__all__ = ["MAX_DATAGRAM", "NotifyError", "NotifySocket", "NotifyState", "open_notify_socket",
           "parse", "parse_when", "send", "session_and_group"]
