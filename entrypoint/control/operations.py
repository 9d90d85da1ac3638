"""Every control operation, once: the socket server calls these, and the HTTP API will too.

`Operations.call(op, args)` checks the arguments of a request and runs the operation; it
returns a JSON-able result or raises `OperationError` (a code, a message for people, and
details). Nothing here knows about sockets, lines or HTTP.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable

from entrypoint import __version__
from entrypoint.config.graph import did_you_mean
from entrypoint.control.events import CONDITIONS, EventHub, wait_for
from entrypoint.control.resources import ResourceMeter

WEB_SERVICE = "entrypoint-web"      # config/web.py's name (not imported: it needs pydantic)
from entrypoint.output.ring import LogRing
from entrypoint.core.order import stop_in_order
from entrypoint.core.service import Service
from entrypoint.core.state import State
from entrypoint.control import runtime_state

MAX_LOG_LINES = 100_000
# start/restart: a service must still be RUNNING this long after it got there to count as
# started (supervisord's `startsecs`), so that a crash right after the exec is reported.
SETTLE = 1.0
OPERATIONS = ("list", "status", "start", "stop", "restart", "logs", "shutdown", "health",
              "reload", "exec_spec", "version", "events", "wait", "config", "history",
              "enable", "disable")
MAX_HISTORY = 10_000


class OperationError(Exception):
    """An operation failed: `code` for programs, `message` for people, `details` for both."""

    def __init__(self, code: str, message: str, **details: Any):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


class LogIndex:
    """Fans every ring's new blocks out to `logs -f` followers, including the rings of
    services that a reload adds later; merges `logs` tails in arrival order."""

    def __init__(self) -> None:
        self._attached: dict[str, LogRing] = {}
        self._followers: list[tuple[frozenset[str] | None, Callable[[str, bytes], None]]] = []

    def attach_all(self, rings: dict[str, LogRing]) -> None:
        for name, ring in rings.items():
            self.ensure(name, ring)

    def ensure(self, name: str, ring: LogRing | None) -> None:
        if ring is not None and self._attached.get(name) is not ring:
            self.attach(name, ring)

    def attach(self, name: str, ring: LogRing) -> None:
        self._attached[name] = ring
        ring.subscribe(lambda block, name=name, ring=ring: self._on_block(name, ring, block))

    def forget(self, name: str) -> None:
        self._attached.pop(name, None)

    def _on_block(self, name: str, ring: LogRing, block: bytes) -> None:
        if self._attached.get(name) is not ring:
            return      # a ring that a reload dropped
        for names, callback in list(self._followers):
            if names is None or name in names:
                try:
                    callback(name, block)
                except Exception:
                    self._drop((names, callback))

    @staticmethod
    def tail(rings: dict[str, LogRing], names: list[str], n: int) -> list[tuple[str, str]]:
        """The last `n` lines of `names`, merged in arrival order, as (service, line)."""
        entries = [(key, name, line) for name in names for key, line in rings[name].tail_stamped(n)]
        entries.sort(key=lambda entry: entry[0])
        return [(name, line) for _, name, line in entries[-n:]] if n else []

    def follow(self, names: list[str] | None,
               callback: Callable[[str, bytes], None]) -> Callable[[], None]:
        """Call `callback(service, block)` for every new block; returns the unsubscribe."""
        entry = (frozenset(names) if names else None, callback)
        self._followers.append(entry)
        return lambda: self._drop(entry)

    def _drop(self, entry) -> None:
        if entry in self._followers:
            self._followers.remove(entry)


class Operations:
    """The control operations over one running `Supervisor`."""

    def __init__(self, supervisor, reloader=None):
        self.sup = supervisor
        self.reloader = reloader
        self.index = LogIndex()
        self.settle = SETTLE
        self.events = EventHub(supervisor)      # fed by the supervisor's change listeners
        self.meter = ResourceMeter()

    # -- the one entry point for transports ---------------------------------------------

    async def call(self, op: Any, args: Any, origin: str = "") -> Any:
        """Run operation `op` with the request's `args` (a dict); OperationError on failure.

        `origin` says who asked and how (`root (uid 0) via control socket`): actions that
        change a service say it in the runner's log, as a shutdown says its signal.
        """
        if not isinstance(args, dict):
            raise OperationError("bad_request", '"args" must be an object')
        if op == "list":
            return self.list()
        if op == "status":
            return self.status(_names(args))
        if op in ("enable", "disable"):
            names = _names(args)
            if not names:
                raise OperationError("usage", f"{op}: name at least one service")
            return await self.set_enabled(names, op == "enable", origin)
        if op in ("start", "stop", "restart"):
            names = _names(args)
            if not names:
                raise OperationError("usage", f"{op}: name at least one service")
            return await getattr(self, op)(names, origin)
        if op == "logs":
            return self.logs(_names(args), _lines(args))
        if op == "shutdown":
            return self.shutdown()
        if op == "health":
            return self.health()
        if op == "reload":
            return await self.reload(origin)
        if op == "exec_spec":
            name = args.get("name")
            if not isinstance(name, str):
                raise OperationError("bad_request", '"args.name" must be a service name')
            return self.exec_spec(name)
        if op == "version":
            return {"version": __version__, "protocol": 1}
        if op == "events":      # the snapshot; the stream is the server's (like `logs -f`)
            names = _names(args)
            self.services(names)
            return {"services": self.events.snapshot(names)}
        if op == "config":
            from entrypoint.control.config_view import config_view
            return config_view(self.sup.config)
        if op == "wait":
            return await self.wait(_names(args), args.get("for"), args.get("timeout"))
        if op == "history":
            return self.history(_names(args), _lines(args, default=20, limit=MAX_HISTORY))
        known = ", ".join(OPERATIONS)
        raise OperationError("unknown_operation", f"unknown operation {op!r}; known: {known}")

    # -- queries ------------------------------------------------------------------------

    def services(self, names: list[str]) -> list[Service]:
        """The services called `names` (all when empty); OperationError if one is unknown."""
        known = self.sup.services
        # A replicated service's own name means all of its replicas (CONTRACT §13): they
        # are NAME.i, and only replicas have a dot in their name.
        names = [r for n in names for r in ([n] if n in known else
                 [k for k in known if k.rpartition(".")[0] == n] or [n])]
        unknown = [n for n in dict.fromkeys(names) if n not in known]
        if unknown:
            hints = [did_you_mean(n, known) for n in unknown]
            shown = ", ".join(f'"{n}"' + (f" ({h})" if h else "") for n, h in zip(unknown, hints))
            noun = "service" if len(unknown) == 1 else "services"
            raise OperationError(
                "unknown_service",
                f"unknown {noun} {shown}; known services: {', '.join(known) or '(none)'}",
                unknown=unknown, known=list(known))
        return [known[n] for n in dict.fromkeys(names)] if names else list(known.values())

    def runner(self) -> dict:
        sup = self.sup
        return {"pid": os.getpid(), "uid": os.geteuid(), "version": __version__,
                "config": sup.config.source, "started_at": sup.started_at,
                "uptime": time.time() - sup.started_at, "shutting_down": sup.shutting_down,
                "cmd": sup.cmd, "cmd_pid": sup.cmd_pid,
                # stdout: bytes waiting for a slow reader, lines it never got
                "stdout_waiting": sup.printer.writer.queued, "stdout_dropped": sup.printer.dropped,
                # datagrams on the notify socket: received, accepted, refused (and why)
                "notify": dict(sup.notify_socket.counters) if sup.notify_socket else None}

    def list(self) -> dict:
        snapshots = self.meter.annotate(self.sup.snapshot())
        for snap in snapshots:
            ring = self.sup.rings.get(snap["name"])
            snap["log_lines_total"] = ring.total if ring is not None else 0
        return {"services": snapshots, "runner": self.runner()}

    def status(self, names: list[str]) -> dict:
        result = []
        for service in self.services(names):
            spec = service.spec
            snap = service.snapshot()
            snap.update({
                "group": spec.group, "directory": spec.directory, "restart": spec.restart,
                "depends_on": [[d, c] for d, c in spec.depends_on], "tty": spec.tty,
                "healthcheck": None if spec.healthcheck is None else {
                    "kind": spec.healthcheck.kind, "target": spec.healthcheck.target,
                    "interval": spec.healthcheck.interval, "retries": spec.healthcheck.retries},
                "log_lines": len(self.sup.rings[service.name]) if service.name in self.sup.rings else 0,
            })
            result.append(snap)
        return {"services": self.meter.annotate(result), "runner": self.runner()}

    async def wait(self, names: list[str], condition, timeout) -> dict:
        """`wait NAME... --for C --timeout S`: OperationError("failed") naming the culprit."""
        if not names:
            raise OperationError("usage", "wait: name at least one service")
        if condition is not None and condition not in CONDITIONS:
            raise OperationError("bad_request", f'"args.for" must be one of {", ".join(CONDITIONS)}')
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or timeout < 0):
            raise OperationError("bad_request", '"args.timeout" must be a number of seconds')
        services = self.services(names)
        result = await wait_for(services, condition, timeout)
        if not result["ok"]:
            raise OperationError("failed", result["error"], service=result["service"])
        return {"services": [self._result(s, True) for s in services]}

    def health(self) -> dict:
        """Healthy: enabled long-running services RUNNING and healthy, oneshots COMPLETED."""
        problems = []
        if self.sup.shutting_down:
            problems.append("the runner is shutting down")
        for service in self.sup.services.values():
            spec = service.spec
            if not spec.enabled or spec.name == WEB_SERVICE:   # the HTTP face is not the app
                continue
            if spec.job is not None:
                if service.state not in (State.SCHEDULED, State.STARTING, State.RUNNING,
                                         State.STOPPING):
                    problems.append(f"{service.name}: {service.state.value} (a job)")
            elif spec.oneshot:
                if service.state != State.COMPLETED:
                    problems.append(f"{service.name}: {service.state.value} "
                                    f"(a oneshot, not COMPLETED)")
            elif service.state != State.RUNNING:
                problems.append(f"{service.name}: {service.state.value}")
            elif spec.healthcheck and service.health != "healthy":
                problems.append(f"{service.name}: RUNNING but {service.health}")
        return {"healthy": not problems, "problems": problems}

    def logs(self, names: list[str], n: int) -> dict:
        services = self.services(names)
        self.index.attach_all(self.sup.rings)
        wanted = [s.name for s in services if s.name in self.sup.rings]
        lines = self.index.tail(self.sup.rings, wanted, n)
        return {"lines": [{"service": s, "line": line} for s, line in lines],
                "services": [s.name for s in services]}

    def follow(self, names: list[str], callback: Callable[[str, bytes], None]) -> Callable[[], None]:
        """`logs -f`: checks the names, then calls back with every new block."""
        self.services(names)
        self.index.attach_all(self.sup.rings)
        return self.index.follow(names or None, callback)

    def history(self, names: list[str], n: int) -> dict:
        return runtime_state.history(self, names, n)

    def exec_spec(self, name: str) -> dict:
        """What `entrypoint exec NAME -- CMD` needs to run CMD as the service would run."""
        from entrypoint.core.spawn import SpawnError, child_environment, resolve_identity

        service = self.services([name])[0]
        spec = service.spec
        try:
            identity = resolve_identity(spec.user, spec.group)
        except SpawnError as exc:
            raise OperationError("failed", f"{name}: {exc.message}") from None
        env = child_environment({**self.sup.environ, **spec.environment()}, identity)
        # A service with no user runs as the runner: say so, or a root client would keep
        # its own groups (the client caps all this at the runner's uid anyway).
        return {"name": name, "env": env, "directory": spec.directory or os.getcwd(),
                "user": spec.user,
                "uid": identity.uid if identity else os.geteuid(),
                "gid": identity.gid if identity else os.getegid(),
                "groups": list(identity.groups) if identity else os.getgroups()}

    # -- actions ------------------------------------------------------------------------

    def shutdown(self) -> dict:
        already = self.sup.shutting_down
        self.sup.request_shutdown()
        return {"shutting_down": True, "already": already}

    async def reload(self, origin: str = "") -> dict:
        if self.reloader is None:
            raise OperationError("unsupported", "reload is not available in this runner")
        return await self.reloader.reload("entrypoint reload" + (f" by {origin}" if origin else ""))

    def _refuse_when_shutting_down(self) -> None:
        if self.sup.shutting_down:
            raise OperationError("shutting_down", "the runner is shutting down")

    def _announce(self, services: list[Service], what: str, origin: str) -> str:
        """`web: restart requested by root (uid 0) via control socket` in the runner's
        log (docker logs), for each service; returns the reason for their history."""
        reason = f"{what} requested" + (f" by {origin}" if origin else "")
        for service in services:
            service.say(reason)
        return reason

    async def start(self, names: list[str], origin: str = "") -> dict:
        services = self.services(names)
        self._refuse_when_shutting_down()
        reason = self._announce(services, "start", origin)
        for service in services:
            if service.state in (State.BACKOFF, State.STOPPING):
                await service.stop(reason)   # start it now, not after the backoff
        self._refuse_when_shutting_down()
        return await self.start_and_wait(services, "start")

    async def stop(self, names: list[str], origin: str = "") -> dict:
        services = self.services(names)
        self._refuse_when_shutting_down()
        await stop_in_order(services, self._announce(services, "stop", origin))
        return {"services": [self._result(s, True) for s in services]}

    async def restart(self, names: list[str], origin: str = "") -> dict:
        services = self.services(names)
        self._refuse_when_shutting_down()
        await stop_in_order(services, self._announce(services, "restart", origin))
        self._refuse_when_shutting_down()
        return await self.start_and_wait(services, "restart")

    async def set_enabled(self, names: list[str], enabled: bool, origin: str = "") -> dict:
        return await runtime_state.set_enabled(self, names, enabled, origin)

    async def start_and_wait(self, services: list[Service], what: str) -> dict:
        """Start `services` and return once each is RUNNING (a oneshot COMPLETED) or failed."""
        marks = [(s.last_exit, s.last_error) for s in services]
        runs = {s.name: s.job.runs for s in services if s.job is not None}
        for service in services:
            if not service.active:      # why this run starts, for its history record
                service.trigger = "reload" if what == "reload" else "manual"
            if service.job is not None and what == "start":
                service.run_now()        # a job runs now (CONTRACT §11)
            else:
                service.start()
        results = await asyncio.gather(*(
            self._until_run(s, runs[s.name], *m) if s.name in runs and what == "start"
            else self._until_up(s, *m) for s, m in zip(services, marks)))
        failed = [r for r in results if not r["ok"]]
        if failed:
            why = "; ".join(f'{r["name"]}: {r["error"]}' for r in failed)
            raise OperationError("failed", f"{what} failed: {why}", services=results)
        return {"services": results}

    async def _until_run(self, service: Service, runs_before: int, exit_before,
                         error_before) -> dict:
        """A job's `start`: done once its run began (it may end at once), or it failed."""
        while True:
            if service.job.runs > runs_before or service.job.running is not None:
                return self._result(service, True)
            if service.state in (State.FAILED, State.STOPPED, State.DISABLED):
                return self._result(service, False, self._why(service, exit_before, error_before))
            await service.changed()

    async def _until_up(self, service: Service, exit_before, error_before) -> dict:
        loop = asyncio.get_running_loop()
        settled_at = None
        while True:
            state = service.state
            if state == State.SCHEDULED:     # a job (re)started: waiting for its time
                return self._result(service, True)
            if state == (State.COMPLETED if service.spec.oneshot else State.RUNNING):
                if service.spec.oneshot or self.settle <= 0:
                    return self._result(service, True)
                settled_at = settled_at or loop.time() + self.settle
            elif state in (State.FAILED, State.BACKOFF, State.STOPPED, State.COMPLETED,
                           State.DISABLED):
                return self._result(service, False, self._why(service, exit_before, error_before))
            else:
                settled_at = None
            if settled_at is None:
                await service.changed()
                continue
            try:        # RUNNING: does it stay up for the settle time?
                await asyncio.wait_for(service.changed(), max(0.0, settled_at - loop.time()))
            except asyncio.TimeoutError:
                if service.state == State.RUNNING:
                    return self._result(service, True)

    def _why(self, service: Service, exit_before, error_before) -> str:
        state = service.state
        reason = service.history[-1][2] if service.history else ""
        exited = service.last_exit if service.last_exit is not exit_before else None
        if state == State.FAILED:
            return f"FAILED: {reason or service.last_error or 'no reason given'}"
        if state == State.BACKOFF:
            what = (f"exited ({exited.describe()})" if exited
                    else service.last_error if service.last_error != error_before
                    else "did not start")
            return f"{what}; BACKOFF ({reason})"
        if state == State.STOPPED and exited and not service.stop_requested:
            return f"exited by itself ({exited.describe()}); STOPPED"
        if self.sup.shutting_down:
            return f"{state.value}: the runner is shutting down"
        return f"{state.value} ({reason or 'stopped by another request'})"

    def _result(self, service: Service, ok: bool, error: str = "") -> dict:
        result = {"name": service.name, "ok": ok, "state": service.state.value,
                  "health": service.health, "pid": service.pid}
        if not ok:
            result["error"] = error
            ring = self.sup.rings.get(service.name)
            result["log"] = ring.tail(5) if ring is not None else []
        return result


def _names(args: dict) -> list[str]:
    names = args.get("names", [])
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise OperationError("bad_request", '"args.names" must be a list of service names')
    return names


def _lines(args: dict, default: int = 100, limit: int = MAX_LOG_LINES) -> int:
    n = args.get("lines", default)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= limit:
        raise OperationError("bad_request", f'"args.lines" must be an integer from 0 to {limit}')
    return n
