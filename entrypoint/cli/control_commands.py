"""The control subcommands of the CLI: `entrypoint list|status|start|stop|restart|logs|
reload|shutdown|health|exec|events|wait`: parse the words, send one request through
`control/client.py`, print the reply.

Standard library only, plus `protocol`, `client` and `errors` (and `output`'s colours for
a `logs` on a terminal): no pydantic, no asyncio, no runtime, so that `entrypoint list`
answers in tens of milliseconds. Exit status: 0 ok, 1 failure (also: refused, unknown
service), 2 usage or invalid config (`reload`), 3 no runner reachable; killed by SIGPIPE
(the shell says 141) when the reader of our output goes away.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from entrypoint.errors import EXIT_USAGE, EntrypointError, UsageError
from entrypoint.cli.render import render_history, render_list, render_status
from entrypoint.control.client import QUERY_TIMEOUT, Connection, ReplyError, call


# -- commands --------------------------------------------------------------------------

def _parser(command: str, description: str, *, names: str = "", json_flag: bool = True):
    p = argparse.ArgumentParser(prog=f"entrypoint {command}", description=description)
    if names == "+":
        p.add_argument("names", nargs="+", metavar="NAME", help="service names")
    elif names == "*":
        p.add_argument("names", nargs="*", metavar="NAME", help="service names (default: all)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print the reply as JSON")
    p.add_argument("--socket", metavar="PATH", default=None,
                   help="the runner's control socket (default: $ENTRYPOINT_SOCKET, "
                        "/run/entrypoint.sock, ...)")
    return p


DESCRIPTIONS = {
    "list": "List the services: NAME STATE HEALTH PID UPTIME RESTARTS EXIT.",
    "status": "Show the details of services (all when no NAME): command, user, pid, state "
              "history, restarts, last exit, health and the last check's output.",
    "start": "Start services; return once each is RUNNING (a oneshot COMPLETED), or fail "
             "saying why.",
    "stop": "Stop services; return once each has stopped.",
    "restart": "Restart services; return once each is RUNNING again, or fail saying why.",
    "logs": "Print the last lines of services' output kept in memory (all services when "
            "no NAME), merged in time order; -f to keep following.",
    "reload": "Reload the config: stop removed services, start added ones, restart changed "
              "ones; an invalid config is rejected (exit 2) and the running one is kept.",
    "shutdown": "Ask the runner to shut down gracefully (as SIGTERM would).",
    "health": "Exit 0 when every enabled service is RUNNING and healthy (oneshots "
              "COMPLETED), 1 otherwise: for a Docker HEALTHCHECK.",
    "exec": "Run CMD as service NAME would run: its user, group, environment and directory.",
    "events": "Print the current state of services (all when no NAME), then every state or "
              "health change as it happens, until the runner exits.",
    "wait": "Return 0 once each named service meets the condition (default: its ready "
            "condition), 1 as soon as one of them FAILS or the timeout passes, naming it.",
    "history": "Show the last runs of services (all when no NAME), oldest first: trigger, "
               "start, duration, exit, outcome and why; with state_dir, runs before a "
               "restart of the runner too.",
    "enable": "Enable services at runtime and start them (a job: its schedule resumes); "
              "kept across reloads, and across restarts with state_dir.",
    "disable": "Disable services at runtime: stop them (a job: its schedule pauses); kept "
               "across reloads, and across restarts with state_dir.",
}


def parser(command: str) -> argparse.ArgumentParser:
    """The argument parser of control subcommand `command` (its --help, too)."""
    if command == "exec":
        return _exec_parser()
    names = NAMES.get(command, "")
    p = _parser(command, DESCRIPTIONS[command], names=names,
                json_flag=command not in ("logs", "shutdown"))
    if command == "history":
        p.add_argument("-n", "--lines", type=_count, default=20, metavar="N",
                       help="how many runs (default 20)")
    if command == "logs":
        p.add_argument("-n", "--lines", type=_count, default=100, metavar="N",
                       help="how many lines (default 100)")
        p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    if command == "list":
        p.add_argument("--wide", action="store_true", help="also show CPU and memory "
                       "(summed over each service's process group)")
    if command == "wait":
        p.add_argument("--for", dest="condition", choices=("started", "healthy", "completed"),
                       help="the condition (default: each service's ready condition: "
                            "completed for a oneshot, healthy with a healthcheck, else started)")
        p.add_argument("--timeout", type=_timeout, default=None, metavar="S",
                       help="give up after S seconds (exit 1); default: wait as long as it takes")
    return p


NAMES = {"status": "*", "start": "+", "stop": "+", "restart": "+", "logs": "*",
         "events": "*", "wait": "+", "history": "*", "enable": "+", "disable": "+"}


def main(command: str, argv: list[str]) -> int:
    _default_sigpipe()
    if command == "exec":
        return cmd_exec(argv)
    names = NAMES.get(command, "")
    p = parser(command)
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else 0
    if command == "logs":
        return cmd_logs(args)
    if command in ("events", "wait"):
        from entrypoint.cli import watch
        return watch.cmd_events(args) if command == "events" else watch.cmd_wait(args)
    waits = command in ("start", "stop", "restart", "reload", "enable", "disable")
    op_args = {"names": args.names} if names else {}
    if command == "history":
        op_args["lines"] = args.lines
    try:
        result = call(command, args.socket, None if waits else QUERY_TIMEOUT, **op_args)
    except ReplyError as exc:
        if getattr(args, "json", False):
            print(json.dumps(exc.reply, indent=2))
            return exc.exit_status
        raise
    if getattr(args, "json", False):
        shown = (result["services"] if command in ("list",) else
                 result["runs"] if command == "history" else result)
        if command == "status" and len(args.names) == 1:
            shown = result["services"][0]
        print(json.dumps(shown, indent=2))
        if command == "health":
            return 0 if result["healthy"] else 1
        return 0
    return SHOW[command](result, args)


def _default_sigpipe() -> None:
    """Die of SIGPIPE, as `cat` does, when the reader of our output goes away.

    `entrypoint status --json | head -c 100` must end quietly, without a traceback; a
    shell then reports 141 (128 + SIGPIPE) like for any Unix tool, so `set -o pipefail`
    scripts see what they see from `cat`. Python ignores SIGPIPE (and turns EPIPE into a
    BrokenPipeError at some random later write or at exit): give it back its default.
    Socket sends use MSG_NOSIGNAL, so a runner that hangs up is still an error message.
    Also, CMD of `exec` must not inherit the ignored SIGPIPE (nor SIGXFSZ).
    """
    import _signal      # the C module: `signal` builds enums, milliseconds per start

    for name in ("SIGPIPE", "SIGXFSZ"):
        _signal.signal(getattr(_signal, name), _signal.SIG_DFL)


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of lines, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return n


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be 0 or more seconds")
    return value


def _show_list(result, args) -> int:
    print(render_list(result["services"], wide=getattr(args, "wide", False))
          if result["services"] else "no services")
    return 0


def _show_status(result, args) -> int:
    print("\n\n".join(render_status(s) for s in result["services"]) or "no services")
    return 0


def _show_results(result, args) -> int:
    for r in result["services"]:
        pid = f" (pid {r['pid']})" if r.get("pid") else ""
        health = f", {r['health']}" if r.get("health") not in (None, "-") else ""
        print(f"{r['name']}: {r['state']}{health}{pid}")
    return 0


def _show_reload(result, args) -> int:
    parts = [f"{label}: {', '.join(result[label])}" for label in ("added", "removed", "changed")
             if result[label]]
    print(f"reloaded {result['source']}: " + ("; ".join(parts) if parts else "nothing changed")
          + f" ({len(result['unchanged'])} unchanged)")
    for warning in result.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    status = 0
    for r in result.get("services", []):
        if r["ok"]:
            print(f"  {r['name']}: {r['state']}")
        else:
            status = 1
            print(f"  {r['name']}: {r['error']}", file=sys.stderr)
            for line in r.get("log", []):
                print(f"    {r['name']} | {line}", file=sys.stderr)
    return status


def _show_shutdown(result, args) -> int:
    print("already shutting down" if result.get("already") else "shutting down")
    return 0


def _show_health(result, args) -> int:
    if result["healthy"]:
        print("healthy")
        return 0
    for problem in result["problems"]:
        print(f"unhealthy: {problem}")
    return 1


def _show_history(result, args) -> int:
    print(render_history(result["runs"]) if result["runs"] else "no runs yet")
    return 0


SHOW = {"history": _show_history, "enable": _show_results, "disable": _show_results,
        "list": _show_list, "status": _show_status, "start": _show_results,
        "stop": _show_results, "restart": _show_results, "reload": _show_reload,
        "shutdown": _show_shutdown, "health": _show_health}


class _LogPrinter:
    def __init__(self, names: list[str], prefix: bool):
        self.prefix = prefix
        self.width = max(map(len, names), default=0)
        self.color = prefix and (bool(os.environ.get("FORCE_COLOR")) or (
            not os.environ.get("NO_COLOR") and sys.stdout.isatty()))
        if self.color:      # the runner's colours (output.py is not loaded otherwise)
            from entrypoint.output.printer import RESET, color_for
            self._color_for, self._reset = color_for, RESET
        self.out = sys.stdout

    def line(self, name: str, text: str) -> None:
        if self.prefix:
            head = f"{name:<{self.width}} | "
            if self.color:
                head = self._color_for(name) + head + self._reset
            text = head + text
        self.out.write(text + "\n")


def cmd_logs(args) -> int:
    conn = Connection(args.socket, QUERY_TIMEOUT)
    try:
        op_args = {"names": args.names, "lines": args.lines}
        if args.follow:
            op_args["follow"] = True
        result = conn.request("logs", **op_args)
        shown = result["services"]
        printer = _LogPrinter(shown, prefix=len(args.names) != 1)   # none or several: prefix
        for entry in result["lines"]:
            printer.line(entry["service"], entry["line"])
        sys.stdout.flush()
        if not args.follow:
            return 0
        conn.sock.settimeout(None)
        while True:
            event = conn.receive()
            if event is None or event.get("event") == "end":
                if event and "exiting" not in event.get("reason", ""):
                    print(f"entrypoint: logs -f ended: {event.get('reason')}", file=sys.stderr)
                return 0
            if event.get("event") == "log":
                if event["service"] not in shown:        # a service a reload added
                    shown.append(event["service"])
                    printer.width = max(printer.width, len(event["service"]))
                for line in event["lines"]:
                    printer.line(event["service"], line)
                sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    finally:
        conn.close()


def _exec_parser() -> argparse.ArgumentParser:
    # For --help only: NAME and CMD are split by hand (CMD's own options are not ours).
    p = argparse.ArgumentParser(
        prog="entrypoint exec", usage="entrypoint exec [--socket PATH] NAME [--] CMD [ARGS...]",
        description=DESCRIPTIONS["exec"] + " CMD runs in this process (it keeps the "
        "terminal); its exit status is returned. It never gets more privilege than the "
        "runner has: through a runner that is not root, CMD runs as the runner's user.")
    p.add_argument("name", metavar="NAME", help="the service whose user, group, environment "
                                                "and directory CMD gets")
    p.add_argument("cmd", metavar="CMD [ARGS...]", help="the program to run and its "
                                                        "arguments, found in the service's PATH")
    p.add_argument("--socket", metavar="PATH", help="the runner's control socket (default: "
                   "$ENTRYPOINT_SOCKET, /run/entrypoint.sock, ...)")
    return p


def exec_identity(spec: dict, server_uid: int, server_gid: int,
                  server_groups: list[int]) -> tuple[int, int, list[int]]:
    """(uid, gid, groups) for CMD: the service's, capped at what its runner holds.

    A root runner may run a service as anyone, so its word goes. A runner of another
    uid can only run its services as itself: whatever it claims, CMD gets the runner's
    own uid, gid and groups as the kernel reports them, never more (root's client
    through a user's socket must not hand out root).
    """
    if server_uid != 0:
        return server_uid, server_gid, server_groups
    uid, gid = spec.get("uid"), spec.get("gid")
    if uid is None or gid is None:      # an older runner: the service runs as the runner
        return server_uid, server_gid, server_groups
    return uid, gid, list(spec.get("groups") or [])


def cmd_exec(argv: list[str]) -> int:
    """`exec NAME [--] CMD...`: ask the runner how NAME runs, then become CMD like it.

    The client process itself switches to the service's groups, gid and uid, takes its
    environment and directory, and execs CMD: CMD keeps the caller's terminal, and its
    exit status is ours. Switching to another user needs root.
    """
    socket_path = None
    if argv[:1] == ["--socket"] and len(argv) > 1:
        socket_path, argv = argv[1], argv[2:]
    elif argv[:1] and argv[0].startswith("--socket="):
        socket_path, argv = argv[0].split("=", 1)[1], argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(_exec_parser().format_help(), end="")
        return 0 if argv else EXIT_USAGE
    name, cmd = argv[0], argv[1:]
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        raise UsageError(f"exec {name}: give the command to run, e.g. "
                         f"`entrypoint exec {name} -- sh`")
    conn = Connection(socket_path, QUERY_TIMEOUT)
    try:
        spec = conn.request("exec_spec", name=name)
        uid, gid, groups = exec_identity(spec, conn.server_uid, conn.server_gid,
                                         conn.server_groups())
    finally:
        conn.close()
    env = spec["env"]
    import shutil   # now: once we are the service's user, the stdlib may be out of reach
    if spec.get("directory"):
        try:
            os.chdir(spec["directory"])
        except OSError as exc:
            raise EntrypointError(f"exec {name}: cannot enter {spec['directory']}: "
                                  f"{exc.strerror or exc}") from None
    _become(name, spec.get("user"), uid, gid, groups)   # after chdir, as for the service
    sys.stdout.flush()
    program = cmd[0]
    if os.sep not in program:       # search the service's PATH, as its user sees it
        program = shutil.which(program, path=env.get("PATH", os.defpath)) or ""
    try:
        if not program:
            raise FileNotFoundError(cmd[0])
        os.execve(program, cmd, env)
    except FileNotFoundError:
        print(f'entrypoint: exec {name}: "{cmd[0]}" not found in the service\'s PATH',
              file=sys.stderr)
        return 127
    except PermissionError:
        print(f'entrypoint: exec {name}: "{cmd[0]}": permission denied', file=sys.stderr)
        return 126
    except OSError as exc:
        print(f'entrypoint: exec {name}: cannot run "{cmd[0]}": {exc.strerror or exc}',
              file=sys.stderr)
        return 126


def _become(name: str, user: str | None, uid: int, gid: int, groups: list[int]) -> None:
    """Switch this process to uid/gid/groups; only root may, and root always does."""
    if os.geteuid() != 0:
        if (os.geteuid(), os.getegid()) != (uid, gid):
            who = f'"{user}" (uid {uid})' if user else f"uid {uid}, gid {gid}"
            raise EntrypointError(f"exec {name}: the service runs as {who}; switching to "
                                  f"it needs root")
        return
    try:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise EntrypointError(f"exec {name}: cannot switch to uid {uid}: "
                              f"{exc.strerror or exc}") from None
