"""The shape of `services.toml`: pydantic models, value validators, located error messages.

Used only by `config.py` while validating; the runtime reads `spec.py` dataclasses instead.
Validators raise `PydanticCustomError("entrypoint", ...)` with a message and a hint that
`from_pydantic` turns into `Problem`s located like `services[2] "app": healthcheck.interval`.
"""

from __future__ import annotations

import math
import re
import shlex
import signal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, PlainValidator, StrictBool, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from entrypoint.errors import Problem
from entrypoint.config.graph import did_you_mean

NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
CONDITIONS = ("started", "healthy", "completed")
DAY = 24 * 3600
# Keys people bring from other supervisors, mapped to ours for "did you mean".
KEY_ALIASES = {"cmd": "command", "cwd": "directory", "working_dir": "directory", "workdir": "directory",
               "environment": "env", "dependencies": "depends_on", "requires": "depends_on",
               "after": "depends_on", "autostart": "enabled", "autorestart": "restart",
               "stopsignal": "stop_signal", "health": "healthcheck", "logfile": "log_file",
               "stdout_logfile": "log_file", "timeout": "timeouts", "service": "services"}


def _fail(msg: str, hint: str = "") -> PydanticCustomError:
    return PydanticCustomError("entrypoint", "{msg}", {"msg": msg, "hint": hint})


def show(value: Any) -> str:
    """A short rendering of a TOML value for messages: 'abc', 12, true, a list, a table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int):
        return str(value) if abs(value) < 10**18 else "a huge number"
    if isinstance(value, float):
        return repr(value)
    return {list: "a list", dict: "a table"}.get(type(value), f"a {type(value).__name__}")


def _seconds(v: Any, zero_ok: bool) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
        raise _fail(f"expected a number of seconds, got {show(v)}")
    if v < 0 or (v == 0 and not zero_ok):
        raise _fail(f"must be {'0 or more' if zero_ok else 'more than 0'} seconds, got {show(v)}")
    if v > DAY:
        raise _fail(f"{show(v)} seconds is more than 24 hours", "durations are in seconds")
    return float(v)


def _duration(zero_ok: bool) -> Any:
    return Annotated[float, PlainValidator(lambda v: _seconds(v, zero_ok))]


def _integer(low: int, high: int = 2**63 - 1) -> Any:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _fail(f"expected a whole number, got {show(v)}")
        if not low <= v <= high:
            raise _fail(f"must be between {low} and {high}, got {show(v)}")
        return v
    return Annotated[int, PlainValidator(check)]


def _name(v: Any) -> str:
    if not isinstance(v, str):
        raise _fail(f"expected a string, got {show(v)}")
    if not NAME_RE.fullmatch(v):
        raise _fail(f"{show(v)} is not a valid name", "use only letters, digits, - and _")
    return v


def depends_on_pairs(v: Any) -> tuple[tuple[str, str | None], ...]:
    if isinstance(v, str):
        items: list[tuple[str, str | None]] = [(v, None)]
    elif isinstance(v, list) and all(isinstance(x, str) for x in v):
        items = [(x, None) for x in v]
    elif isinstance(v, dict):
        items = []
        for dep, cond in v.items():
            if cond not in CONDITIONS:
                raise _fail(f'{dep}: expected "started", "healthy" or "completed", got {show(cond)}')
            items.append((dep, cond))
    else:
        raise _fail(f"expected a service name, a list of names or a table of name = condition, got {show(v)}",
                    'e.g. depends_on = ["db", "cache"] or depends_on = { db = "healthy" }')
    if any(not dep for dep, _ in items):
        raise _fail("empty service name")
    unique: dict[str, tuple[str, str | None]] = {}
    for dep, cond in items:
        unique.setdefault(dep, (dep, cond))
    return tuple(unique.values())


def _no_nul(v: str) -> str:
    # The kernel takes paths, arguments and environments as C strings: a NUL would cut
    # them short (and Python refuses them with a ValueError deep in the spawn).
    if "\0" in v:
        raise _fail("contains a NUL character", "remove it")
    return v


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise _fail(f"expected a string, got {show(v)}")
    return _no_nul(v)


def _env_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, int, float)):
        return _no_nul(str(v))
    raise _fail(f"expected a string, got {show(v)}")


def _str_or_list(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        return (_no_nul(v),)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(_no_nul(x) for x in v)
    raise _fail(f"expected a string or a list of strings, got {show(v)}")


def _ident(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 - 1:
        return str(v)
    if isinstance(v, str) and v.strip():
        return _no_nul(v.strip())
    raise _fail(f"expected a name or a numeric id, got {show(v)}")


def _signal(v: Any) -> str:
    hint = "use a name like TERM, INT, QUIT, HUP, USR1, or a number"
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise _fail(f"expected a signal name or number, got {show(v)}", hint)
    text = str(v).strip().upper() if isinstance(v, str) else ""
    try:
        if isinstance(v, int) or text.isdigit():
            return signal.Signals(int(v)).name[3:]
        return signal.Signals["SIG" + text.removeprefix("SIG")].name[3:]
    except (KeyError, ValueError):
        raise _fail(f"unknown signal {show(v)}", hint) from None


def _argv_list(v: Any) -> tuple[str, ...]:
    try:
        words = shlex.split(v) if isinstance(v, str) else v
    except ValueError as e:
        raise _fail(f"cannot split {show(v)}: {e}", 'use a list: exec = ["prog", "arg"]') from None
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
        raise _fail(f"expected a command line (a non-empty list of strings), got {show(v)}")
    return tuple(_no_nul(w) for w in words)


def _http(v: Any) -> str:
    hint = "e.g. http://127.0.0.1:8080/health"
    if not isinstance(v, str):
        raise _fail(f"expected a URL, got {show(v)}", hint)
    try:
        parts = urlsplit(v)
        parts.port
    except ValueError as e:
        raise _fail(f"{show(v)} is not a valid URL: {e}", hint) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(f"expected an http:// or https:// URL, got {show(v)}", hint)
    return _no_nul(v)


def _tcp(v: Any) -> str:
    host, _, port = v.rpartition(":") if isinstance(v, str) else ("", "", "")
    if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise _fail(f'expected "host:port", got {show(v)}', "e.g. tcp = \"127.0.0.1:6379\"")
    return _no_nul(v)


def _every(v: Any) -> float:
    from entrypoint.core.schedule import parse_every   # pure; cronsim is not imported

    try:
        return parse_every(v)
    except ValueError as e:
        raise _fail(str(e), 'e.g. every = "10m" or every = 30') from None


def _ready(v: Any) -> str:
    """`notify`, `fd:N` (N >= 3) or `log:REGEX` (CONTRACT §12)."""
    hint = 'use "notify", "fd:3" or "log:REGEX"'
    if not isinstance(v, str):
        raise _fail(f"expected a string, got {show(v)}", hint)
    kind, sep, rest = v.partition(":")
    if v == "notify":
        return v
    if sep and kind == "fd":
        if not rest.isdigit() or len(rest) > 4:
            raise _fail(f"{show(v)}: expected a file descriptor number after fd:", 'e.g. "fd:3"')
        if int(rest) < 3 or int(rest) > 1023:
            raise _fail(f"{show(v)}: fd {int(rest)} is "
                        + ("stdin, stdout or stderr" if int(rest) < 3 else "too large"),
                        "s6 services use fd 3 or above, e.g. \"fd:3\"")
        return f"fd:{int(rest)}"
    if sep and kind == "log":
        if not rest:
            raise _fail(f"{show(v)}: empty regular expression", 'e.g. "log:Ready to accept"')
        try:
            re.compile(rest)
        except (re.error, RecursionError, OverflowError) as e:
            raise _fail(f"{show(v)}: invalid regular expression: {e}", "check the pattern") from None
        return _no_nul(v)
    close = did_you_mean(kind, ["notify", "fd", "log"])
    raise _fail(f"unknown readiness protocol {show(v)}", f"{close} {hint}" if close else hint)


UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def _interval(v: Any) -> float:
    """A duration as seconds, or a string with a unit: "500ms", "30s", "5m", "1h"."""
    if isinstance(v, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*", v)
        if not m:
            raise _fail(f"expected seconds or a duration like \"30s\", got {show(v)}")
        v = float(m[1]) * UNITS[m[2] or "s"]
    return _seconds(v, zero_ok=False)


Seconds = _duration(zero_ok=False)
SecondsOrZero = _duration(zero_ok=True)
Ident = Annotated[str, PlainValidator(_ident)]
Text = Annotated[str, PlainValidator(_text)]        # a string without NUL
Retries = _integer(1, 10_000)
LogBytes = _integer(1)
LogBackups = _integer(0, 1000)
RestartLimit = _integer(1, 1_000_000)
Tries = _integer(1, 10)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthModel(_Model):
    http: Annotated[str, PlainValidator(_http)] | None = None
    tcp: Annotated[str, PlainValidator(_tcp)] | None = None
    exec: Annotated[tuple[str, ...], PlainValidator(_argv_list)] | None = None
    interval: Seconds = 2.0
    timeout: Seconds = 1.0
    retries: Retries = 3
    start_period: SecondsOrZero = 0.0
    on_unhealthy: Literal["ignore", "restart"] = "ignore"

    @model_validator(mode="after")
    def _one_kind(self) -> HealthModel:
        if sum(x is not None for x in (self.http, self.tcp, self.exec)) != 1:
            raise _fail("needs exactly one of http, tcp or exec",
                        'e.g. healthcheck = { tcp = "127.0.0.1:6379" }')
        return self


class ServiceModel(_Model):
    name: Annotated[str, PlainValidator(_name)]
    command: Text
    args: tuple[Text, ...] = ()
    shell: StrictBool = False
    enabled: StrictBool = True
    required: StrictBool = False
    depends_on: Annotated[tuple[tuple[str, str | None], ...], PlainValidator(depends_on_pairs)] = ()
    wait_after: SecondsOrZero = 0.0
    user: Ident | None = None
    group: Ident | None = None
    directory: Text | None = None
    env: dict[str, Annotated[str, PlainValidator(_env_value)]] = {}
    env_file: Annotated[tuple[str, ...], PlainValidator(_str_or_list)] = ()
    pre_script: Text | None = None
    post_script: Text | None = None
    pos_script: Text | None = None
    log_file: Text | None = None
    log_max_bytes: LogBytes = 10_000_000
    log_backups: LogBackups = 5
    oneshot: StrictBool = False
    tty: StrictBool = True
    restart: Literal["no", "on-failure", "always"] | None = None
    stop_signal: Annotated[str, PlainValidator(_signal)] = "TERM"
    healthcheck: HealthModel | None = None
    restart_delay: Seconds = 1.0
    restart_delay_max: Seconds = 30.0
    restart_limit: RestartLimit = 5
    stable_after: Seconds = 10.0
    ready: Annotated[str, PlainValidator(_ready)] | None = None
    ready_timeout: Seconds | None = None
    watchdog: Annotated[float, PlainValidator(_interval)] | None = None
    replicas: _integer(1, 1000) | None = None
    port: _integer(1, 65535) | None = None
    # A job (CONTRACT §11): checked against each other in resolve.py.
    schedule: Text | None = None
    every: Annotated[float, PlainValidator(_every)] | None = None
    retry_every: Annotated[float, PlainValidator(_every)] | None = None
    timezone: Text | None = None
    run_on_start: StrictBool = False
    overlap: Literal["skip", "queue", "replace"] = "skip"
    timeout: Seconds | None = None


ALERT_EVENTS = ("failed", "gave_up", "unhealthy", "job_failed", "watchdog")


def _events(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _fail(f"expected a list of event names, got {show(v)}",
                    f"events: {', '.join(ALERT_EVENTS)}")
    for x in v:
        if x not in ALERT_EVENTS:
            hint = did_you_mean(x, list(ALERT_EVENTS)) or f"events: {', '.join(ALERT_EVENTS)}"
            raise _fail(f"unknown event {show(x)}", hint)
    return tuple(dict.fromkeys(v))


class AlertsModel(_Model):
    on: Annotated[tuple[str, ...], PlainValidator(_events)] = ALERT_EVENTS
    command: Annotated[tuple[str, ...], PlainValidator(_argv_list)] | None = None
    webhook: Annotated[str, PlainValidator(_http)] | None = None
    timeout: Seconds = 10.0
    tries: Tries = 3

    @model_validator(mode="after")
    def _something(self) -> AlertsModel:
        if self.command is None and self.webhook is None:
            raise _fail("needs a command, a webhook, or both",
                        'e.g. webhook = "https://hooks.slack.com/services/..."')
        return self


class TimeoutsModel(_Model):
    pre_script_timeout: Seconds = 30.0
    post_script_timeout: Seconds = 5.0
    service_shutdown_timeout: Seconds = 15.0
    global_shutdown_timeout: Seconds = 45.0
    dependency_wait_timeout: Seconds = 120.0


TYPE_NAMES = {"string_type": "a string", "bool_type": "true or false", "int_type": "a whole number",
              "float_type": "a number", "list_type": "a list", "tuple_type": "a list",
              "dict_type": "a table", "model_type": "a table", "model_attributes_type": "a table"}


def suggest_key(word: str, keys: list[str]) -> str:
    alias = KEY_ALIASES.get(word.lower())
    return f'did you mean "{alias}"?' if alias in keys else did_you_mean(word, keys)


def from_pydantic(error: ValidationError, where: str, keys: list[str]) -> list[Problem]:
    """pydantic's errors as located Problems: `services[2] "app": restat: unknown key (...)`."""
    found = []
    for e in error.errors(include_url=False):
        loc, kind, ctx = e["loc"], e["type"], e.get("ctx") or {}
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        hint = ""
        if kind == "missing":
            msg = "required"
        elif kind == "extra_forbidden":
            inner = list(HealthModel.model_fields) if len(loc) > 1 and loc[-2] == "healthcheck" else keys
            msg, hint = "unknown key", suggest_key(str(loc[-1]), inner)
        elif kind == "entrypoint":
            msg, hint = ctx["msg"], ctx.get("hint", "")
        elif kind == "literal_error":
            msg = f"expected {ctx['expected']}, got {show(e['input'])}"
        else:
            msg = f"expected {TYPE_NAMES[kind]}, got {show(e['input'])}" if kind in TYPE_NAMES else e["msg"]
        found.append(Problem(f"{where}: {path}" if path else where, msg, hint))
    return found
