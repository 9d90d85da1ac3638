"""The thin client behind `entrypoint list|status|start|stop|restart|logs|reload|shutdown|
health|exec`: parse the words, send one request over the control socket, print the reply.

Standard library only, plus `protocol` and `errors` (and `output`'s colours for a `logs`
on a terminal): no
pydantic, no asyncio, no runtime, so that `entrypoint list` answers in tens of
milliseconds. Exit status: 0 ok, 1 failure (also: refused, unknown service), 2 usage or
invalid config (`reload`), 3 no runner reachable.
"""

from __future__ import annotations

import argparse
import json
import os
# `_socket`, the C module under `socket`: `socket.py` costs milliseconds per start (it
# builds enums of every constant) and this path needs only connect, send and recv.
import _socket
import sys
import time

from entrypoint.errors import EXIT_FAILURE, EXIT_USAGE, EntrypointError, Unreachable, UsageError
from entrypoint.cli.table import format_table
from entrypoint.control.protocol import EXIT_FOR_CODE, VERSION, client_path, encode

QUERY_TIMEOUT = 10.0        # list, status, health, logs: a runner silent this long is stuck


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
    """One connection to the runner; requests go out and replies come in as JSON lines."""

    def __init__(self, path: str | None = None, timeout: float | None = QUERY_TIMEOUT):
        self.path, places = client_path(path)
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self._buffer = bytearray()
        self.sock.settimeout(timeout)
        hint = (f"is entrypoint running? If its socket is elsewhere, point at it with "
                f"ENTRYPOINT_SOCKET=PATH or --socket PATH")
        if len(places) > 1:
            hint += f" (looked at {', '.join(places)})"
        try:
            self.sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            what = "no such socket" if isinstance(exc, FileNotFoundError) else "nothing listens there"
            self.sock.close()
            raise Unreachable(f"cannot reach a running entrypoint at {self.path} ({what}); {hint}") from None
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

    def send(self, op: str, **args) -> None:
        self.sock.sendall(encode({"v": VERSION, "op": op, "args": args}))

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
            raise EntrypointError(f"the runner closed the connection without answering "
                                  f"{op} (is it shutting down?)")
        if not reply.get("ok"):
            raise ReplyError(reply)
        return reply.get("result")

    def close(self) -> None:
        self.sock.close()


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


# -- rendering (also used by the runner for the SIGUSR1 report) ------------------------

def human_duration(seconds: float | None) -> str:
    """`3s`, `2m05s`, `1h02m`, `3d04h`; `-` for None."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def exit_text(exit: dict | None) -> str:
    """The EXIT column: the code, `SIGKILL` for a signal, `-` when it never exited."""
    if not exit:
        return "-"
    if exit.get("signal"):
        text = exit.get("text", "")
        return text.removeprefix("killed by ") if text.startswith("killed by ") else f"signal {exit['signal']}"
    return str(exit.get("code"))


def render_list(services: list[dict]) -> str:
    rows = [[s["name"], s["state"], s["health"], s["pid"] if s["pid"] is not None else "-",
             human_duration(s.get("uptime")), s.get("restarts", 0), exit_text(s.get("exit"))]
            for s in services]
    return format_table(["NAME", "STATE", "HEALTH", "PID", "UPTIME", "RESTARTS", "EXIT"], rows)


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def render_status(s: dict) -> str:
    head = f"{s['name']}: {s['state']}"
    if s.get("health") not in (None, "-"):
        head += f" ({s['health']})"
    if s.get("pid") is not None:
        head += f", pid {s['pid']}, up {human_duration(s.get('uptime'))}"
    if not s.get("enabled", True):
        head += " (enabled = false)"
    lines = [head]

    def field(label: str, value) -> None:
        lines.append(f"  {label + ':':<13}{value}")

    field("command", " ".join(s.get("command", [])))
    who = s.get("user") or "(the runner's)"
    if s.get("group"):
        who += f", group {s['group']}"
    field("user", who)
    if s.get("directory"):
        field("directory", s["directory"])
    if s.get("depends_on"):
        field("depends on", ", ".join(f"{d} ({c})" for d, c in s["depends_on"]))
    kind = "oneshot" if s.get("oneshot") else f"restart = {s.get('restart', '?')}"
    field("policy", kind + (", required" if s.get("required") else ""))
    field("restarts", s.get("restarts", 0))
    exit = s.get("exit")
    field("last exit", exit["text"] if exit else "-")
    if s.get("error"):
        field("last error", s["error"])
    check = s.get("healthcheck")
    if check:
        target = check["target"] if isinstance(check["target"], str) else " ".join(check["target"])
        field("healthcheck", f"{check['kind']} {target}, every {check['interval']:g}s, "
                             f"{check['retries']} retries")
        last = s.get("last_check")
        if last:
            result = "ok" if last["ok"] else "failed"
            output = (last.get("output") or "").strip().replace("\n", " | ")
            field("last check", f"{result} {human_duration(time.time() - last['at'])} ago"
                                + (f": {output[:200]}" if output else ""))
    lines.append("  history:")
    for h in s.get("history", []):
        reason = f"  {h['reason']}" if h.get("reason") else ""
        lines.append(f"    {_clock(h['at'])}  {h['state']:<9}{reason}".rstrip())
    return "\n".join(lines)


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
}


def main(command: str, argv: list[str]) -> int:
    if command == "exec":
        return cmd_exec(argv)
    names = {"status": "*", "start": "+", "stop": "+", "restart": "+", "logs": "*"}.get(command, "")
    p = _parser(command, DESCRIPTIONS[command], names=names,
                json_flag=command not in ("logs", "shutdown"))
    if command == "logs":
        p.add_argument("-n", "--lines", type=_count, default=100, metavar="N",
                       help="how many lines (default 100)")
        p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else 0
    if command == "logs":
        return cmd_logs(args)
    waits = command in ("start", "stop", "restart", "reload")
    op_args = {"names": args.names} if names else {}
    try:
        result = call(command, args.socket, None if waits else QUERY_TIMEOUT, **op_args)
    except ReplyError as exc:
        if getattr(args, "json", False):
            print(json.dumps(exc.reply, indent=2))
            return exc.exit_status
        raise
    if getattr(args, "json", False):
        shown = result["services"] if command in ("list",) else result
        if command == "status" and len(args.names) == 1:
            shown = result["services"][0]
        print(json.dumps(shown, indent=2))
        if command == "health":
            return 0 if result["healthy"] else 1
        return 0
    return SHOW[command](result, args)


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of lines, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return n


def _show_list(result, args) -> int:
    print(render_list(result["services"]) if result["services"] else "no services")
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


SHOW = {"list": _show_list, "status": _show_status, "start": _show_results,
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
    except BrokenPipeError:         # `entrypoint logs -f | head`
        return 0
    finally:
        conn.close()


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
        print("usage: entrypoint exec [--socket PATH] NAME [--] CMD [ARGS...]\n\n"
              + DESCRIPTIONS["exec"] + "\nCMD runs in this process (it keeps the terminal); "
              "its exit status is returned.")
        return 0 if argv else EXIT_USAGE
    name, cmd = argv[0], argv[1:]
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        raise UsageError(f"exec {name}: give the command to run, e.g. "
                         f"`entrypoint exec {name} -- sh`")
    spec = call("exec_spec", socket_path, QUERY_TIMEOUT, name=name)
    env = spec["env"]
    import shutil   # now: once we are the service's user, the stdlib may be out of reach
    if spec.get("directory"):
        try:
            os.chdir(spec["directory"])
        except OSError as exc:
            raise EntrypointError(f"exec {name}: cannot enter {spec['directory']}: "
                                  f"{exc.strerror or exc}") from None
    if spec.get("uid") is not None:     # after chdir, as subprocess does for the service
        uid, gid = spec["uid"], spec["gid"]
        if (os.geteuid(), os.getegid()) != (uid, gid):
            if os.geteuid() != 0:
                raise EntrypointError(f'exec {name}: the service runs as "{spec["user"]}" '
                                      f"(uid {uid}); switching to it needs root")
            try:
                os.setgroups(spec["groups"] or [])
                os.setgid(gid)
                os.setuid(uid)
            except OSError as exc:
                raise EntrypointError(f"exec {name}: cannot switch to uid {uid}: "
                                      f"{exc.strerror or exc}") from None
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
