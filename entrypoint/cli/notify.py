"""`entrypoint notify`: tell the runner about a service from a shell script, as
`systemd-notify` does (CONTRACT §11, §12).

Sends one datagram to `$NOTIFY_SOCKET` and waits (briefly) for the runner to acknowledge
it: the runner identifies a sender by its pid, so we must still exist when it looks.
Exit status: 0 sent (and accepted, when the runner answered), 1 refused by the runner,
2 bad arguments, 3 no notify socket to send to.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from entrypoint.core.notify import MAX_DATAGRAM, NotifyError, parse, parse_when, send
from entrypoint.errors import EntrypointError, UsageError, Unreachable

ACK_WAIT = 2.0      # seconds; systemd never answers, and a flooded runner may be late

DESCRIPTION = """Send readiness, status and progress to the supervisor, like systemd-notify.
The service needs a notify socket (ready = "notify", a watchdog, or a job): entrypoint
puts its path in NOTIFY_SOCKET. KEY=VALUE arguments are sent as they are (e.g. READY=1,
STATUS=..., X_PROGRESS=40/200)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="entrypoint notify", description=DESCRIPTION)
    p.add_argument("--ready", action="store_true", help="the service is ready (READY=1)")
    p.add_argument("--status", metavar="TEXT", help="a one-line status text (STATUS=)")
    p.add_argument("--progress", metavar="DONE/TOTAL", help="progress, e.g. 40/200 (X_PROGRESS=)")
    p.add_argument("--failed", metavar="N", help="items that failed so far (X_FAILED=)")
    p.add_argument("--next-run", metavar="WHEN",
                   help="a job's next run: +SECONDS, a Unix time or ISO 8601 (X_NEXT_RUN=)")
    p.add_argument("--reloading", action="store_true", help="RELOADING=1")
    p.add_argument("--stopping", action="store_true", help="STOPPING=1")
    p.add_argument("--watchdog", action="store_true", help="keep the watchdog happy (WATCHDOG=1)")
    p.add_argument("--pid", nargs="?", const=str(os.getppid()), metavar="PID",
                   help="the service's main pid (MAINPID=; default: the caller's pid)")
    p.add_argument("assignments", nargs="*", metavar="KEY=VALUE", help="raw fields to send")
    return p


def message(args: argparse.Namespace) -> str:
    """The datagram's text; UsageError on a value the runner would refuse."""
    lines = [a for a in args.assignments]
    if args.ready:
        lines.append("READY=1")
    if args.reloading:
        lines.append("RELOADING=1")
    if args.stopping:
        lines.append("STOPPING=1")
    if args.watchdog:
        lines.append("WATCHDOG=1")
    if args.status is not None:
        if "\n" in args.status:
            raise UsageError("--status: one line only")
        lines.append(f"STATUS={args.status}")
    if args.progress is not None:
        done, sep, total = args.progress.partition("/")
        if not done.isdigit() or (sep and not total.isdigit()):
            raise UsageError(f"--progress: expected DONE/TOTAL, e.g. 40/200, got {args.progress!r}")
        lines.append(f"X_PROGRESS={args.progress}")
    if args.failed is not None:
        if not args.failed.isdigit():
            raise UsageError(f"--failed: expected a whole number, got {args.failed!r}")
        lines.append(f"X_FAILED={args.failed}")
    if args.next_run is not None:
        try:
            parse_when(args.next_run, time.time())
        except NotifyError as exc:
            raise UsageError(f"--next-run: {exc}") from None
        lines.append(f"X_NEXT_RUN={args.next_run}")
    if args.pid is not None:
        if not args.pid.isdigit():
            raise UsageError(f"--pid: expected a process id, got {args.pid!r}")
        lines.append(f"MAINPID={args.pid}")
    if not lines:
        raise UsageError("nothing to send; try --ready, --status TEXT or KEY=VALUE "
                         "(entrypoint notify --help)")
    text = "\n".join(lines) + "\n"
    try:
        parse(text.encode())
    except NotifyError as exc:
        raise UsageError(f"{exc}; arguments are KEY=VALUE, the KEY in capitals") from None
    if len(text.encode()) > MAX_DATAGRAM - 64:
        raise UsageError(f"message too long ({len(text.encode())} bytes; at most "
                         f"{MAX_DATAGRAM - 64})")
    return text


def main(argv: list[str]) -> int:
    from entrypoint.cli.options import parse as parse_args

    args = parse_args(parser(), argv)
    text = message(args)
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        raise Unreachable("NOTIFY_SOCKET is not set: this process has no notify socket "
                          '(give its service ready = "notify" or a watchdog)')
    try:
        reply = send(path, text, wait=ACK_WAIT)
    except OSError as exc:
        raise Unreachable(f"cannot send to the notify socket {path}: "
                          f"{exc.strerror or exc}") from None
    if reply is not None and reply.startswith("refused"):
        raise EntrypointError(f"the supervisor {reply}")
    return 0


if __name__ == "__main__":     # pragma: no cover
    sys.exit(main(sys.argv[1:]))
