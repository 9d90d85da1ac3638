"""A service as plain data, for `list --json`, `status`, events, the report and the HTTP face."""

from __future__ import annotations

import time


def snapshot(service) -> dict:
    """The service as plain data: state, health, pid, exits, job and notify state."""
    uptime = None
    if service.pid is not None and service.started_at is not None:
        uptime = max(0.0, time.time() - service.started_at)
    last_exit = None
    if service.last_exit is not None:
        last_exit = {"code": service.last_exit.code, "signal": service.last_exit.signal,
                     "status": service.last_exit.shell_status,
                     "text": service.last_exit.describe()}
    check = None
    if service.last_check is not None:
        at, ok, output = service.last_check
        check = {"at": at, "ok": ok, "output": output}
    return {
        "name": service.name, "state": service.state.value, "health": service.health,
        "pid": service.pid, "uptime": uptime, "restarts": service.restarts,
        "exit": last_exit, "error": service.last_error,
        "oneshot": service.spec.oneshot, "enabled": service.spec.enabled,
        "required": service.spec.required,
        "command": list(service.spec.argv), "user": service.spec.user,
        "history": [{"at": t, "state": s, "reason": r} for t, s, r in service.history],
        "next_run": service.job.next_run if service.job is not None else None,
        "job": service.job.snapshot() if service.job is not None else None,
        "last_run": service.last_run,
        # What the dashboard and /metrics read: status text, progress, a job's counts.
        "status": service.notify.status or None, "progress": service.notify.to_json()["progress"],
        "job_runs": dict(service.job.results) if service.job is not None else None,
        "last_success": service.job.last_success if service.job is not None else None,
        "last_check": check,
        "ready": service.spec.ready, "trigger": service.trigger,
        "replica_of": service.spec.replica_of, "port": service.spec.port,
        "notify": service.notify.to_json(),
    }
