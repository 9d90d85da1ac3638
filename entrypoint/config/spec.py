"""The validated configuration as plain frozen dataclasses.

`config.load()` turns `services.toml` or a Procfile into these. The runtime (supervisor,
service, spawn, health, output) reads only these, never the pydantic models, so the
long-running process does not need pydantic after validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Condition = Literal["started", "healthy", "completed"]
RestartPolicy = Literal["no", "on-failure", "always"]


@dataclass(frozen=True)
class Timeouts:
    pre_script_timeout: float = 30.0
    post_script_timeout: float = 5.0
    service_shutdown_timeout: float = 15.0
    global_shutdown_timeout: float = 45.0
    dependency_wait_timeout: float = 120.0


@dataclass(frozen=True)
class HealthSpec:
    kind: Literal["http", "tcp", "exec"]
    target: str | tuple[str, ...]   # URL for http, "host:port" for tcp, argv tuple for exec
    interval: float = 2.0
    timeout: float = 1.0
    retries: int = 3
    start_period: float = 0.0
    on_unhealthy: Literal["ignore", "restart"] = "ignore"


@dataclass(frozen=True)
class JobSpec:
    """When a job runs (CONTRACT §11). Exactly one of `schedule` (cron) and `every` is set."""

    schedule: str | None = None      # 5-field cron, @hourly/@daily/... already expanded
    every: float | None = None       # seconds
    retry_every: float | None = None # after a failed run, instead of the schedule
    timezone: str = "UTC"            # tz database name; cron times are read in it
    run_on_start: bool = False
    overlap: Literal["skip", "queue", "replace"] = "skip"
    timeout: float | None = None     # one run's bound: stop signal, then SIGKILL


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: tuple[str, ...]            # resolved: argv[0] is an absolute path (or "/bin/sh" for shell)
    enabled: bool = True
    required: bool = False
    depends_on: tuple[tuple[str, Condition], ...] = ()   # (service name, condition), defaults resolved
    wait_after: float = 0.0
    user: str | None = None          # as written (name or uid); resolved at spawn
    group: str | None = None
    directory: str | None = None
    env: tuple[tuple[str, str], ...] = ()   # env_file entries then env entries, interpolated
    pre_script: str | None = None
    post_script: str | None = None
    log_file: str | None = None
    log_max_bytes: int = 10_000_000
    log_backups: int = 5
    oneshot: bool = False
    tty: bool = True
    restart: RestartPolicy = "on-failure"
    stop_signal: str = "TERM"        # name without SIG, upper case
    healthcheck: HealthSpec | None = None
    # Restart backoff: first delay, doubling up to the cap; give up after `restart_limit`
    # quick failures in a row; a run longer than `stable_after` seconds resets both.
    restart_delay: float = 1.0
    restart_delay_max: float = 30.0
    restart_limit: int = 5
    stable_after: float = 10.0
    # Readiness (CONTRACT §12): None (started/healthy as usual), "notify", "fd:N", "log:REGEX";
    # not ready within ready_timeout (None: dependency_wait_timeout) is a failed start.
    ready: str | None = None
    ready_timeout: float | None = None
    watchdog: float | None = None     # seconds between two WATCHDOG=1 at most
    # Replicas and ports (CONTRACT §13, config/replicas.py): `web.2` has replica_of "web".
    replica_of: str | None = None
    replica: int | None = None
    port: int | None = None           # the port it declares it listens on (its own, for a replica)
    env_files: tuple[str, ...] = ()   # absolute paths, read at load; `check --strict` re-reads them

    @property
    def wants_notify(self) -> bool:
        """The service gets a NOTIFY_SOCKET (jobs get one too: CONTRACT §11)."""
        return self.ready == "notify" or self.watchdog is not None or self.job is not None
    job: JobSpec | None = None       # set: a scheduled job, SCHEDULED between runs

    def environment(self) -> dict[str, str]:
        return dict(self.env)


ALERT_EVENTS = ("failed", "gave_up", "unhealthy", "job_failed", "watchdog")


@dataclass(frozen=True)
class AlertsSpec:
    """`[alerts]`: what to run or POST when a service fails (CONTRACT §11)."""

    on: tuple[str, ...] = ALERT_EVENTS
    command: tuple[str, ...] | None = None
    webhook: str | None = None
    timeout: float = 10.0            # per try
    tries: int = 3


@dataclass(frozen=True)
class Config:
    source: str                      # the file it came from, for messages
    services: tuple[ServiceSpec, ...]
    timeouts: Timeouts = field(default_factory=Timeouts)
    procfile: bool = False           # Procfile semantics: the first exit stops everything
    state_dir: str | None = None     # run history and enable/disable survive restarts here
    alerts: AlertsSpec | None = None

    def service(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.services]

    def with_enabled(self, overrides: dict[str, bool]) -> "Config":
        """This config with `enable`/`disable NAME` applied (names it lacks are ignored)."""
        return replace(self, services=tuple(
            replace(s, enabled=overrides[s.name]) if overrides.get(s.name, s.enabled) != s.enabled
            else s for s in self.services))
