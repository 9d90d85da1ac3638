"""`entrypoint run`: validate, wire the runner's faces, then supervise on one asyncio loop.

The wiring is here, where a reader looks for it: the control socket and its operations,
reload (SIGHUP and `entrypoint reload`), the SIGUSR1 table, the process title, the
automatic PATH install and the `--report` file. control/ keeps only the socket's own code.
"""

from __future__ import annotations

import os
import signal

from entrypoint.errors import EntrypointError
from entrypoint.config.spec import Config
from entrypoint.cli.options import RunOptions

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


def run(options: RunOptions, validation) -> int:
    """Supervise; `validation` is the config's validation under way (`isolate.start`)."""
    import asyncio      # here, not above: cli starts the config's validation before this

    from entrypoint.output.printer import Printer, use_color
    from entrypoint.output.writer import write_now

    config, warnings = validation.result()
    if config is None:
        config = Config(source="(no config)", services=())
    cmd = list(options.cmd)
    # With no services we are a plain init: nothing of ours on stdout, warnings on stderr.
    fd = 1 if config.services else 2
    color = use_color(None if options.color == "auto" else options.color, os.environ,
                      os.isatty(fd))
    printer = Printer(fd, color=color, timestamps=options.timestamps,
                      log_format=options.log_format)
    printer.quiet = options.quiet or not config.services
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
            ops.events.on_change(service)       # `entrypoint events`, `wait`, the HTTP face
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
