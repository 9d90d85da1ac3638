"""The web face's process: `entrypoint web [--socket PATH] [--listen ADDR]`, or
`python -m entrypoint.web --from-runner` as the runner's `entrypoint-web` service.

As the runner's service it finds the control socket by itself (its parent's listening
socket) and takes its settings from its environment (config/web.py puts them there).
Standalone it serves any runner whose socket it can reach, e.g. one mounted from a
container. Settings problems are located messages and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from entrypoint.control.protocol import client_path

DEFAULT_LISTEN = "127.0.0.1:9180"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="entrypoint web",
        description="Serve the HTTP API, event stream, metrics and dashboard of a running "
                    "entrypoint (needs `pip install 'entrypoint[web]'`). Credentials come from "
                    "ENTRYPOINT_WEB_TOKEN, ENTRYPOINT_WEB_TOKEN_FILE, ENTRYPOINT_WEB_READ_TOKEN "
                    "and ENTRYPOINT_WEB_PAM=1.")
    p.add_argument("--socket", metavar="PATH", default=None,
                   help="the runner's control socket (default: $ENTRYPOINT_SOCKET, "
                        "/run/entrypoint.sock, ...)")
    p.add_argument("--listen", metavar="ADDR", default=None,
                   help=f"HOST:PORT to serve on (default: $ENTRYPOINT_WEB_LISTEN, {DEFAULT_LISTEN})")
    p.add_argument("--from-runner", action="store_true", help=argparse.SUPPRESS)
    return p


def fail(message: str) -> int:
    print(f"entrypoint web: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code not in (0, None) else 0
    import importlib.util

    if any(importlib.util.find_spec(name) is None for name in ("starlette", "uvicorn")):
        return fail("the web face needs its extra: pip install 'entrypoint[web]'")
    from entrypoint.config.web import is_loopback, split_listen
    from entrypoint.web.auth import Auth
    from entrypoint.web.upstream import parent_socket

    listen = args.listen or os.environ.get("ENTRYPOINT_WEB_LISTEN") or DEFAULT_LISTEN
    try:
        host, port = split_listen(listen)
    except ValueError as exc:
        return fail(f"--listen: {exc}")
    try:
        auth = Auth.from_environ()
    except OSError as exc:
        return fail(f"ENTRYPOINT_WEB_TOKEN_FILE: {exc.strerror or exc}")
    if not is_loopback(host) and auth.open:
        return fail(f"{listen} is reachable from other hosts, and no credential is configured: "
                    f"set ENTRYPOINT_WEB_TOKEN (or ENTRYPOINT_WEB_PAM=1), or listen on loopback")
    socket_path = None
    if args.from_runner:
        die_with_parent()
        if not args.socket:
            socket_path = parent_socket()
    if socket_path is None:
        socket_path, _ = client_path(args.socket)
    from entrypoint.web.app import create_app

    app = create_app(socket_path, auth)
    print(f"entrypoint-web: serving http://{listen} for the runner at {socket_path}",
          file=sys.stderr, flush=True)
    return serve(app, host, port)


def die_with_parent() -> None:
    """As the runner's service, end with it: a SIGKILLed runner leaves no face behind
    serving a dead socket on its port (our pipes give no SIGHUP, unlike a PTY)."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1 and os.getpid() != 1:     # the runner died before we asked
        sys.exit(0)


def serve(app, host: str, port: int) -> int:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning",
                            lifespan="on", timeout_keep_alive=5, timeout_graceful_shutdown=2,
                            h11_max_incomplete_event_size=16 * 1024, server_header=False)
    server = uvicorn.Server(config)
    try:
        server.run()
    except OSError as exc:
        print(f"entrypoint-web: cannot serve on {host}:{port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0 if server.started else 1
