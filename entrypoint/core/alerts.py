"""Alerts (`[alerts]`, CONTRACT §11): a command and/or a webhook when a service fails.

Events: `failed` (a service ended FAILED), `gave_up` (its restart policy gave up),
`unhealthy`, `job_failed` (a run of a job failed), `watchdog`. They are read off the
supervisor's change notifications: no part of the runtime calls us.

An alert never delays the runner: the command and the webhook each run as a child
process, spawned through the one child handle (registered with the reaper, output into
the runner's log, killed past its bound). The webhook is a `python -I` child with
urllib: its timeout and tries live there, not in the loop, and a hanging or refusing
endpoint costs one sleeping process. At most MAX_IN_FLIGHT alerts run at once; past
that, an alert is dropped with a line (a crash loop must not become a fork storm).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from entrypoint.config.spec import AlertsSpec
from entrypoint.core.state import State

MAX_IN_FLIGHT = 8
LAST_LINES = 10

# The webhook child: POST the JSON in $ALERT_PAYLOAD_JSON to argv[1], `tries` times at
# most, each bounded by `timeout`, 1 s then 2 s apart; a line on failure, exit 1.
_WEBHOOK_CODE = r"""
import os, sys, time, urllib.request
url, timeout, tries = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
body = os.environ["ALERT_PAYLOAD_JSON"].encode()
why = ""
for attempt in range(tries):
    if attempt:
        time.sleep(min(2 ** (attempt - 1), 5))
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "entrypoint-alerts"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            if 200 <= reply.status < 300:
                sys.exit(0)
            why = f"HTTP {reply.status}"
    except Exception as exc:
        why = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
print(f"alert webhook {url}: not delivered after {tries} tries: {why}", file=sys.stderr)
sys.exit(1)
"""


class Alerts:
    def __init__(self, supervisor):
        self.sup = supervisor
        self._seen: dict[str, tuple] = {}
        self.in_flight = 0
        self.sent = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def spec(self) -> AlertsSpec | None:
        return self.sup.config.alerts        # a reload may change it

    # -- reading events off the changes ---------------------------------------------------

    def on_change(self, service) -> None:
        before = self._seen.get(service.name)
        now = (service.state, service.health, id(service.last_run))
        self._seen[service.name] = now
        if before is None or self.sup.shutting_down:
            if before is None and service.state == State.FAILED:
                self._failed(service)
            return
        state, health, run = before
        if service.state == State.FAILED and state != State.FAILED:
            self._failed(service)
        if service.health == "unhealthy" and health != "unhealthy":
            self.emit("unhealthy", service)
        if (now[2] != run and service.last_run is not None and not service.last_run["ok"]
                and service.job is not None and service.last_run["why"] != "stopped"):
            self.emit("job_failed", service, service.last_run["why"])

    def on_run(self, run, finished: bool = True) -> None:
        """A run ended (the history's listener): one its watchdog killed is an alert."""
        service = self.sup.services.get(run.service)
        if finished and run.outcome == "watchdog" and service is not None:
            self.emit("watchdog", service, run.why)

    def _failed(self, service) -> None:
        reason = service.history[-1][2] if service.history else ""
        event = "gave_up" if reason.startswith("gave up") else "failed"
        self.emit(event, service, reason or service.last_error)

    # -- sending ------------------------------------------------------------------------

    def emit(self, event: str, service, why: str = "") -> None:
        if self.spec is None or event not in self.spec.on:
            return
        ring = self.sup.rings.get(service.name)
        last_lines = ring.tail(LAST_LINES) if ring is not None else []
        exit_status = service.last_exit
        exit_text = exit_status.describe() if exit_status is not None else ""
        text = f"[{event}] {service.name}" + (f": {why}" if why else "") + (
            f" ({exit_text})" if exit_text and exit_text not in why else "")
        payload = {"event": event, "service": service.name, "time": time.time(),
                   "exit": None if exit_status is None else exit_status.shell_status,
                   "last_lines": last_lines, "text": text}
        self.sup.printer.system(f"alert: {text}", "warning")
        env = {**self.sup.environ, "ENTRYPOINT_EVENT": event, "ENTRYPOINT_SERVICE": service.name,
               "ENTRYPOINT_EXIT": "" if exit_status is None else str(exit_status.shell_status),
               "ENTRYPOINT_LAST_LINES": "\n".join(last_lines)}
        if self.spec.command:
            self._spawn(self.spec.command, env, self.spec.timeout, "alert command")
        if self.spec.webhook:
            # Slack-style incoming webhooks read "text"; the rest is for everyone else.
            env = {"PATH": os.defpath, "ALERT_PAYLOAD_JSON": json.dumps(payload)}
            argv = (sys.executable, "-I", "-c", _WEBHOOK_CODE, self.spec.webhook,
                    str(self.spec.timeout), str(self.spec.tries))
            bound = self.spec.timeout * self.spec.tries + 2 * self.spec.tries + 5
            self._spawn(argv, env, bound, "alert webhook")

    def _spawn(self, argv, env: dict[str, str], bound: float, what: str) -> None:
        from entrypoint.core.child import Child
        from entrypoint.core.spawn import SpawnError
        from entrypoint.output.stream import StreamOutput

        printer = self.sup.printer
        if self.in_flight >= MAX_IN_FLIGHT:
            printer.system(f"{what} dropped: {MAX_IN_FLIGHT} alerts are still running",
                           "warning")
            return
        loop = asyncio.get_running_loop()
        output = StreamOutput(printer, "entrypoint", "stderr")
        try:
            child = Child.spawn(loop, self.sup.reaper, argv, label=what,
                                outputs={"stdout": output}, env=env, cwd="/", tty=False,
                                merge_stderr=True)
        except SpawnError as exc:
            printer.system(f"{what}: cannot run it: {exc.message}", "warning")
            return
        self.in_flight += 1
        self.sent += 1
        self._idle.clear()

        async def watch() -> None:
            try:
                status = await child.run_bounded(bound)
                if status is None:
                    printer.system(f"{what} took longer than {bound:g}s; killed", "warning")
                elif not status.success:
                    printer.system(f"{what} failed ({status.describe()})", "warning")
            finally:
                self.in_flight -= 1
                if not self.in_flight:
                    self._idle.set()

        loop.create_task(watch())


    async def settle(self, limit: float = 2.0) -> None:
        """At shutdown, before the final sweep: let the alerts under way finish (bounded)."""
        try:
            await asyncio.wait_for(self._idle.wait(), limit)
        except asyncio.TimeoutError:
            pass


def attach(supervisor) -> None:
    """Alerts for a supervisor (they fire while the config, reloaded or not, has [alerts])."""
    alerts = Alerts(supervisor)
    supervisor.alerts = alerts
    supervisor.change_listeners.append(alerts.on_change)
    supervisor.history.listeners.append(alerts.on_run)

    async def before_sweep(sup) -> None:
        await alerts.settle()

    supervisor.before_sweep_hooks.append(before_sweep)
