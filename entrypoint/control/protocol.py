"""The control protocol's constants, framing and socket path, shared by runner and client.

Standard library only: the client imports this on every `entrypoint list`. The wire format
is one JSON object per line each way (UTF-8, `\\n`-terminated), every object carrying
`"v": 1`. The README ("The protocol") describes it for other tools.
"""

from __future__ import annotations

import json
import os
import stat

VERSION = 1
MAX_REQUEST = 64 * 1024        # bytes in one request line, newline included
REQUEST_TIMEOUT = 5.0          # seconds for a request line to arrive complete
DEFAULT_PATH = "/run/entrypoint.sock"

# Error codes of replies, and the exit status the CLI turns each into.
EXIT_FOR_CODE = {"invalid_config": 2, "usage": 2}   # every other code: 1


def encode(obj: dict) -> bytes:
    """One protocol line: compact JSON plus a newline (never a raw newline inside)."""
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def error(code: str, message: str, **details) -> dict:
    reply = {"v": VERSION, "ok": False, "code": code, "error": message}
    if details:
        reply["details"] = details
    return reply


def fallback_path(environ=os.environ, uid: int | None = None) -> str:
    """Where a runner puts its socket when /run is not writable."""
    runtime_dir = environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and os.path.isdir(runtime_dir) and os.access(runtime_dir, os.W_OK | os.X_OK):
        return os.path.join(runtime_dir, "entrypoint.sock")
    return f"/tmp/entrypoint-{os.getuid() if uid is None else uid}.sock"


def server_path(explicit: str | None = None, environ=os.environ) -> str:
    """The runner's socket: --socket, $ENTRYPOINT_SOCKET, /run/entrypoint.sock, or a fallback."""
    if explicit:
        return explicit
    if environ.get("ENTRYPOINT_SOCKET"):
        return environ["ENTRYPOINT_SOCKET"]
    run_dir = os.path.dirname(DEFAULT_PATH)
    if os.path.isdir(run_dir) and os.access(run_dir, os.W_OK | os.X_OK):
        return DEFAULT_PATH
    return fallback_path(environ)


def client_candidates(environ=os.environ) -> list[str]:
    """Where a client looks, in order, when $ENTRYPOINT_SOCKET is not set."""
    places = [DEFAULT_PATH]
    if environ.get("XDG_RUNTIME_DIR"):
        places.append(os.path.join(environ["XDG_RUNTIME_DIR"], "entrypoint.sock"))
    places.append(f"/tmp/entrypoint-{os.getuid()}.sock")
    if os.getuid() != 0:
        places.append("/tmp/entrypoint-0.sock")   # a root runner on a host without /run
    return list(dict.fromkeys(places))


def client_path(explicit: str | None = None, environ=os.environ) -> tuple[str, list[str]]:
    """The socket a client connects to, and the places it looked (for the error message).

    --socket or $ENTRYPOINT_SOCKET when given; else the first candidate that exists as a
    socket, so that `docker exec -u 1000 ... entrypoint list` still finds a root runner's
    /run/entrypoint.sock; else where a runner started by this user would put it. Other
    users' /tmp/entrypoint-UID.sock are not looked at: root drives such a runner only by
    naming its socket (the client checks who serves what it found, see client.py).
    """
    chosen = explicit or environ.get("ENTRYPOINT_SOCKET")
    if chosen:
        return chosen, [chosen]
    places = client_candidates(environ)
    for place in places:
        try:
            if stat.S_ISSOCK(os.stat(place).st_mode):
                return place, places
        except OSError:
            continue
    return server_path(None, environ), places
