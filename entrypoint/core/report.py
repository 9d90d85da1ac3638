"""`--report FILE`: a JSON summary of the run, written when the run ends.

For CI: how long each service took to become ready, how often it restarted, how it
ended, and the last lines of the ones that failed (or never became ready), plus the
CMD's status and the run's own exit status and reason. The file is written atomically
(a temporary file beside it, then a rename) from a supervisor shutdown hook, so it
exists once the runner has exited, whatever ended the run. A report that cannot be
written is a warning, never a change of the exit status.

Schema (version 1):

    {"version": 1, "entrypoint": "0.1.0", "config": "services.toml",
     "started_at": "...Z", "ended_at": "...Z", "duration": 12.3,
     "exit_status": 0, "reason": "SIGTERM",
     "command": ["pytest", "tests/e2e"] | null,
     "command_exit": {"code": 0, "signal": null, "status": 0, "text": "exit status 0"} | null,
     "ready_after": 1.52 | null,          # all enabled services ready, seconds from the start
     "services": [{"name", "state", "health", "enabled", "oneshot", "required",
                   "ready_condition", "ready_after", "restarts", "exit", "error",
                   "last_lines"}]}

`ready_after` of a service: seconds from the runner's start until its ready condition
(`started`, `healthy` or `completed`) first held, or null if it never did. `last_lines`
is filled only for services that ended FAILED or never became ready.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from entrypoint import __version__
from entrypoint.output.printer import utc_timestamp

REPORT_VERSION = 1
LAST_LINES = 20


class RunReport:
    """Watches a Supervisor's changes and writes the summary when the run ends."""

    def __init__(self, supervisor, path: str, cmd: list[str] | None = None):
        self.supervisor = supervisor
        self.path = path
        self.cmd = list(cmd) if cmd else None
        self.began = time.monotonic()
        self.started_at = time.time()
        self.ready_after: dict[str, float] = {}
        self.all_ready_after: float | None = None

    def install(self) -> "RunReport":
        sup = self.supervisor
        sup.change_listeners.append(self.on_change)
        sup.shutdown_hooks.append(self.on_shutdown)
        return self

    # -- while the run goes on ------------------------------------------------------------

    def on_change(self, service) -> None:
        try:
            if service.name not in self.ready_after and \
                    service.condition(service.ready_condition) is True:
                self.ready_after[service.name] = round(time.monotonic() - self.began, 4)
                if self.all_ready_after is None and not self.supervisor.not_ready():
                    self.all_ready_after = self.ready_after[service.name]
        except Exception:       # bookkeeping must never break supervision
            pass

    # -- at the end -------------------------------------------------------------------------

    async def on_shutdown(self, sup) -> None:
        try:
            data = self.build()
            write_atomically(self.path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        except Exception as exc:    # a report must never change how the run ends
            sup.printer.system(f"--report {self.path}: not written: {_describe(exc)}", "warning")
        else:
            sup.printer.system(f"report written to {self.path}")

    def build(self) -> dict:
        sup = self.supervisor
        status = sup._done.result() if sup._done is not None and sup._done.done() else None
        services = []
        for service in sup.services.values():
            snap = service.snapshot()
            ready = self.ready_after.get(service.name)
            failed = snap["state"] == "FAILED" or (snap["enabled"] and ready is None)
            lines = []
            if failed:
                ring = sup.rings.get(service.name)
                if ring is not None:
                    lines = ring.tail(LAST_LINES)
            services.append({
                "name": service.name, "state": snap["state"], "health": snap["health"],
                "enabled": snap["enabled"], "oneshot": snap["oneshot"],
                "required": snap["required"], "ready_condition": service.ready_condition,
                "ready_after": ready, "restarts": snap["restarts"], "exit": snap["exit"],
                "error": snap["error"] or None, "last_lines": lines,
            })
        cmd_exit = None
        if sup.cmd_exit is not None:
            e = sup.cmd_exit
            cmd_exit = {"code": e.code, "signal": e.signal, "status": e.shell_status,
                        "text": e.describe()}
        ended = time.time()
        return {
            "version": REPORT_VERSION, "entrypoint": __version__, "config": sup.config.source,
            "started_at": utc_timestamp(self.started_at), "ended_at": utc_timestamp(ended),
            "duration": round(time.monotonic() - self.began, 3),
            "exit_status": status, "reason": self.supervisor.end_reason,
            "command": self.cmd, "command_exit": cmd_exit,
            "ready_after": self.all_ready_after, "services": services,
        }


def write_atomically(path: str, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same directory + rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename or ''})".replace(" ()", "")
    return str(exc) or type(exc).__name__


def install(supervisor, path: str, cmd: list[str] | None = None) -> RunReport:
    """Make `supervisor` write a JSON report to `path` when its run ends."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.access(directory, os.W_OK):
        supervisor.printer.system(f"--report {path}: directory {directory} is not writable; "
                                  f"the report will not be written", "warning")
    return RunReport(supervisor, path, cmd).install()
