"""Service states (CONTRACT §4) and the transitions allowed between them."""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    COMPLETED = "COMPLETED"
    BACKOFF = "BACKOFF"
    FAILED = "FAILED"
    DISABLED = "DISABLED"
    SCHEDULED = "SCHEDULED"     # a job between runs (CONTRACT §11)


S = State
ALLOWED: dict[State, set[State]] = {
    S.PENDING: {S.STARTING, S.STOPPED, S.FAILED, S.SCHEDULED, S.DISABLED},
    # A job's run ends back in SCHEDULED, whatever its outcome (a failed run never FAILS it).
    S.STARTING: {S.RUNNING, S.STOPPING, S.STOPPED, S.COMPLETED, S.BACKOFF, S.FAILED,
                 S.SCHEDULED},
    S.RUNNING: {S.STOPPING, S.STOPPED, S.COMPLETED, S.BACKOFF, S.FAILED, S.SCHEDULED},
    S.STOPPING: {S.STOPPED, S.COMPLETED, S.FAILED, S.BACKOFF, S.SCHEDULED},
    S.SCHEDULED: {S.STARTING, S.STOPPED, S.FAILED},
    S.BACKOFF: {S.STARTING, S.STOPPED, S.FAILED},
    # `disable NAME` of a service that has stopped (CONTRACT §11).
    S.STOPPED: {S.PENDING, S.DISABLED},
    S.COMPLETED: {S.PENDING, S.DISABLED},
    S.FAILED: {S.PENDING, S.DISABLED},
    S.DISABLED: {S.PENDING},
}
TERMINAL = {S.STOPPED, S.COMPLETED, S.FAILED, S.DISABLED}
