"""Command line: parse, dispatch to a subcommand, turn errors into exit statuses.

`entrypoint pytest -x` must work as Docker's `ENTRYPOINT` + `CMD`: a first word that is
not a subcommand or an option starts the main command. The control subcommands import
only `control` (no pydantic, no runtime) so that they answer in tens of milliseconds.
"""

from __future__ import annotations

import argparse
import os
import sys

from entrypoint import __version__
from entrypoint.errors import EXIT_USAGE, EntrypointError, UsageError

CONTROL_COMMANDS = ("list", "status", "start", "stop", "restart", "logs", "reload",
                    "shutdown", "health", "exec", "events", "wait")
SUBCOMMANDS = ("run", "check", "install", "version", "web", *CONTROL_COMMANDS)

# Options of `run` that take a value, with the environment variable of each (CONTRACT §1).
RUN_VALUE_OPTIONS = {
    "-c": "config", "--config": "config", "--procfile": "procfile",
    "--ready-timeout": "ready_timeout", "--log-format": "log_format", "--color": "color",
    "--socket": "socket", "--report": "report", "--log-lines": "log_lines",
}
RUN_FLAG_OPTIONS = {"--timestamps": "timestamps", "--no-install": "no_install",
                    "-h": "help", "--help": "help"}


def env_default(name: str, default=None, environ=os.environ):
    return environ.get("ENTRYPOINT_" + name.upper(), default)


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="entrypoint [run]",
        usage="entrypoint [run] [-c FILE | --procfile FILE] [OPTIONS] [--] [CMD [ARGS...]]",
        description="Start the services of services.toml (or a Procfile), supervise them, and "
                    "with a CMD run it once they are ready; its exit status becomes ours. "
                    "Every option can also be set as ENTRYPOINT_<OPTION> "
                    "(e.g. ENTRYPOINT_READY_TIMEOUT=60).")
    p.add_argument("-c", "--config", metavar="FILE", default=env_default("config"),
                   help="services.toml to use (default: $ENTRYPOINT_CONFIG, ./services.toml, "
                        "/etc/entrypoint/services.toml, ./Procfile)")
    p.add_argument("--procfile", metavar="FILE", default=env_default("procfile"),
                   help="run a Procfile instead (foreman/honcho semantics)")
    p.add_argument("--ready-timeout", metavar="SECONDS", type=_seconds,
                   default=env_default("ready_timeout"),
                   help="how long the CMD waits for the services to be ready "
                        "(default: dependency_wait_timeout)")
    p.add_argument("--timestamps", action="store_true",
                   default=_truthy(env_default("timestamps", "")),
                   help="prefix every line with an ISO-8601 time")
    p.add_argument("--log-format", choices=("text", "json"),
                   default=env_default("log_format", "text"),
                   help="text: 'name | line'; json: one object per line")
    p.add_argument("--color", choices=("auto", "always", "never"),
                   default=env_default("color", "auto"),
                   help="colour the names (default auto: FORCE_COLOR, NO_COLOR, then is a tty)")
    p.add_argument("--log-lines", metavar="N", type=int,
                   default=int(env_default("log_lines", "1000")),
                   help="lines kept in memory per service for `entrypoint logs` (default 1000)")
    p.add_argument("--socket", metavar="PATH", default=env_default("socket"),
                   help="control socket path (default: /run/entrypoint.sock, see README)")
    p.add_argument("--report", metavar="FILE", default=env_default("report"),
                   help="write a JSON summary of the run to FILE at exit")
    p.add_argument("--no-install", action="store_true",
                   default=_truthy(env_default("no_install", "")),
                   help="do not put `entrypoint` on PATH when started as root from elsewhere")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def split_run_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split `run`'s words into its options and the CMD: the first plain word starts the CMD."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return argv[:i], argv[i + 1:]
        if not word.startswith("-") or word == "-":
            return argv[:i], argv[i:]
        name = word.split("=", 1)[0]
        if name in RUN_VALUE_OPTIONS and "=" not in word:
            i += 2
        else:
            i += 1
    return argv, []


TOP_HELP = f"""entrypoint {__version__} - a PID-1-safe container entrypoint and process supervisor

usage:
  entrypoint [-c FILE] [--procfile FILE] [OPTIONS] [--] [CMD [ARGS...]]   supervise
  entrypoint run [same as above]
  entrypoint check [-c FILE]                   validate the config, start nothing
  entrypoint list | status [NAME] | health     ask the running entrypoint
  entrypoint start|stop|restart NAME...
  entrypoint logs [NAME...] [-f] [-n LINES]
  entrypoint events [NAME...] [--json]        every state change as it happens
  entrypoint wait NAME... [--for COND] [--timeout S]
  entrypoint reload | shutdown | install | version
  entrypoint exec NAME -- CMD [ARGS...]       run CMD as that service would run
  entrypoint web [--socket PATH] [--listen ADDR]   HTTP API and dashboard (entrypoint[web])

`entrypoint COMMAND --help` tells more. Exit status: 0 ok, 1 failure, 2 invalid config or
usage, 3 no running entrypoint reachable; with a CMD, the CMD's status.
"""


def main(argv: list[str] | None = None) -> int:
    global _WHOLE_PROCESS
    _WHOLE_PROCESS = argv is None       # the real program, not a call from a test
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in ("-h", "--help"):
            print(TOP_HELP, end="")
            return 0
        if argv and argv[0] in ("-V", "--version"):
            argv = ["version"]
        command = argv[0] if argv and argv[0] in SUBCOMMANDS else "run"
        rest = argv[1:] if argv and argv[0] in SUBCOMMANDS else argv
        if command == "run":
            return cmd_run(rest)
        if command == "check":
            return cmd_check(rest)
        if command == "version":
            print(f"entrypoint {__version__}")
            return 0
        if command == "install":
            from entrypoint.cli.install import cmd_install
            return cmd_install(rest)
        if command == "web":        # the HTTP face, in this process (never in the runner)
            from entrypoint.web.server import main as web_main
            return web_main(rest)
        from entrypoint.cli import control_commands
        return control_commands.main(command, rest)
    except EntrypointError as exc:
        message = exc.render()
        if message:
            print(message, file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130


def _load(config_path: str | None, procfile: str | None, *, need_config: bool):
    """Locate and validate the config: (Config or None, warnings). ConfigError on problems."""
    _skip_pydantic_plugins()
    from entrypoint.config import load as config_mod

    located = config_mod.locate(config_path, procfile, os.environ)
    if located is None:
        if need_config:
            places = ", ".join(config_mod.SEARCHED_PLACES)
            raise UsageError(f"no config found (looked in: {places}); pass -c FILE, set "
                             f"ENTRYPOINT_CONFIG, or give a command to run")
        return None, []
    path, kind = located
    return config_mod.load(path, kind, os.environ)


def _skip_pydantic_plugins() -> None:
    """Spare pydantic's plugin discovery: ~50 ms of every start (measured), on the path.

    To find plugins, pydantic imports importlib.metadata (and email with it) and scans
    the entry points of every installed distribution when it builds its first model.
    Our schema has no use for plugins, so before pydantic is first imported its
    private `pydantic.plugin._loader` is given a stand-in that reports none; any other
    name asked of it loads the real module.
    """
    import sys
    import types

    name = "pydantic.plugin._loader"
    if "pydantic" in sys.modules or name in sys.modules:
        return
    stub = types.ModuleType(name)
    stub.get_plugins = lambda: ()

    def real(attr: str):
        import importlib

        sys.modules.pop(name, None)
        return getattr(importlib.import_module(name), attr)

    stub.__getattr__ = real
    sys.modules[name] = stub


def cmd_check(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="entrypoint check",
                                description="Validate the config and report every problem; "
                                            "start nothing. Exit 0 when valid, 2 when not.")
    p.add_argument("-c", "--config", metavar="FILE", default=env_default("config"))
    p.add_argument("--procfile", metavar="FILE", default=env_default("procfile"))
    args = _parse(p, argv)
    from entrypoint.config import graph

    config, warnings = _load(args.config, args.procfile, need_config=True)
    for problem in warnings:
        print(f"warning: {problem.render()}", file=sys.stderr)
    enabled = [s for s in config.services if s.enabled]
    layers = graph.start_layers(config.services)
    order = " -> ".join("[" + ", ".join(layer) + "]" for layer in layers) or "(none)"
    print(f"{config.source}: ok, {len(enabled)} enabled service(s) of {len(config.services)}; "
          f"start order: {order}")
    return 0


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:   # argparse printed the message already
        if exc.code in (0, None):
            raise
        raise _AlreadyReported(EXIT_USAGE) from None


class _AlreadyReported(EntrypointError):
    def __init__(self, status: int):
        super().__init__("", status)

    def render(self) -> str:
        return ""


def cmd_run(argv: list[str]) -> int:
    from entrypoint.cli.run import catch_early_signals, run

    catch_early_signals()
    options, cmd = split_run_args(argv)
    args = _parse(run_parser(), options)
    # Validate in a child from here on, while this process imports the runtime.
    from entrypoint.config import isolate

    validation = isolate.start(_load, args.config, args.procfile, need_config=not cmd)
    status = run(args, cmd, validation)
    if _WHOLE_PROCESS:
        _exit_now(status)
    return status


_WHOLE_PROCESS = False


def _exit_now(status: int) -> None:
    """End the process without the interpreter's teardown once the run is over.

    Everything is stopped, reaped and written by then (shutdown hooks, report, log
    files); tearing down the modules and freeing every object only delays the exit that
    `docker stop` and the benchmark wait for: ~45 ms of 90 here (measured).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
