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
from entrypoint.errors import EntrypointError, UsageError

CONTROL_COMMANDS = ("list", "status", "start", "stop", "restart", "logs", "reload",
                    "shutdown", "health", "exec", "events", "wait", "history", "enable",
                    "disable")
SUBCOMMANDS = ("run", "check", "install", "version", "web", "notify", *CONTROL_COMMANDS)
EXIT_CMD_NOT_FOUND = 127    # as a shell and `docker run` say it


TOP_HELP = f"""entrypoint {__version__} - a PID-1-safe container entrypoint and process supervisor

usage:
  entrypoint [-c FILE] [--procfile FILE] [OPTIONS] [--] [CMD [ARGS...]]   supervise
  entrypoint run [same as above]
  entrypoint check [-c FILE] [--strict]        validate the config, start nothing
  entrypoint list | status [NAME] | health     ask the running entrypoint
  entrypoint start|stop|restart NAME...
  entrypoint logs [NAME...] [-f] [-n LINES]
  entrypoint events [NAME...] [--json]        every state change as it happens
  entrypoint wait NAME... [--for COND] [--timeout S]
  entrypoint history [NAME] [-n N]             the last runs: trigger, duration, exit, why
  entrypoint enable|disable NAME...            at runtime; kept across reloads
  entrypoint reload | shutdown | install | version
  entrypoint exec NAME -- CMD [ARGS...]       run CMD as that service would run
  entrypoint web [--socket PATH] [--listen ADDR]   HTTP API and dashboard (entrypoint[web])
  entrypoint notify [--ready] [--status T] [--progress D/T] [KEY=VALUE...]
                                               from a service: readiness, status, progress

`entrypoint COMMAND --help` tells more. Exit status: 0 ok, 1 failure, 2 invalid config or
usage, 3 no running entrypoint reachable; with a CMD, the CMD's status.
"""


def main(argv: list[str] | None = None) -> int:
    global _WHOLE_PROCESS
    _WHOLE_PROCESS = argv is None       # the real program, not a call from a test
    if _WHOLE_PROCESS:
        from entrypoint.core.signals import record_original

        record_original()           # before any handler of ours: what the CMD inherits
        _hold_closed_stdio()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in ("-h", "--help"):
            from entrypoint.cli.options import environment_help
            print(TOP_HELP + "\n" + environment_help(), end="")
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
            return cmd_version(rest)
        if command == "notify":
            from entrypoint.cli.notify import main as cmd_notify
            return cmd_notify(rest)
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


def cmd_version(argv: list[str]) -> int:
    from entrypoint.cli.options import parse

    parser = argparse.ArgumentParser(prog="entrypoint version",
                                     description="Print the version of entrypoint.")
    parse(parser, argv)
    print(f"entrypoint {__version__}")
    return 0


def load_config(config_path: str | None, procfile: str | None, *, need_config: bool,
                keep: bool = False):
    """Locate and validate the config: (Config or None, warnings). ConfigError on problems.

    `keep`: also write the validated form for `run` (config/cache.py), as `check` does."""
    from entrypoint.config import load as config_mod

    located = config_mod.locate(config_path, procfile, os.environ)
    if located is None:
        if need_config:
            places = ", ".join(config_mod.SEARCHED_PLACES)
            raise UsageError(f"no config found (looked in: {places}); pass -c FILE, set "
                             f"ENTRYPOINT_CONFIG, or give a command to run")
        return None, []
    path, kind = located
    if not keep:
        return config_mod.load(path, kind, os.environ)
    from entrypoint.config import cache

    environ = cache.RecordingEnv(os.environ)
    config, warnings = config_mod.load(path, kind, environ)
    return config, warnings, lambda: cache.save(path, kind, config, warnings, environ)


def cmd_check(argv: list[str]) -> int:
    from entrypoint.cli import options

    p = argparse.ArgumentParser(
        prog="entrypoint check",
        description="Validate the config and report every problem at once; start nothing. "
                    "The ENTRYPOINT_* variables of `entrypoint run` are checked too, so a "
                    "bad value set in a Dockerfile fails the build. Exit 0 when valid "
                    "(warnings may be printed), 2 when not.")
    chosen = options.add_options(p, options.CHECK)
    values = options.from_environment(options.parse(p, argv), chosen, os.environ)
    options.check_environment(os.environ, options.RUN)
    from entrypoint.config import graph

    config, warnings, keep = load_config(values.get("config"), values.get("procfile"),
                                         need_config=True, keep=True)
    for problem in warnings:
        print(f"warning: {problem.render()}", file=sys.stderr)
    if values.get("strict"):
        from entrypoint.config import preflight
        from entrypoint.errors import ConfigError

        found = preflight.problems(config)
        if found:
            raise ConfigError(config.source, found)
    # Only a config that passed, --strict included, is kept for `run`.
    kept = None if values.get("no_keep") else keep()
    enabled = [s for s in config.services if s.enabled]
    layers = graph.start_layers(config.services)
    order = " -> ".join("[" + ", ".join(layer) + "]" for layer in layers) or "(none)"
    print(f"{config.source}: ok, {len(enabled)} enabled service(s) of {len(config.services)}; "
          f"start order: {order}")
    if kept:    # a file the user did not name: say where, and how to do without it
        print(f"kept the validated config in {kept} for `entrypoint run` (used while the "
              f"config, its env files and the variables it read are unchanged; --no-keep "
              f"not to write it)")
    return 0


def cmd_run(argv: list[str]) -> int:
    from entrypoint.core import init

    init.block_signals()    # a signal during start-up waits for us instead of killing us
    from entrypoint.cli.options import parse_run

    options = parse_run(argv, os.environ)
    if options.cmd:
        _check_cmd(options.cmd[0])      # before the config is even validated
        if _plain_init(options):
            status = init.run(list(options.cmd))
            if _WHOLE_PROCESS:
                _exit_now(status)
            return status
    from entrypoint.cli.run import catch_early_signals, run

    catch_early_signals()
    validation = _cached(options)
    if validation is None:
        # Validate in a child from here on, while this process imports the runtime.
        from entrypoint.config import isolate

        validation = isolate.start(load_config, options.config, options.procfile,
                                   need_config=not options.cmd)
    status = run(options, validation)
    if _WHOLE_PROCESS:
        _exit_now(status)
    return status


_WHOLE_PROCESS = False


def _hold_closed_stdio() -> None:
    """Started with fd 0, 1 or 2 closed (`>&-`): put /dev/null there, so that no file,
    pipe or socket of ours lands on it and gets read or written as stdio. Close-on-exec,
    as Python opens it: the CMD still finds that fd closed, as it was given to us."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                held = os.open(os.devnull, os.O_RDWR)
            except OSError:
                return
            if held != fd:          # a lower one was free after all: not ours to fill
                os.close(held)


class _Validated:
    def __init__(self, answer):
        self.answer = answer

    def result(self):
        return self.answer


def _cached(options) -> _Validated | None:
    """What `entrypoint check` kept for this config, when nothing it read has changed."""
    from entrypoint.config.locate import locate

    located = locate(options.config, options.procfile, os.environ)
    if located is None:
        return None
    from entrypoint.config import cache

    answer = cache.load(*located, os.environ)
    if answer is None:
        return None
    from entrypoint.config.isolate import import_asyncio_without_ssl

    import_asyncio_without_ssl()    # as isolate.start does: ssl is 4.8 MB of PSS
    return _Validated(answer)


def _plain_init(options) -> bool:
    """No config to be found (and no report asked): run the CMD as a plain init does,
    without the runner (no asyncio, no pydantic, no control socket)."""
    from entrypoint.config.locate import locate

    return not options.report and locate(options.config, options.procfile, os.environ) is None


def _check_cmd(word: str) -> None:
    """A CMD that cannot run stops everything before it starts (126 or 127, as a shell)."""
    from entrypoint.core.cmd import CmdError, resolve

    try:
        resolve(word, os.environ.get("PATH"))
    except CmdError as exc:
        if "/" not in word and exc.exit_status == EXIT_CMD_NOT_FOUND:
            raise EntrypointError(not_found_message(word), EXIT_CMD_NOT_FOUND) from None
        raise


def not_found_message(word: str) -> str:
    """A CMD not found; a word close to a subcommand is more likely a typo than a CMD."""
    import difflib

    message = f'command "{word}" not found in PATH; nothing was started'
    close = difflib.get_close_matches(word, SUBCOMMANDS, n=1, cutoff=0.6)
    if close:
        message += (f' (did you mean "{close[0]}"? a first word that is not a subcommand '
                    f'is run as the main command)')
    return message


def _exit_now(status: int) -> None:
    """End the process without the interpreter's teardown once the run is over.

    Everything is stopped, reaped and written by then (shutdown hooks, report, log
    files); tearing down the modules and freeing every object only delays the exit that
    `docker stop` and the benchmark wait for: ~45 ms of 90 here (measured).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):    # None: that fd was closed at start
            pass
    os._exit(status)
