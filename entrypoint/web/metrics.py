"""`GET /metrics`: the Prometheus text exposition format (version 0.0.4), names of §10."""

from __future__ import annotations

import time

STATES = ("PENDING", "STARTING", "RUNNING", "STOPPING", "STOPPED", "COMPLETED", "BACKOFF",
          "FAILED", "DISABLED", "SCHEDULED")

# name, type, help
FAMILIES = [
    ("service_up", "gauge", "1 when the service is RUNNING, else 0."),
    ("service_state", "gauge", "1 for the state the service is in, 0 for the others."),
    ("service_healthy", "gauge", "1 when its healthcheck passes (or it has none and runs)."),
    ("service_restarts_total", "counter", "Restarts of the service since the runner started."),
    ("service_start_time_seconds", "gauge", "Unix time the current run started."),
    ("service_cpu_seconds_total", "counter", "CPU time of the service's process group."),
    ("service_memory_rss_bytes", "gauge", "Resident memory of the service's process group."),
    ("job_runs_total", "counter", "Finished runs of a job, by result."),
    ("job_last_success_timestamp_seconds", "gauge", "Unix time a job's last run succeeded."),
    ("log_lines_total", "counter", "Lines of output of the service since the runner started."),
    ("build_info", "gauge", "The entrypoint version."),
]


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def render(services: list[dict], version: str, now: float | None = None) -> str:
    now = time.time() if now is None else now
    samples: dict[str, list[str]] = {name: [] for name, _, _ in FAMILIES}

    def add(family: str, service: str | None, value, **labels) -> None:
        pairs = ([("service", service)] if service is not None else []) + list(labels.items())
        text = ",".join(f'{k}="{_label(v)}"' for k, v in pairs)
        samples[family].append(f"entrypoint_{family}{{{text}}} {_num(value)}")

    for s in services:
        name, state = s["name"], s["state"]
        add("service_up", name, 1 if state == "RUNNING" else 0)
        for st in STATES:
            add("service_state", name, 1 if st == state else 0, state=st)
        healthy = s["health"] == "healthy" or (s["health"] == "-" and state == "RUNNING")
        add("service_healthy", name, 1 if healthy else 0)
        add("service_restarts_total", name, s.get("restarts", 0))
        if s.get("uptime") is not None:
            add("service_start_time_seconds", name, round(now - s["uptime"], 3))
        if s.get("cpu_seconds") is not None:
            add("service_cpu_seconds_total", name, float(s["cpu_seconds"]))
        if s.get("rss_bytes") is not None:
            add("service_memory_rss_bytes", name, s["rss_bytes"])
        for result, count in (s.get("job_runs") or {}).items():
            add("job_runs_total", name, count, result=result)
        if s.get("last_success") is not None:
            add("job_last_success_timestamp_seconds", name, float(s["last_success"]))
        add("log_lines_total", name, s.get("log_lines_total", 0))
    add("build_info", None, 1, version=version)
    out = []
    for name, kind, text in FAMILIES:
        out += [f"# HELP entrypoint_{name} {text}", f"# TYPE entrypoint_{name} {kind}"]
        out += samples[name]
    return "\n".join(out) + "\n"
