"""The stack: start services, gate the CMD on readiness, stop in reverse, decide the exit.

One asyncio loop, one reaper. Every decision to end the run goes through `_end()`, which
starts the one shutdown and fixes the exit status (CONTRACT §7).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from entrypoint.output.ring import LogRing

from entrypoint.output.printer import Printer

from entrypoint.output.logfile import RotatingLog

from entrypoint.output.stream import StreamOutput
from entrypoint.core.child import Child
from entrypoint.core.cmd_wait import wait_until_ready
from entrypoint.core.order import stop_in_order
from entrypoint.core.reaper import ExitStatus, Reaper
from entrypoint.core import notify_client
from entrypoint.core.notify import NotifySocket, open_notify_socket
from entrypoint.core.service import Runtime, Service
from entrypoint.core.state import TERMINAL, State
from entrypoint.core.cmd import CmdError, spawn_cmd, take_terminal_back
from entrypoint.config.spec import Config
from entrypoint.core.signals import (FORWARDED_SIGNALS, SHUTDOWN_SIGNALS, SYNCHRONOUS,
                                     become_subreaper)
from entrypoint.core.sweep import final_sweep, leftovers_text
from entrypoint.store.history import History, note_progress

# The run ends at most this long after global_shutdown_timeout, whatever is left: a process
# the kernel cannot kill (uninterruptible sleep), an error in the sweep, no /proc.
FINAL_MARGIN = 3.0

class Supervisor:
    def __init__(self, config: Config, printer: Printer, *, cmd: list[str] | None = None,
                 ready_timeout: float | None = None, environ: dict[str, str] | None = None,
                 log_lines: int = 1000):
        self.config = config
        self.printer = printer
        self.cmd = cmd
        self.ready_timeout = (ready_timeout if ready_timeout is not None
                              else config.timeouts.dependency_wait_timeout)
        self.environ = dict(os.environ if environ is None else environ)
        # Our own notify socket (systemd Type=notify, podman --sdnotify) is ours alone:
        # services and the CMD never inherit it (CONTRACT §12).
        self.own_notify_socket = self.environ.pop("NOTIFY_SOCKET", None)
        self.own_watchdog = (self.environ.pop("WATCHDOG_USEC", None),
                             self.environ.pop("WATCHDOG_PID", None))
        self.phase_listeners: list = []    # called with "stopping", "reloading", "reloaded"
        self.notify_socket: NotifySocket | None = None
        self.notify_listeners: list = []   # (service, keys) for each accepted datagram
        self.log_lines = log_lines
        self.reaper = Reaper()
        self.services: dict[str, Service] = {}
        self.rings: dict[str, LogRing] = {}
        self._outputs: dict[str, dict[str, StreamOutput]] = {}
        self._hook_outputs: dict[str, StreamOutput] = {}
        self._logs: dict[str, RotatingLog] = {}
        self.shutting_down = False
        self.started_at = time.time()
        self._cmd: Child | None = None
        self.cmd_exit: ExitStatus | None = None
        self._exit_status: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[int] | None = None
        self._shutdown_task: asyncio.Task | None = None
        self._ready_changed = asyncio.Event()
        self.early_signals: list[int] = []
        self.end_reason: str | None = None       # why the run ended (for reports)
        self._shutdown_signal = signal.SIGTERM   # what the CMD gets when we shut down
        self._forced = False
        self._stop_deadline: float | None = None    # loop time the shutdown must end by
        # Extensions (control socket, reports) plug in here: called with the supervisor
        # once the loop runs, and awaited after the last service stopped.
        self.startup_hooks: list = []
        self.shutdown_hooks: list = []
        self.on_reload_signal = None     # set by the control layer (SIGHUP)
        self.on_report_signal = None     # set by the control layer (SIGUSR1 without a CMD)
        self.change_listeners: list = []  # called with each service that changed (proctitle)
        self.before_sweep_hooks: list = []  # awaited once the services stopped (history writer)
        self.history = History()
        self.notify_listeners.append(note_progress)
        self.notify_listeners.append(_job_notified)
        self.enabled_overrides: dict[str, bool] = {}   # `enable`/`disable NAME` (state_dir)
        self.store = None                # the state_dir writer, when there is one
        self.alerts = None               # core/alerts.py, when wired

    @property
    def cmd_pid(self) -> int | None:
        cmd = self._cmd
        return cmd.pid if cmd is not None and not cmd.reaped else None

    # -- wiring -----------------------------------------------------------------------

    def _runtime(self) -> Runtime:
        return Runtime(loop=self._loop, reaper=self.reaper, printer=self.printer,
                       timeouts=self.config.timeouts, lookup=self.services.__getitem__,
                       on_change=self._on_change, outputs_for=self._outputs_for,
                       hook_output_for=self._hook_output_for, environ=self.environ,
                       notify_path=self._notify_path, notify_listeners=self.notify_listeners,
                       on_run=self.history.add)

    def _notify_path(self) -> str | None:
        return self.notify_socket.path if self.notify_socket is not None else None

    def _add_service(self, spec) -> Service:
        service = Service(spec, self._runtime())
        self.services[spec.name] = service
        self.rings.setdefault(spec.name, LogRing(self.log_lines))
        return service

    def _log_for(self, service: Service) -> RotatingLog | None:
        spec = service.spec
        if not spec.log_file:
            return None
        log = self._logs.get(spec.name)
        if log is None:
            log = RotatingLog(spec.log_file, spec.log_max_bytes, spec.log_backups,
                              on_error=lambda msg: self.printer.system(
                                  f"{spec.name}: log_file: {msg}", "warning"))
            self._logs[spec.name] = log
        return log

    def _outputs_for(self, service: Service) -> dict[str, StreamOutput]:
        outputs = self._outputs.get(service.name)
        if outputs is None:
            log, ring = self._log_for(service), self.rings[service.name]
            outputs = {stream: StreamOutput(self.printer, service.name, stream, log=log, ring=ring)
                       for stream in (("stdout",) if service.spec.tty else ("stdout", "stderr"))}
            self._outputs[service.name] = outputs
        return outputs

    def _hook_output_for(self, service: Service) -> StreamOutput:
        output = self._hook_outputs.get(service.name)
        if output is None:
            output = StreamOutput(self.printer, service.name, "stdout", log=self._log_for(service),
                                  ring=self.rings[service.name])
            self._hook_outputs[service.name] = output
        return output

    # -- the run ----------------------------------------------------------------------

    async def run(self) -> int:
        """Supervise until the end; return the exit status (CONTRACT §7)."""
        self._loop = asyncio.get_running_loop()
        self._done = self._loop.create_future()
        if os.getpid() != 1:
            become_subreaper()
        self.reaper.install(self._loop)
        self.printer.writer.attach(self._loop)    # stdout from the loop, never blocking it
        for sig in SHUTDOWN_SIGNALS:
            self._loop.add_signal_handler(sig, self._on_shutdown_signal, sig)
        self._loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        for sig in FORWARDED_SIGNALS:
            self._loop.add_signal_handler(sig, self._on_other_signal, sig)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SYNCHRONOUS)   # handled from now on
        for sig in self.early_signals:      # arrived while we were validating
            self._loop.call_soon(self._on_shutdown_signal, sig)

        self.printer.set_names(self.config.names)
        self.notify_socket = open_notify_socket(self)
        self_notifier = notify_client.attach(self)
        for hook in self.startup_hooks:
            await hook(self)
        for spec in self.config.services:
            self._add_service(spec)
        enabled = [s for s in self.services.values() if s.spec.enabled]
        what = f"{len(enabled)} service{'s' if len(enabled) != 1 else ''}"
        self.printer.system(f"starting {what} from {self.config.source}"
                            + (f" (pid {os.getpid()})" if os.getpid() != 1 else " as PID 1"))
        for service in enabled:
            service.start()
        if self_notifier is not None:
            self_notifier.start()
        if self.cmd:
            self._loop.create_task(self._run_cmd())
        elif not enabled and not any(on is False for on in self.enabled_overrides.values()):
            # (Services disabled by `disable NAME` keep the runner up: `enable` may follow.)
            self._end(0, "no services to run")
        status = await self._done
        for hook in self.shutdown_hooks:
            await hook(self)
        for sig in (*SHUTDOWN_SIGNALS, signal.SIGHUP, *FORWARDED_SIGNALS):
            self._loop.remove_signal_handler(sig)
        self.reaper.uninstall()
        if self.notify_socket is not None:
            self.notify_socket.close()
        if self_notifier is not None:
            self_notifier.close()
        for log in self._logs.values():
            log.close()
        # A stalled stdout gets what is left of the shutdown's time, at least a moment.
        await self.printer.writer.finish(self._stop_deadline)
        return status

    def _on_change(self, service: Service) -> None:
        self._ready_changed.set()
        self._ready_changed = asyncio.Event()
        for listener in self.change_listeners:
            listener(service)
        if self.shutting_down:
            return
        if service.state == State.FAILED and service.spec.required:
            exit_status = service.last_exit
            status = exit_status.shell_status if exit_status and not exit_status.success else 1
            self._end(status, f'required service "{service.name}" failed')
        elif self.config.procfile and service.state in TERMINAL and not service.stop_requested:
            exit_status = service.last_exit
            status = exit_status.shell_status if exit_status else 1
            self._end(status, f'"{service.name}" ended ({exit_status.describe() if exit_status else "did not start"})')
        elif not self.cmd and service.state in TERMINAL:
            services = [s for s in self.services.values() if s.spec.enabled]
            # Ended by itself: a service someone stopped keeps the runner up (as supervisord).
            # None left enabled (`disable NAME` of the last one): the runner stays up too.
            if services and all(s.state in TERMINAL and not s.stop_requested for s in services):
                failed = [s.name for s in services if s.state == State.FAILED]
                self._end(1 if failed else 0, "every service has ended"
                          + (f" ({', '.join(failed)} failed)" if failed else ""))

    # -- the CMD ----------------------------------------------------------------------

    def not_ready(self) -> list[Service]:
        return [s for s in self.services.values()
                if s.spec.enabled and s.condition(s.ready_condition) is not True]

    async def _run_cmd(self) -> None:
        if not await self._wait_ready():
            return
        self.printer.system(f"all services ready; running {' '.join(self.cmd)}")
        try:
            # Not a group leader for our signals: they go to the CMD's pid, as tini does.
            self._cmd = Child.spawn(self._loop, self.reaper, self.cmd, spawner=spawn_cmd,
                                    env=self.environ, group=False, label="the command")
        except CmdError as exc:
            self.printer.system(f"cannot run the command: {exc.message}", "error")
            self._end(exc.exit_status, "the command could not start")
            return
        status = await self._cmd.exited
        take_terminal_back()   # so that a Ctrl-C during the shutdown reaches us
        self.cmd_exit = status
        self._end(status.shell_status, f"the command ended ({status.describe()})")

    async def _wait_ready(self) -> bool:
        return await wait_until_ready(self)

    # -- signals ----------------------------------------------------------------------

    def _on_shutdown_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self.shutting_down:
            if sig in (signal.SIGTERM, signal.SIGINT):
                self.printer.system(f"{name} again: killing everything now", "warning")
                self._exit_status = 128 + sig
                self._kill_everything()
            return
        self.printer.system(f"{name} received: shutting down")
        self._shutdown_signal = sig
        self._end(None, f"{name}")

    def _on_hup(self) -> None:
        if self.on_reload_signal is not None:
            self.on_reload_signal()
        else:
            self.printer.system("SIGHUP received; reload is not available here", "warning")

    def _on_other_signal(self, sig: int) -> None:
        if self.cmd_pid is not None:
            self._cmd.signal(sig)
        elif sig == signal.SIGUSR1 and self.on_report_signal is not None:
            self.on_report_signal()

    # -- shutdown ---------------------------------------------------------------------

    def _end(self, status: int | None, reason: str) -> None:
        """Begin the one shutdown. `status` None: a signal asked (the CMD's status, or 0)."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self.end_reason = reason
        self._exit_status = status
        self._shutdown_task = self._loop.create_task(self._shutdown(reason))
        self.tell("stopping")

    def tell(self, phase: str) -> None:
        """Tell the phase listeners: "stopping", "reloading", "reloaded"."""
        for listener in self.phase_listeners:
            try:
                listener(phase)
            except Exception:   # a notify client must never break supervision
                pass

    async def _shutdown(self, reason: str) -> None:
        limit = self.config.timeouts.global_shutdown_timeout
        self.printer.system(f"stopping ({reason})")
        deadline = self._loop.time() + limit      # the final sweep too
        self._stop_deadline = deadline
        # Whatever happens below, the run ends by deadline + FINAL_MARGIN: an orchestrator
        # SIGKILLs us anyway, better that we exit saying what we could not stop.
        bound = self._loop.call_at(deadline + FINAL_MARGIN, self._give_up, limit)
        try:
            await self._stop_and_sweep(deadline, limit)
        except Exception as exc:     # a bug or a missing /proc must not keep PID 1 up
            self.printer.system(f"error during the shutdown: {exc!r}; exiting anyway", "error")
            if self._exit_status is None:
                self._exit_status = 1
        finally:
            bound.cancel()
        self._finish()

    async def _stop_and_sweep(self, deadline: float, limit: float) -> None:
        everything = self._loop.create_task(self._stop_everything())
        try:
            await asyncio.wait_for(asyncio.shield(everything), limit)
        except asyncio.TimeoutError:
            self.printer.system(f"shutdown took longer than {limit:g}s "
                                f"(global_shutdown_timeout): killing what is left", "warning")
            self._kill_everything()
            if self._exit_status is None:
                self._exit_status = 1
            await everything
        for hook in self.before_sweep_hooks:    # our own helpers end before the sweep
            try:
                await hook(self)
            except Exception as exc:
                self.printer.system(f"error during the shutdown: {exc!r}", "error")
        await final_sweep(self.reaper, self.printer, self._loop, deadline, self._forced)

    def _give_up(self, limit: float) -> None:
        """The shutdown overran its bound: exit now, naming what is still there."""
        stuck = [f"{s.name} (pid {s.pid}, {s.state.value})" for s in self.services.values()
                 if s.pid is not None]
        if self.cmd_pid is not None:
            stuck.append(f"the command (pid {self.cmd_pid})")
        self.printer.system(f"could not stop everything within {limit:g}s "
                            f"(global_shutdown_timeout) + {FINAL_MARGIN:g}s: "
                            f"{', '.join(stuck) or 'no service left'}; {leftovers_text()}; "
                            f"exiting anyway", "error")
        if self._exit_status is None:
            self._exit_status = 1
        self._finish()

    def _finish(self) -> None:
        if self._done.done():
            return
        status = self._exit_status
        if status is None:
            status = self.cmd_exit.shell_status if self.cmd_exit else 0
        self.printer.system(f"exit status {status}")
        self._done.set_result(status)

    async def _stop_everything(self) -> None:
        if self.cmd_pid is not None:
            await self._stop_cmd()

        async def stop_reported(service: Service, reason: str) -> None:
            was_running = service.pid is not None
            began = self._loop.time()
            await service.stop(reason)
            if was_running:
                exit_status = service.last_exit
                self.printer.system(f"{service.name} stopped "
                                    f"({exit_status.describe() if exit_status else 'no status'}) "
                                    f"in {self._loop.time() - began:.2f}s")

        await stop_in_order(list(self.services.values()), "shutdown", stop_reported)

    async def _stop_cmd(self) -> None:
        """The CMD depends on every service: it stops first, like a service would."""
        timeout = self.config.timeouts.service_shutdown_timeout

        def late() -> None:
            self.printer.system(f"the command did not stop within {timeout:g}s; SIGKILL",
                                "warning")

        # The signal we got, as tini forwards it.
        await self._cmd.stop(self._shutdown_signal, timeout, late)

    def _kill_everything(self) -> None:
        for service in self.services.values():
            service.kill()
        self._forced = True
        if self._cmd is not None:
            self._cmd.kill()

    # -- operations for the control layer ----------------------------------------------

    def snapshot(self) -> list[dict]:
        return [service.snapshot() for service in self.services.values()]

    def request_shutdown(self) -> None:
        self._end(None, "shutdown requested")

    def remove_service(self, name: str, *, keep_ring: bool) -> None:
        """Forget a stopped service (reload): its outputs, its log file, and its ring unless kept."""
        self.services.pop(name, None)
        self._outputs.pop(name, None)
        self._hook_outputs.pop(name, None)
        log = self._logs.pop(name, None)
        if log is not None:
            log.close()
        if not keep_ring:
            self.rings.pop(name, None)


def _job_notified(service, said: set[str]) -> None:
    """X_NEXT_RUN from a job moves its next run. The job code (and its schedule) is
    imported only once a job exists: a config without jobs never loads it."""
    if service.job is not None and "X_NEXT_RUN" in said:
        from entrypoint.core.job import on_notify

        on_notify(service, said)
