"""One service: its state machine, its run loop (deps, hooks, spawn, health, restart).

Every state change goes through `_set_state`, which checks the transition table,
timestamps it, keeps a short history and tells the supervisor. The run loop is one
asyncio task per start; `stop()` asks it to end and waits for it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from entrypoint.core import health
from entrypoint.core.drain import Drain
from entrypoint.output.printer import Printer
from entrypoint.output.stream import StreamOutput
from entrypoint.core.reaper import ExitStatus, Reaper
from entrypoint.core.spawn import SpawnError, child_environment, resolve_identity, spawn
from entrypoint.config.spec import ServiceSpec, Timeouts
from entrypoint.core.state import ALLOWED, TERMINAL, S, State, TransitionError

DRAIN_GRACE = 1.0   # after the exit, how long to wait for a descendant holding its output open


@dataclass
class Runtime:
    """What a service needs from the supervisor around it."""

    loop: asyncio.AbstractEventLoop
    reaper: Reaper
    printer: Printer
    timeouts: Timeouts
    lookup: Callable[[str], "Service"]
    on_change: Callable[["Service"], None]
    outputs_for: Callable[["Service"], dict[str, StreamOutput]]
    hook_output_for: Callable[["Service"], StreamOutput]
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))


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
        self.pid: int | None = None
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
        self._hook: tuple[int, str] | None = None    # (pid, "pre_script" | "post_script")
        self._exit_future: asyncio.Future[ExitStatus] | None = None

    # -- state ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    def _set_state(self, new: State, reason: str = "") -> None:
        if new == self.state:
            return
        if new not in ALLOWED[self.state]:
            raise TransitionError(f"{self.name}: {self.state.value} -> {new.value} is not allowed")
        self.state = new
        self.history.append((time.time(), new.value, reason))
        if new == State.RUNNING:
            self.started_once = True
        if new == State.COMPLETED:
            self.completed_once = True
        self._notify()

    def _set_health(self, value: str) -> None:
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

    # -- control ----------------------------------------------------------------------

    def start(self) -> asyncio.Task:
        """Begin a run (waiting for dependencies first); a no-op if one is under way."""
        if self.active:
            return self._task
        if self.state != State.PENDING:
            self._set_state(State.PENDING, "start requested")
        self._stop_requested = False
        self.started_once = self.completed_once = False
        self._wake = asyncio.Event()
        self._task = self.rt.loop.create_task(self._run(), name=f"service {self.name}")
        return self._task

    async def stop(self, reason: str = "stop requested") -> None:
        """Stop the service (stop signal, SIGKILL after its timeout) and its hooks."""
        self._stop_requested = True
        self._wake.set()
        if self.pid is not None and self._exit_future is not None:
            await self._terminate(reason)
        if self._hook is not None and self._hook[1] == "pre_script":
            self._signal_group(self._hook[0], signal.SIGKILL)   # a post_script may finish
        if self._task is not None:
            await asyncio.shield(self._task)
        if self.state == State.PENDING:
            self._set_state(State.STOPPED, reason)

    def kill(self) -> None:
        """SIGKILL everything of this service now (a forced shutdown)."""
        self._stop_requested = True
        self._wake.set()
        for pid in (self.pid, self._hook[0] if self._hook else None):
            if pid is not None:
                self._signal_group(pid, signal.SIGKILL)

    async def _terminate(self, reason: str) -> None:
        pid, exit_future = self.pid, self._exit_future
        if pid is None or exit_future is None or exit_future.done():
            return
        if self.state in (S.RUNNING, S.STARTING):
            self._set_state(State.STOPPING, reason)
        sig = getattr(signal, "SIG" + self.spec.stop_signal)
        self._signal_group(pid, sig)
        timeout = self.rt.timeouts.service_shutdown_timeout
        try:
            await asyncio.wait_for(asyncio.shield(exit_future), timeout)
        except asyncio.TimeoutError:
            self.say(f"did not stop within {timeout:g}s of SIG{self.spec.stop_signal}; "
                     f"sending SIGKILL", "warning")
            self._signal_group(pid, signal.SIGKILL)
            await asyncio.shield(exit_future)

    @staticmethod
    def _signal_group(pid: int, sig: int) -> None:
        # Services lead their own session and group: signal the group, children included.
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        except PermissionError:
            pass

    # -- the run loop -----------------------------------------------------------------

    async def _run(self) -> None:
        try:
            if not await self._wait_dependencies():
                return
            delay = self.spec.restart_delay
            quick_failures = 0
            while True:
                self._set_state(State.STARTING)
                if self.spec.wait_after and not await self._pause(self.spec.wait_after):
                    self._set_state(State.STOPPED, "stopped before it started")
                    return
                attempt = await self._run_once()
                if self._finish(attempt):
                    return
                if attempt.ran_for >= self.spec.stable_after:
                    quick_failures, delay = 0, self.spec.restart_delay   # it had settled
                else:
                    quick_failures += 1
                if quick_failures >= self.spec.restart_limit:
                    self.last_error = (f"gave up after {quick_failures} quick failures in a row "
                                       f"(each ran less than {self.spec.stable_after:g}s)")
                    self.say(self.last_error, "error")
                    self._set_state(State.FAILED, self.last_error)
                    return
                self._set_state(State.BACKOFF, f"restarting in {delay:g}s")
                self.say(f"restarting in {delay:g}s")
                if not await self._pause(delay):
                    self._set_state(State.STOPPED, "stopped while backing off")
                    return
                delay = min(delay * 2, self.spec.restart_delay_max)
                self.restarts += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not take PID 1 down with it
            self.last_error = f"internal error: {exc!r}"
            self.say(self.last_error, "error")
            if self.state not in TERMINAL:
                self.state = State.FAILED
                self._notify()

    def _finish(self, attempt: Attempt) -> bool:
        """Settle the state after one run; True when the run loop should end."""
        exit_status = attempt.exit
        success = exit_status is not None and exit_status.success
        health_restart, self._health_restart = self._health_restart, False
        if self._stop_requested:
            final = State.COMPLETED if self.spec.oneshot and success else State.STOPPED
            self._set_state(final, "stopped")
            return True
        if self.spec.oneshot and success:
            self.say("completed")
            self._set_state(State.COMPLETED, "exited 0")
            return True
        if success and self.spec.restart != "always" and not health_restart:
            self._set_state(State.STOPPED, "exited 0")
            return True
        if self.spec.restart == "no" and not health_restart:
            self._set_state(State.FAILED, attempt.error or exit_status.describe())
            return True
        return False

    async def _wait_dependencies(self) -> bool:
        deps = self.spec.depends_on
        if not deps:
            return True
        timeout = self.rt.timeouts.dependency_wait_timeout
        deadline = self.rt.loop.time() + timeout
        announced = False
        while True:
            waiting = []
            for dep_name, cond in deps:
                dep = self.rt.lookup(dep_name)
                held = dep.condition(cond)
                if held is False:
                    return self._fail_start(f'dependency "{dep_name}" will not become {cond} '
                                            f"(it is {dep.state.value})")
                if held is None:
                    waiting.append((dep, cond))
            if not waiting:
                return True
            if self._stop_requested:
                self._set_state(State.STOPPED, "stopped while waiting for dependencies")
                return False
            remaining = deadline - self.rt.loop.time()
            if remaining <= 0:
                names = ", ".join(f'"{d.name}" ({c})' for d, c in waiting)
                return self._fail_start(f"dependencies not ready after {timeout:g}s "
                                        f"(dependency_wait_timeout): {names}")
            if not announced:
                names = ", ".join(f"{d.name} ({c})" for d, c in waiting)
                self.say(f"waiting for {names}")
                announced = True
            waits = [asyncio.ensure_future(d.changed()) for d, _ in waiting]
            waits.append(asyncio.ensure_future(self._wake.wait()))
            try:
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

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
        spec = self.spec
        if spec.pre_script:
            status, _ = await self.run_hook((spec.pre_script,),
                                            self.rt.timeouts.pre_script_timeout, "pre_script")
            if self._stop_requested:
                return Attempt(error="stopped during pre_script")
            if status is None or not status.success:
                what = "timed out" if status is None else status.describe()
                self.last_error = f"pre_script {spec.pre_script} failed ({what}): not started"
                self.say(self.last_error, "error")
                return Attempt(error=self.last_error)
        try:
            identity = resolve_identity(spec.user, spec.group)
            env = child_environment({**self.rt.environ, **spec.environment()}, identity)
            child = spawn(spec.argv, env=env, cwd=spec.directory, identity=identity, tty=spec.tty)
        except SpawnError as exc:
            self.last_error = f"cannot start: {exc.message}"
            self.say(self.last_error, "error")
            return Attempt(error=self.last_error)
        self._exit_future = self.rt.reaper.wait(child.pid)   # same callback as the spawn
        self.pid = child.pid
        self.started_at = time.time()
        began = self.rt.loop.time()
        drain = Drain(self.rt.loop, child.fds, self.rt.outputs_for(self))
        monitor = None
        self.say(f"started (pid {child.pid})")
        if spec.healthcheck:
            self.started_once = True            # "started": the process is up
            self._set_health("starting")
            monitor = self.rt.loop.create_task(self._monitor_health())
        else:
            self._set_state(State.RUNNING, f"pid {child.pid}")
        exit_status = await self._exit_future
        child.mark_reaped(exit_status.shell_status)
        try:
            await asyncio.wait_for(asyncio.shield(drain.done), DRAIN_GRACE)
        except asyncio.TimeoutError:
            drain.close()   # a descendant still holds the terminal: keep what we have
        if monitor is not None:
            monitor.cancel()
        self.pid = None
        self._exit_future = None
        self.last_exit = exit_status
        ran_for = self.rt.loop.time() - began
        if not (self.spec.oneshot and exit_status.success) and not self._stop_requested:
            self.say(f"exited ({exit_status.describe()}) after {ran_for:.1f}s",
                     "info" if exit_status.success else "warning")
        if spec.healthcheck and self.health != "-":
            self._set_health("-")
        if spec.post_script:
            await self.run_hook((spec.post_script,), self.rt.timeouts.post_script_timeout,
                                "post_script")
        return Attempt(exit=exit_status, ran_for=ran_for)

    # -- children other than the service itself ---------------------------------------

    async def run_hook(self, argv: tuple[str, ...], timeout: float, what: str,
                       capture: bool = False) -> tuple[ExitStatus | None, str]:
        """Run a pre/post script (or exec health probe) as the service would run.

        Its output goes to the service's log, or is returned when `capture`. The status is
        None when the hook was killed for taking longer than `timeout`.
        """
        spec = self.spec
        try:
            identity = resolve_identity(spec.user, spec.group)
            env = child_environment({**self.rt.environ, **spec.environment()}, identity)
            child = spawn(argv, env=env, cwd=spec.directory, identity=identity, tty=False,
                          merge_stderr=True)
        except SpawnError as exc:
            self.say(f"{what}: {exc.message}", "error")
            return ExitStatus(127), exc.message
        exit_future = self.rt.reaper.wait(child.pid)
        if capture:
            output = _Capture()
        else:
            output = self.rt.hook_output_for(self)
        drain = Drain(self.rt.loop, child.fds, {"stdout": output})
        if not capture:
            self._hook = (child.pid, what)
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(exit_future), timeout)
        except asyncio.TimeoutError:
            timed_out = True
            self.say(f"{what} {argv[0]} took longer than {timeout:g}s; killed", "warning")
            self._signal_group(child.pid, signal.SIGKILL)
        status = await exit_future
        child.mark_reaped(status.shell_status)
        if not capture:
            self._hook = None
        try:
            await asyncio.wait_for(asyncio.shield(drain.done), DRAIN_GRACE)
        except asyncio.TimeoutError:
            drain.close()
        text = output.text() if capture else ""
        return (None if timed_out else status), text

    async def _run_exec_probe(self, argv: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
        status, text = await self.run_hook(argv, timeout, "healthcheck", capture=True)
        return (status.shell_status if status else None), text

    async def _monitor_health(self) -> None:
        check = self.spec.healthcheck
        if check.kind == "http" and str(check.target).lower().startswith("https:"):
            enable_asyncio_tls()
        began = self.rt.loop.time()
        failures = 0
        passed = False      # a success ends this run's start period early, as in Docker
        while True:
            ok, said = await health.probe(check, self._run_exec_probe)
            self.last_check = (time.time(), ok, said)
            if ok:
                failures, passed = 0, True
                if self.health != "healthy":
                    self.say("healthy")
                    self._set_health("healthy")
                if self.state == State.STARTING:
                    self._set_state(State.RUNNING, "healthy")
            elif passed or self.rt.loop.time() - began >= check.start_period:
                failures += 1
                if failures >= check.retries and self.health != "unhealthy":
                    restart = check.on_unhealthy == "restart"   # say why the stop comes
                    self.say(f"unhealthy after {failures} failed checks: {said}"
                             + ('; restarting it (on_unhealthy = "restart")' if restart else ""),
                             "warning")
                    self._set_health("unhealthy")
                    if self.state == State.STARTING:
                        self._set_state(State.RUNNING, "unhealthy")
                    if check.on_unhealthy == "restart":
                        self._health_restart = True
                        self.rt.loop.create_task(self._terminate("unhealthy: restarting"))
                        return
            await asyncio.sleep(check.interval)

    # -- reporting --------------------------------------------------------------------

    def snapshot(self) -> dict:
        uptime = None
        if self.pid is not None and self.started_at is not None:
            uptime = max(0.0, time.time() - self.started_at)
        last_exit = None
        if self.last_exit is not None:
            last_exit = {"code": self.last_exit.code, "signal": self.last_exit.signal,
                         "status": self.last_exit.shell_status,
                         "text": self.last_exit.describe()}
        check = None
        if self.last_check is not None:
            check = {"at": self.last_check[0], "ok": self.last_check[1], "output": self.last_check[2]}
        return {
            "name": self.name, "state": self.state.value, "health": self.health,
            "pid": self.pid, "uptime": uptime, "restarts": self.restarts,
            "exit": last_exit, "error": self.last_error,
            "oneshot": self.spec.oneshot, "enabled": self.spec.enabled,
            "required": self.spec.required,
            "command": list(self.spec.argv), "user": self.spec.user,
            "history": [{"at": t, "state": s, "reason": r} for t, s, r in self.history],
            "last_check": check,
        }


def enable_asyncio_tls() -> None:
    """Give asyncio back the ssl module that the runner kept from it (cli.py,
    `isolate.import_asyncio_without_ssl`): needed before the first https health probe."""
    import importlib
    import sys

    import ssl

    for name in ("asyncio.base_events", "asyncio.selector_events"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "ssl", ssl) is None:
            module.ssl = ssl
    sslproto = sys.modules.get("asyncio.sslproto")
    if sslproto is not None and getattr(sslproto, "ssl", ssl) is None:
        importlib.reload(sslproto)  # it defines TLS names only when ssl imported; callers
                                    # look its classes up as sslproto.X at each use


class _Capture:
    """A StreamOutput stand-in that keeps an exec probe's output instead of printing it."""

    has_partial = False

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def feed(self, data: bytes) -> None:
        if sum(map(len, self._chunks)) < 65536:
            self._chunks.append(data)

    def flush_partial(self) -> None:
        pass

    def close(self) -> None:
        pass

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")
