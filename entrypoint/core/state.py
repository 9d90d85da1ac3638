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


S = State
ALLOWED: dict[State, set[State]] = {
    S.PENDING: {S.STARTING, S.STOPPED, S.FAILED},
    S.STARTING: {S.RUNNING, S.STOPPING, S.STOPPED, S.COMPLETED, S.BACKOFF, S.FAILED},
    S.RUNNING: {S.STOPPING, S.STOPPED, S.COMPLETED, S.BACKOFF, S.FAILED},
    S.STOPPING: {S.STOPPED, S.COMPLETED, S.FAILED, S.BACKOFF},
    S.BACKOFF: {S.STARTING, S.STOPPED, S.FAILED},
    S.STOPPED: {S.PENDING},
    S.COMPLETED: {S.PENDING},
    S.FAILED: {S.PENDING},
    S.DISABLED: {S.PENDING},
}
TERMINAL = {S.STOPPED, S.COMPLETED, S.FAILED, S.DISABLED}


class TransitionError(RuntimeError):
    pass
