"""`entrypoint run`: validate, wire the runner's faces, then supervise on one asyncio loop.

The wiring is here, where a reader looks for it: the control socket and its operations,
reload (SIGHUP and `entrypoint reload`), the SIGUSR1 table, the process title, the
automatic PATH install and the `--report` file. control/ keeps only the socket's own code.
"""

from __future__ import annotations

import os
import signal
import sys

from entrypoint.errors import EntrypointError
from entrypoint.config.spec import Config
from entrypoint.cli.options import RunOptions

# Signals that arrive while we validate, before the loop's handlers exist. As PID 1 the
# kernel drops a signal that has no handler, so a `docker stop` then would be lost.
EARLY_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_early: list[int] = []


def catch_early_signals() -> None:
    for sig in EARLY_SIGNALS:
        signal.signal(sig, lambda signum, frame: _early.append(signum))


def run(options: RunOptions, validation) -> int:
    """Supervise; `validation` is the config's validation under way (`isolate.start`)."""
    import asyncio      # here, not above: cli starts the config's validation before this

    from entrypoint.output.printer import Printer, use_color
    from entrypoint.output.writer import write_now

    config, warnings = validation.result()
    if config is None:
        config = Config(source="(no config)", services=())
    cmd = list(options.cmd)
    color = use_color(None if options.color == "auto" else options.color, os.environ,
                      os.isatty(sys.stdout.fileno()))
    printer = Printer(sys.stdout.fileno(), color=color, timestamps=options.timestamps,
                      log_format=options.log_format)
    printer.set_names([s.name for s in config.services])
    printer.writer.on_first_drop = lambda: write_now(
        2, b"entrypoint: stdout is not being read; dropping output from now on\n")
    for problem in warnings:
        if not problem.check_only:
            printer.system(f"warning: {problem.render()}", "warning")

    from entrypoint.core.supervisor import Supervisor

    supervisor = Supervisor(config, printer, cmd=cmd or None,
                            ready_timeout=options.ready_timeout, log_lines=options.log_lines)
    supervisor.early_signals = _early
    attach_control(supervisor, options)
    from entrypoint.store.state import attach as attach_state

    attach_state(supervisor)     # before the loop: the saved history and enable/disable
    from entrypoint.core.alerts import attach as attach_alerts

    attach_alerts(supervisor)
    if options.report:
        from entrypoint.core.report import install as install_report

        install_report(supervisor, options.report, cmd or None)
    status = asyncio.run(supervisor.run())
    report_dropped(printer)
    return status


def report_dropped(printer) -> None:
    """The runner's last word, on stderr: how much output a stalled stdout cost."""
    from entrypoint.output.writer import write_now

    if printer.dropped:
        write_now(2, f"entrypoint: {printer.dropped} line(s) of output dropped: stdout was "
                     f"not read (closed, or stalled at exit)\n".encode())


def attach_control(supervisor, options: RunOptions) -> None:
    """Give a Supervisor its control socket, reload, SIGUSR1 report, title and auto-install.

    The socket is bound in a startup hook, before any service starts: a live socket of
    another runner refuses the run with a clear message. Other errors creating it only
    disable the control socket, with a warning.
    """
    from entrypoint.control.operations import Operations
    from entrypoint.control.protocol import server_path
    from entrypoint.control.server import ControlServer
    from entrypoint.core.proctitle import Title
    from entrypoint.core.reload import Reloader

    config = supervisor.config
    source = None
    if os.path.isfile(config.source):
        source = (os.path.abspath(config.source), "procfile" if config.procfile else "toml")
    ops = Operations(supervisor)
    ops.reloader = Reloader(supervisor, ops, source)
    path = server_path(options.socket)
    server = ControlServer(ops, path, supervisor.printer)
    title = Title()
    supervisor.control = server     # for tests and the HTTP API later

    def on_change(service) -> None:
        try:
            # Once per loop iteration, not per change: a start or stop of N services makes
            # N changes, and each summary walks all N (quadratic; profiled at 50 services).
            title.update_soon(supervisor)
            ops.index.ensure(service.name, supervisor.rings.get(service.name))
        except Exception:       # cosmetics and bookkeeping must never break supervision
            pass

    async def startup(sup) -> None:
        for spec in sup.config.services:      # rings first, so the index sees every block
            sup.rings.setdefault(spec.name, _new_ring(sup))
        ops.index.attach_all(sup.rings)
        try:
            await server.start()
        except EntrypointError:
            raise
        except OSError as exc:
            sup.printer.system(f"control socket disabled: cannot create {path}: "
                               f"{exc.strerror or exc}; use --socket or ENTRYPOINT_SOCKET "
                               f"to put it elsewhere", "warning")
        if not options.no_install:
            from entrypoint.cli.install import auto_install
            auto_install(sup.printer)
        title.update(sup)

    async def shutdown(sup) -> None:
        await server.close()

    supervisor.startup_hooks.append(startup)
    supervisor.shutdown_hooks.append(shutdown)
    supervisor.change_listeners.append(on_change)
    supervisor.on_reload_signal = ops.reloader.on_signal
    supervisor.on_report_signal = lambda: print_table(supervisor)


def print_table(supervisor) -> None:
    """SIGUSR1 (no CMD): print the `list` table into the log."""
    from entrypoint.cli.render import render_list
    supervisor.printer.system("services (SIGUSR1):\n" + render_list(supervisor.snapshot()))


def _new_ring(supervisor):
    from entrypoint.output.ring import LogRing
    return LogRing(supervisor.log_lines)
