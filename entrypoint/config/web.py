"""The `[web]` table (CONTRACT §10): checked here, run as a service of its own.

The HTTP face never runs inside the runner: a `[web]` table (or ENTRYPOINT_WEB_LISTEN)
adds a service named `entrypoint-web` that runs `python -m entrypoint.web`, started,
restarted and stopped like any other service (same spawn and reaper path). It finds the
runner's control socket by itself (the listening socket of its parent). Credentials go
to it in its environment, never on its command line (`ps`, `list` and `status` show that).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from typing import Any

from pydantic import StrictBool, StrictStr, ValidationError

from entrypoint.config.schema import _Model, from_pydantic, show, suggest_key
from entrypoint.config.spec import ServiceSpec
from entrypoint.errors import Problem

WEB_SERVICE = "entrypoint-web"
DEFAULT_LISTEN = "127.0.0.1:9180"


class WebModel(_Model):
    listen: StrictStr = DEFAULT_LISTEN
    token: StrictStr | None = None
    token_file: StrictStr | None = None
    read_token: StrictStr | None = None
    pam: StrictBool = False
    pam_group: StrictStr | None = None


def split_listen(listen: str) -> tuple[str, int]:
    """("host", port) of `host:port`, `[v6]:port` or `:port`; ValueError when malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'expected "HOST:PORT", e.g. "{DEFAULT_LISTEN}", got {listen!r}')
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def web_service(raw: Any, environ: Mapping[str, str], base: str,
                problems: list[Problem], taken: set[str]) -> ServiceSpec | None:
    """The `entrypoint-web` service for `[web]` (raw table, or None), or None when off."""
    if raw is None and not environ.get("ENTRYPOINT_WEB_LISTEN"):
        return None
    if not isinstance(raw if raw is not None else {}, dict):
        problems.append(Problem("web", f"expected a table, got {show(raw)}", "write [web]"))
        return None
    table = dict(raw or {})
    if environ.get("ENTRYPOINT_WEB_LISTEN"):
        table["listen"] = environ["ENTRYPOINT_WEB_LISTEN"]
    try:
        model = WebModel.model_validate(table)
    except ValidationError as e:
        problems.extend(from_pydantic(e, "web", list(WebModel.model_fields)))
        return None
    found = len(problems)
    try:
        host, _ = split_listen(model.listen)
    except ValueError as exc:
        problems.append(Problem("web: listen", str(exc)))
        host = "127.0.0.1"
    token = environ.get("ENTRYPOINT_WEB_TOKEN") or model.token
    token_file = model.token_file
    if token_file:
        token_file = os.path.join(base, token_file)
        if not os.access(token_file, os.R_OK):
            problems.append(Problem("web: token_file", f"{token_file} cannot be read",
                                    "give a readable file holding the token"))
    if token and model.token_file:
        problems.append(Problem("web", "token and token_file both given", "keep one of them"))
    for key, value in (("token", token), ("read_token", model.read_token)):
        if value is not None and len(value) < 16:
            problems.append(Problem(f"web: {key}", "too short: use at least 16 characters",
                                    "e.g. `openssl rand -hex 24`"))
    if model.pam_group and not model.pam:
        problems.append(Problem("web: pam_group", "needs pam = true"))
    if not is_loopback(host) and not (token or token_file or model.pam):
        problems.append(Problem(
            "web: listen", f"{model.listen} is reachable from other hosts, and no credential "
            "is configured", "set token (or token_file, or ENTRYPOINT_WEB_TOKEN) or pam = true, "
            'or listen on loopback ("127.0.0.1:9180")'))
    if WEB_SERVICE in taken:
        problems.append(Problem("web", f'a service is already named "{WEB_SERVICE}"',
                                "the web face runs under that name: rename the service"))
    if len(problems) > found:
        return None
    if not web_extra_installed():
        problems.append(Problem("web", "the HTTP face needs its extra, which is not installed: "
                                "it stays off", "pip install 'entrypoint[web]'", warning=True))
        return None
    env = {"ENTRYPOINT_WEB_LISTEN": model.listen}
    for key, value in (("ENTRYPOINT_WEB_TOKEN", token), ("ENTRYPOINT_WEB_TOKEN_FILE", token_file),
                       ("ENTRYPOINT_WEB_READ_TOKEN", model.read_token),
                       ("ENTRYPOINT_WEB_PAM_GROUP", model.pam_group)):
        if value:
            env[key] = value
    if model.pam:
        env["ENTRYPOINT_WEB_PAM"] = "1"
    return ServiceSpec(name=WEB_SERVICE, argv=(sys.executable, "-I", "-m", "entrypoint.web",
                                               "--from-runner"),
                       restart="always", tty=False, env=tuple(env.items()),
                       directory="/", restart_limit=1000, stable_after=5.0)


def web_extra_installed() -> bool:
    """starlette and uvicorn importable, found without importing them (the runner never does)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("starlette", "uvicorn"))


def unknown_top_level(key: str, known: list[str]) -> Problem:
    hint = suggest_key(key, known) or f"only {', '.join(known)} are read"
    return Problem(key, "unknown top-level key", hint)
