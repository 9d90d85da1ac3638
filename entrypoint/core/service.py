"""One service: its state machine and its run loop (deps, hooks, spawn, health, restart).

Every state change goes through `_set_state`, which checks the transition table,
timestamps it, keeps a short history and tells the supervisor. The run loop is one
asyncio task per start; `stop()` asks it to end and waits for it. The process itself is a
`Child` (core/child.py); the restart decision is `RestartPolicy` (core/restart.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from entrypoint.core import ports, readiness
from entrypoint.core.child import Child
from entrypoint.core.dependencies import wait_dependencies
from entrypoint.core.hooks import child_spawner, run_hook
from entrypoint.core.notify import NotifyState
from entrypoint.core.restart import RestartPolicy
from entrypoint.core.snapshot import snapshot
from entrypoint.output.printer import Printer
from entrypoint.output.stream import StreamOutput
from entrypoint.core.reaper import ExitStatus, Reaper
from entrypoint.core.spawn import SpawnError, child_environment, resolve_identity
from entrypoint.config.spec import ServiceSpec, Timeouts
from entrypoint.core.state import ALLOWED, TERMINAL, S, State
from entrypoint.store.history import Run


@dataclass
class Runtime:
    """What a service needs from the supervisor around it.

    `spawn` and `clock` are seams: unit tests pass a fake spawner (returning a Child-like
    handle) and a fake clock; by default a real `Child` on this loop and the loop's time."""

    loop: asyncio.AbstractEventLoop
    reaper: Reaper
    printer: Printer
    timeouts: Timeouts
    lookup: Callable[[str], "Service"]
    on_change: Callable[["Service"], None]
    outputs_for: Callable[["Service"], dict[str, StreamOutput]]
    hook_output_for: Callable[["Service"], StreamOutput]
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    spawn: Callable[..., Child] | None = None
    clock: Callable[[], float] | None = None
    notify_path: Callable[[], str | None] = lambda: None     # the runner's notify socket
    notify_listeners: list = field(default_factory=list)     # (service, keys) per datagram
    wall: Callable[[], float] = time.time      # a job's schedule reads the wall clock
    # Each run, for the history: when it begins (finished False), and when it ended.
    on_run: Callable[[Run, bool], None] = lambda run, finished: None

    def __post_init__(self) -> None:
        if self.spawn is None:
            self.spawn = child_spawner(self.loop, self.reaper)
        if self.clock is None:
            self.clock = self.loop.time


@dataclass
class Attempt:
    """How one start ended: an exit status, or a reason it never ran."""

    exit: ExitStatus | None = None
    error: str = ""
    ran_for: float = 0.0


class Service:
    def __init__(self, spec: ServiceSpec, runtime: Runtime):
        self.spec = spec
        self.rt = runtime
        self.state = State.PENDING if spec.enabled else State.DISABLED
        self.health = "-"
        self.restarts = 0
        self.last_exit: ExitStatus | None = None
        self.last_error = ""
        self.started_at: float | None = None      # wall clock of the current run
        self.history: deque[tuple[float, str, str]] = deque(maxlen=20)
        self.history.append((time.time(), self.state.value, "configured"))
        self.last_check: tuple[float, bool, str] | None = None
        self.started_once = False
        self.completed_once = False
        self._task: asyncio.Task | None = None
        self._stop_requested = False
        self._health_restart = False
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self.hook: tuple[Child, str] | None = None    # a pre_script or post_script running
        self._child: Child | None = None               # the service's process, this run
        self.notify = NotifyState()                    # what it said on its notify socket
        self.ready_signal = asyncio.Event()            # its ready protocol fired, this run
        self.trigger = "start"                         # why the current run began
        self.watchdog_fired = False                    # this run was killed by its watchdog
        self.last_run: dict | None = None
        self.current_run: Run | None = None
        self.job = None
        if spec.job is not None:
            from entrypoint.core.job import Job      # cronsim only when a job exists
            self.job = Job(self)

    @property
    def pid(self) -> int | None:
        """The service's pid while it runs (None from the moment it is reaped)."""
        child = self._child
        return child.pid if child is not None and not child.reaped else None

    # -- state ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    def _set_state(self, new: State, reason: str = "") -> None:
        if new == self.state:
            return
        if new not in ALLOWED[self.state]:
            # A bug in the run loop, not bad input. Raising would end the run task and leave
            # the state stale (RUNNING for a dead process, dependents waiting on it), and
            # PID 1 must not die of it: say it loudly, and record what really happened.
            self.say(f"internal error: state change {self.state.value} -> {new.value} "
                     f"is not in the transition table ({reason or 'no reason'}); please report",
                     "error")
        self.state = new
        self.history.append((time.time(), new.value, reason))
        if new in (State.RUNNING, State.SCHEDULED):     # a job is up while it waits
            self.started_once = True
        if new == State.RUNNING and self.current_run and self.current_run.ready is None:
            self.current_run.ready = time.time()
        if new == State.COMPLETED:
            self.completed_once = True
        self._notify()

    def _set_health(self, value: str) -> None:
        if value == "healthy" and self.current_run and self.current_run.ready is None:
            self.current_run.ready = time.time()
        if value != self.health:
            self.health = value
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        self.rt.on_change(self)

    def changed(self):
        """An awaitable that completes at the next change of state or health."""
        return self._changed.wait()

    def say(self, message: str, level: str = "info") -> None:
        self.rt.printer.system(f"{self.name}: {message}", level)

    @property
    def ready_condition(self) -> str:
        if self.spec.oneshot:
            return "completed"
        return "healthy" if self.spec.healthcheck else "started"

    def condition(self, cond: str) -> bool | None:
        """True: `cond` holds; False: it can no longer hold in this run; None: not yet."""
        if cond == "completed" and self.completed_once:
            return True
        if cond == "healthy" and self.health == "healthy":
            return True
        if cond == "started" and (self.started_once or self.completed_once):
            return True
        return False if self.state in TERMINAL else None

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    @property
    def active(self) -> bool:
        """A run task exists: the service is starting, running, backing off or stopping."""
        return self._task is not None and not self._task.done()

    @property
    def protocol_ready(self) -> bool:
        """No ready protocol, or the service announced it is ready in this run."""
        return self.spec.ready is None or self.ready_signal.is_set()

    def on_notify(self, fields: dict[str, str]) -> None:
        """A datagram from one of this service's processes (core/notify.py); may raise
        NotifyError, which the socket counts and logs as a refusal."""
        said = self.notify.apply(fields, time.time(), self.rt.clock())
        readiness.on_notify(self, said)
        for listener in self.rt.notify_listeners:
            listener(self, said)

    # -- control ----------------------------------------------------------------------

    def run_now(self) -> asyncio.Task:
        """`start NAME`: a job runs now (CONTRACT §11); any other service starts."""
        task = self.start()
        if self.job is not None:
            self.job.run_now("manual")
        return task

    def start(self) -> asyncio.Task:
        """Begin a run (waiting for dependencies first); a no-op if one is under way."""
        if self.active:
            return self._task
        if self.state != State.PENDING:
            self._set_state(State.PENDING, "start requested")
        self._stop_requested = False
        self.started_once = self.completed_once = False
        self._wake = asyncio.Event()
        self.trigger = "start" if self._task is None else "manual"
        self._task = self.rt.loop.create_task(self._run(), name=f"service {self.name}")
        return self._task

    async def stop(self, reason: str = "stop requested") -> None:
        """Stop the service (stop signal, SIGKILL after its timeout) and its hooks.

        Any number of callers may ask at once (a `stop` during a shutdown): they all await
        the one stop of the process, which gets its stop signal once."""
        self._stop_requested = True
        self._wake.set()
        child = self._child
        if child is not None and not child.reaped:
            await self._terminate(child, reason)
        if self.hook is not None and self.hook[1] == "pre_script":
            self.hook[0].kill()        # a post_script may finish
        if self._task is not None:
            await asyncio.shield(self._task)
        if self.state == State.PENDING:
            self._set_state(State.STOPPED, reason)

    def kill(self) -> None:
        """SIGKILL everything of this service now (a forced shutdown)."""
        self._stop_requested = True
        self._wake.set()
        for child in (self._child, self.hook[0] if self.hook else None):
            if child is not None:
                child.kill()

    async def _terminate(self, child: Child, reason: str) -> None:
        if not child.stopping and self.state in (S.RUNNING, S.STARTING):
            self._set_state(State.STOPPING, reason)
        timeout = self.rt.timeouts.service_shutdown_timeout

        def late() -> None:
            self.say(f"did not stop within {timeout:g}s of SIG{self.spec.stop_signal}; "
                     f"sending SIGKILL", "warning")

        await child.stop(getattr(signal, "SIG" + self.spec.stop_signal), timeout, late)

    # -- the run loop -----------------------------------------------------------------

    async def _run(self) -> None:
        try:
            if not await self._wait_dependencies():
                return
            if self.job is not None:
                await self.job.main()
                return
            policy = RestartPolicy(self.spec)
            while True:
                self._set_state(State.STARTING)
                if self.spec.wait_after and not await self._pause(self.spec.wait_after):
                    self._set_state(State.STOPPED, "stopped before it started")
                    return
                attempt = await self._run_once()
                health_restart, self._health_restart = self._health_restart, False
                watchdog, self.watchdog_fired = self.watchdog_fired, False
                decision = policy.decide(attempt.exit, attempt.error, attempt.ran_for,
                                         stop_requested=self._stop_requested,
                                         health_restart=health_restart)
                if not decision.restart:
                    final = State(decision.state)
                    if final == State.COMPLETED and not self._stop_requested:
                        self.say("completed")
                    elif final == State.FAILED and decision.reason.startswith("gave up"):
                        self.last_error = decision.reason
                        self.say(self.last_error, "error")
                    self._set_state(final, decision.reason)
                    return
                self._set_state(State.BACKOFF, decision.reason)
                self.say(f"restarting in {decision.delay:g}s")
                if not await self._pause(decision.delay):
                    self._set_state(State.STOPPED, "stopped while backing off")
                    return
                self.restarts += 1
                self.trigger = "watchdog" if watchdog else "health" if health_restart else "restart"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not take PID 1 down with it
            self.last_error = f"internal error: {exc!r}"
            self.say(self.last_error, "error")
            if self.state not in TERMINAL:
                self.state = State.FAILED
                self._notify()

    async def _wait_dependencies(self) -> bool:
        return await wait_dependencies(self)

    def _fail_start(self, message: str) -> bool:
        self.last_error = message
        self.say(message, "error")
        self._set_state(State.FAILED, message)
        return False

    async def _pause(self, seconds: float) -> bool:
        """Sleep, unless a stop is requested first: True when the full time passed."""
        if self._stop_requested:
            return False
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            return not self._stop_requested
        return False

    async def _run_once(self) -> Attempt:
        """One run, recorded in the history whatever its end."""
        run = self.current_run = Run(self.name, self.trigger, time.time(),
                                     planned=self.job.planned if self.job else None)
        self.rt.on_run(run, False)
        exit_before = self.last_exit
        try:
            attempt = await self._attempt()
        finally:
            self.current_run = None
        job = self.job
        # Not ready in time or killed by its watchdog: a failed run with no exit in the
        # Attempt, but the process did run and exit.
        ran = self.last_exit if self.last_exit is not exit_before else None
        run.finish(attempt.exit or ran, attempt.error, stopped=self._stop_requested,
                   timed_out=bool(job and job.timed_out), replaced=bool(job and job.replacing),
                   watchdog=self.watchdog_fired)
        self.rt.on_run(run, True)
        return attempt

    async def _attempt(self) -> Attempt:
        spec, rt = self.spec, self.rt
        if spec.pre_script:
            status, _ = await run_hook(self, (spec.pre_script,),
                                       rt.timeouts.pre_script_timeout, "pre_script")
            if self._stop_requested:
                return Attempt(error="stopped during pre_script")
            if status is None or not status.success:
                what = "timed out" if status is None else status.describe()
                self.last_error = f"pre_script {spec.pre_script} failed ({what}): not started"
                self.say(self.last_error, "error")
                return Attempt(error=self.last_error)
        if spec.port is not None:
            holder = ports.taken_by(spec.port)
            if holder is not None:
                self.last_error = f"cannot start: port {spec.port} is already in use by {holder}"
                self.say(self.last_error, "error")
                return Attempt(error=self.last_error)
        try:
            identity = resolve_identity(spec.user, spec.group)
            env = child_environment({**rt.environ, **spec.environment()}, identity)
            setup = readiness.prepare(self, env)
            child = rt.spawn(spec.argv, outputs=rt.outputs_for(self), label=self.name, env=env,
                             cwd=spec.directory, identity=identity, tty=spec.tty,
                             **setup.spawn_kwargs)
        except SpawnError as exc:
            readiness.abandon(setup if "setup" in locals() else None)
            # Exec failures and exhausted resources (no PTY, no fd, fork refused) alike:
            # a failed start, in the log and the history; the restart policy decides.
            self.last_error = f"cannot start: {exc.message}"
            self.say(self.last_error, "error")
            return Attempt(error=self.last_error)
        self._child = child
        if self.job is not None:
            self.job.spawned(child)
        self.started_at = time.time()
        began = rt.clock()
        monitor = None
        self.say(f"started (pid {child.pid})")
        watch = readiness.watch(self, child, setup)   # ready protocol, ready_timeout, watchdog
        if spec.healthcheck:
            self.started_once = self.protocol_ready   # "started": up (and ready, if it says so)
            self._set_health("starting")
            monitor = rt.loop.create_task(self._monitor_health(child))
        elif spec.ready is None:
            self._set_state(State.RUNNING, f"pid {child.pid}")
        exit_status = await child.finished()
        if monitor is not None:
            monitor.cancel()
        failed_start = readiness.finish(self, watch)
        self.last_exit = exit_status
        ran_for = rt.clock() - began
        if not (spec.oneshot and exit_status.success) and not self._stop_requested:
            self.say(f"exited ({exit_status.describe()}) after {ran_for:.1f}s",
                     "info" if exit_status.success else "warning")
        if spec.healthcheck and self.health != "-":
            self._set_health("-")
        if spec.post_script:
            await run_hook(self, (spec.post_script,), rt.timeouts.post_script_timeout,
                           "post_script")
        # A failed start counts as one whatever the exit status the stop signal produced.
        return Attempt(exit=None if failed_start else exit_status, ran_for=ran_for,
                       error=failed_start)

    # -- health -----------------------------------------------------------------------

    async def _run_exec_probe(self, argv: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
        status, text = await run_hook(self, argv, timeout, "healthcheck", capture=True)
        return (status.shell_status if status else None), text

    def _monitor_health(self, child: Child):
        from entrypoint.core import health     # only a service with a healthcheck needs it

        return health.monitor(self, child)

    # -- reporting --------------------------------------------------------------------

    def snapshot(self) -> dict:
        """What `list --json`, `status`, the events and the HTTP face show of it."""
        return snapshot(self)
