"""`entrypoint run`: validate, then supervise on one asyncio loop until the end."""

from __future__ import annotations

import argparse
import os
import signal

from entrypoint.config.spec import Config

# Signals that arrive while we validate, before the loop's handlers exist. As PID 1 the
# kernel drops a signal that has no handler, so a `docker stop` then would be lost; not
# as PID 1, the default action of most others (HUP, USR1, ALRM, ...) would kill us.
EARLY_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_early: list[int] = []


def catch_early_signals() -> None:
    """Handlers until the loop's own, then unblock what `init.block_signals` held (a
    signal that came meanwhile is handled now). The synchronous ones stay blocked until
    the loop handles them: a no-op handler would turn a real fault into a busy loop."""
    from entrypoint.core.signals import CATCHABLE, SYNCHRONOUS

    for sig in CATCHABLE:
        if sig in EARLY_SIGNALS:
            signal.signal(sig, lambda signum, frame: _early.append(signum))
        elif sig != signal.SIGCHLD and sig not in SYNCHRONOUS:
            signal.signal(sig, _ignore_for_now)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [s for s in CATCHABLE if s not in SYNCHRONOUS])


def _ignore_for_now(signum, frame) -> None:
    """Not SIG_IGN: an ignored disposition would be inherited by what we spawn."""


def run(args: argparse.Namespace, cmd: list[str], validation) -> int:
    """Supervise; `validation` is the config's validation under way (`isolate.start`)."""
    import asyncio      # here, not above: cli starts the config's validation before this

    from entrypoint.output.printer import Printer, use_color

    config, warnings = validation.result()
    if config is None:
        config = Config(source="(no config)", services=())
    if cmd:
        from entrypoint.core.cmd import resolve

        resolve(cmd[0], os.environ.get("PATH"))     # CmdError: 127 or 126, nothing started
    # With no services we are a plain init: nothing of ours on stdout, warnings on stderr.
    fd = 1 if config.services else 2
    color = use_color(None if args.color == "auto" else args.color, os.environ, os.isatty(fd))
    printer = Printer(fd, color=color, timestamps=args.timestamps, log_format=args.log_format)
    printer.quiet = args.quiet or not config.services
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
