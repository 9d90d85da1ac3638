"""A service's ready protocol and watchdog, for one run (CONTRACT §12).

`ready = "notify"`: READY=1 on the notify socket (core/notify.py). `ready = "fd:N"`: a
newline written on fd N (s6's notification-fd). `ready = "log:REGEX"`: a line of its output
matches. Until then the service stays STARTING, so dependents and the CMD wait; not ready
within `ready_timeout` is a failed start. `watchdog`: no WATCHDOG=1 within a period kills
the service; its restart policy decides what follows, with "watchdog" as the trigger.

The service's run loop calls, in order: `prepare` (environment and fds, before the spawn),
`watch` (after it), `finish` (after the exit). `on_notify` is called for each datagram.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
from dataclasses import dataclass, field

from entrypoint.core.state import State


@dataclass
class Setup:
    """What a run needs from its ready protocol: extra fds for the spawn, and our ends."""

    spawn_kwargs: dict = field(default_factory=dict)
    read_fd: int | None = None          # fd:N: our end of the notification pipe


@dataclass
class Watch:
    tasks: list = field(default_factory=list)
    read_fd: int | None = None
    outputs: list = field(default_factory=list)
    failed_start: str = ""


def prepare(service, env: dict[str, str]) -> Setup:
    """Set the notify variables in `env`; for fd:N, make the pipe the service writes to."""
    spec = service.spec
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(key, None)      # never the runner's own socket (systemd's, podman's)
    setup = Setup()
    path = service.rt.notify_path() if spec.wants_notify else None
    if path:
        env["NOTIFY_SOCKET"] = path
    if spec.watchdog is not None:
        env["WATCHDOG_USEC"] = str(int(spec.watchdog * 1_000_000))
    service.ready_signal = asyncio.Event()
    if spec.ready and spec.ready.startswith("fd:"):
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        target = int(spec.ready[3:])
        if write_fd == target:     # dup2(fd, fd) would leave it close-on-exec
            moved = fcntl.fcntl(write_fd, fcntl.F_DUPFD_CLOEXEC, target + 1)
            os.close(write_fd)
            write_fd = moved
        os.set_blocking(write_fd, True)     # the service's end behaves like any fd
        setup.read_fd = read_fd
        setup.spawn_kwargs["extra_fds"] = {target: write_fd}
    return setup


def abandon(setup: Setup | None) -> None:
    """The spawn failed: close what `prepare` opened."""
    if setup is None:
        return
    for fd in (setup.read_fd, *setup.spawn_kwargs.get("extra_fds", {}).values()):
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def watch(service, child, setup: Setup) -> Watch:
    """Start listening for readiness (and the watchdog) of this run of `service`."""
    spec, loop = service.spec, service.rt.loop
    w = Watch(read_fd=setup.read_fd)
    for fd in setup.spawn_kwargs.get("extra_fds", {}).values():
        os.close(fd)        # the child has its copy; ours would hide the end of the pipe
    if spec.ready is None:
        service.ready_signal.set()
    else:
        timeout = spec.ready_timeout or service.rt.timeouts.dependency_wait_timeout
        w.tasks.append(loop.create_task(_await_ready(service, child, timeout, w)))
        if w.read_fd is not None:
            loop.add_reader(w.read_fd, _read_notification_fd, service, w)
        if spec.ready.startswith("log:"):
            pattern = re.compile(spec.ready[4:])
            for output in service.rt.outputs_for(service).values():
                output.tap = _line_matcher(service, pattern)
                w.outputs.append(output)
    if spec.watchdog is not None:
        w.tasks.append(loop.create_task(_watchdog(service, child, spec.watchdog)))
    return w


def finish(service, w: Watch) -> str:
    """The run ended: stop listening. Returns why the run failed whatever its exit status
    (not ready in time, or killed by its watchdog: a service that exits 0 on the signal
    did not succeed), else ""."""
    for task in w.tasks:
        task.cancel()
    _stop_reading(service, w)
    for output in w.outputs:
        output.tap = None
    service.notify.clear_run()
    if service.watchdog_fired and not w.failed_start:
        return service.last_error
    return w.failed_start


def on_notify(service, said: set[str]) -> None:
    """React to the keys of one datagram: READY, STOPPING, RELOADING, ERRNO, WATCHDOG=trigger."""
    if "READY" in said and not service.ready_signal.is_set():
        service.ready_signal.set()
    if "STOPPING" in said:
        service.say("is stopping (STOPPING=1)")
    if "RELOADING" in said:
        service.say("is reloading (RELOADING=1)")
    if "ERRNO" in said:
        code = service.notify.errno
        service.say(f"reported an error: ERRNO={code} ({os.strerror(code)})", "warning")
    if "WATCHDOG_TRIGGER" in said and service._child is not None:
        _fire_watchdog(service, service._child, "it asked for it (WATCHDOG=trigger)")


async def _await_ready(service, child, timeout: float, w: Watch) -> None:
    try:
        await asyncio.wait_for(service.ready_signal.wait(), timeout)
    except asyncio.TimeoutError:
        if child.reaped or service.stop_requested:
            return
        w.failed_start = (f"not ready after {timeout:g}s (ready_timeout): no "
                          + _expected(service.spec.ready))
        service.last_error = w.failed_start
        service.say(f"{w.failed_start}; stopping it", "error")
        await service._terminate(child, "not ready in time")
        return
    how = _expected(service.spec.ready)
    _stop_reading(service, w)
    for output in w.outputs:
        output.tap = None
    service.started_once = True
    service.say(f"ready ({how})")
    if service.state == State.STARTING and (not service.spec.healthcheck
                                            or service.health == "healthy"):
        service._set_state(State.RUNNING, f"ready ({how})")
    else:
        service._notify()       # "started" now holds: dependents may go on


def _expected(ready: str) -> str:
    if ready == "notify":
        return "READY=1"
    if ready.startswith("fd:"):
        return f"newline on fd {ready[3:]}"
    return f"line matching {ready[4:]!r}"


def _read_notification_fd(service, w: Watch) -> None:
    try:
        data = os.read(w.read_fd, 4096)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if b"\n" in data:
        service.ready_signal.set()
    if not data or b"\n" in data:
        _stop_reading(service, w)      # s6: one newline is all; EOF: it will never say


def _stop_reading(service, w: Watch) -> None:
    if w.read_fd is not None:
        service.rt.loop.remove_reader(w.read_fd)
        os.close(w.read_fd)
        w.read_fd = None


def _line_matcher(service, pattern: re.Pattern):
    def tap(block: bytes) -> None:
        if service.ready_signal.is_set():
            return
        for line in block.decode("utf-8", "replace").splitlines():
            if pattern.search(line):
                service.ready_signal.set()
                return
    return tap


async def _watchdog(service, child, period: float) -> None:
    """Kill the service when a period passes with no WATCHDOG=1, counted from when it is
    ready (as systemd does: a slow start is ready_timeout's business)."""
    await service.ready_signal.wait()
    clock = service.rt.clock
    since = clock()
    while not child.reaped:
        last = service.notify.last_watchdog
        if last is not None and last > since:
            since = last
        left = since + period - clock()
        if left <= 0:
            _fire_watchdog(service, child, f"no WATCHDOG=1 within {period:g}s")
            return
        await asyncio.sleep(left)


def _fire_watchdog(service, child, why: str) -> None:
    if child.reaped or child.stopping or service.stop_requested:
        return
    service.watchdog_fired = True
    service.last_error = f"watchdog: {why}"
    for listener in service.rt.notify_listeners:    # e.g. a "watchdog" alert
        listener(service, {"WATCHDOG_FIRED"})
    service.say(f"watchdog: {why}; killing it (SIGABRT, then SIGKILL)", "error")
    # SIGABRT as systemd does, so a core dump can show where it hung; SIGKILL soon after.
    service.rt.loop.create_task(child.stop(6, min(5.0, service.rt.timeouts.service_shutdown_timeout)))
