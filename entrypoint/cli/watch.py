"""`entrypoint events` and `entrypoint wait` (CONTRACT §9): watch the runner's state
changes without polling. Standard library only, like the other control commands."""

from __future__ import annotations

import json
import sys

from entrypoint.cli.render import render_event
from entrypoint.control.client import QUERY_TIMEOUT, Connection, ReplyError


def cmd_events(args) -> int:
    """The snapshot, then every change, one line (or JSON object) each, until the end."""
    conn = Connection(args.socket, QUERY_TIMEOUT)
    try:
        result = conn.request("events", names=args.names)
        for event in result["services"]:
            _print_event(event, args.json)
        sys.stdout.flush()
        conn.sock.settimeout(None)
        while True:
            event = conn.receive()
            if event is None or event.get("event") == "end":
                return 0
            if event.get("event") == "fell_behind":
                print(f"entrypoint: events: fell behind, {event['dropped']} change(s) "
                      f"dropped; current states follow", file=sys.stderr)
                for snap in event.get("services", []):
                    _print_event(snap, args.json)
            elif event.get("event") == "state":
                event.pop("v", None)
                event.pop("event", None)
                _print_event(event, args.json)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    finally:
        conn.close()


def _print_event(event: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(event, separators=(",", ":")))
        return
    print(render_event(event))


def cmd_wait(args) -> int:
    timeout = None if args.timeout is None else args.timeout + QUERY_TIMEOUT
    conn = Connection(args.socket, timeout)
    try:
        # "timeout" is the runner's to keep: the socket's own waits that long and more.
        result = conn.request("wait", names=args.names, timeout=args.timeout,
                              **{"for": args.condition})
    except ReplyError as exc:
        if args.json:
            print(json.dumps(exc.reply, indent=2))
            return exc.exit_status
        raise
    finally:
        conn.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for r in result["services"]:
            pid = f" (pid {r['pid']})" if r.get("pid") else ""
            print(f"{r['name']}: {r['state']}{pid}")
    return 0
