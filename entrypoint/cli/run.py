"""`entrypoint run`: validate, then supervise on one asyncio loop until the end."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys

from entrypoint.errors import EntrypointError
from entrypoint.config.spec import Config

EXIT_CMD_NOT_FOUND = 127

# Signals that arrive while we validate, before the loop's handlers exist. As PID 1 the
# kernel drops a signal that has no handler, so a `docker stop` then would be lost.
EARLY_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_early: list[int] = []


def catch_early_signals() -> None:
    for sig in EARLY_SIGNALS:
        signal.signal(sig, lambda signum, frame: _early.append(signum))


def run(args: argparse.Namespace, cmd: list[str], validation) -> int:
    """Supervise; `validation` is the config's validation under way (`isolate.start`)."""
    import asyncio      # here, not above: cli starts the config's validation before this

    from entrypoint.output.printer import Printer, use_color

    config, warnings = validation.result()
    if config is None:
        config = Config(source="(no config)", services=())
    if cmd and shutil.which(cmd[0], path=os.environ.get("PATH")) is None:
        raise EntrypointError(f'command "{cmd[0]}" not found in PATH; nothing was started',
                              EXIT_CMD_NOT_FOUND)
    color = use_color(None if args.color == "auto" else args.color, os.environ,
                      os.isatty(sys.stdout.fileno()))
    printer = Printer(sys.stdout.fileno(), color=color, timestamps=args.timestamps,
                      log_format=args.log_format)
    printer.set_names([s.name for s in config.services])
    for problem in warnings:
        if not problem.check_only:
            printer.system(f"warning: {problem.render()}", "warning")

    from entrypoint.core.supervisor import Supervisor

    supervisor = Supervisor(config, printer, cmd=cmd or None, ready_timeout=args.ready_timeout,
                            log_lines=args.log_lines)
    supervisor.early_signals = _early
    from entrypoint.control.server import attach

    attach(supervisor, args)    # control socket, reload, SIGUSR1 report, title, auto-install
    if args.report:
        from entrypoint.core.report import install as install_report

        install_report(supervisor, args.report, cmd or None)
    return asyncio.run(supervisor.run())
