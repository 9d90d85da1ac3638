"""Replicas and ports (CONTRACT §13): one `[[services]]` table, N running copies.

`replicas = N` turns service `web` into `web.1` ... `web.N` (a dot cannot appear in a
name, so these never clash with another service), each with `ENTRYPOINT_REPLICA=i` and,
with `port = P`, `PORT=P+i-1`. A dependency on `web` means all of its replicas. Each
replica's spec holds nothing of the count, so a reload from 2 to 3 replicas leaves
`web.1` and `web.2` as they are (and `same_but_replicas` lets dependents stay too).
A healthcheck aimed at the declared port follows each replica's port, and each replica
writes its own `log_file` (`web.log` -> `web.1.log`), so that rotations never collide.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import urlsplit, urlunsplit

from entrypoint.config.spec import ServiceSpec
from entrypoint.errors import Problem

_REPLICA = re.compile(r"(.+)\.(\d+)")


def expand(spec: ServiceSpec, replicas: int | None, port: int | None) -> list[ServiceSpec]:
    """The specs that `spec` runs as: itself (with PORT when it has a port), or its replicas."""
    if replicas is None:
        if port is None:
            return [spec]
        return [dataclasses.replace(spec, port=port, env=spec.env + (("PORT", str(port)),))]
    out = []
    for i in range(1, replicas + 1):
        env = spec.env + (("ENTRYPOINT_REPLICA", str(i)),)
        own_port = None if port is None else port + i - 1
        if own_port is not None:
            env += (("PORT", str(own_port)),)
        out.append(dataclasses.replace(
            spec, name=f"{spec.name}.{i}", env=env, replica_of=spec.name, replica=i,
            port=own_port, healthcheck=_own_port(spec.healthcheck, port, own_port),
            log_file=_numbered(spec.log_file, i)))
    return out


def _own_port(check, port: int | None, own: int | None):
    """A healthcheck aimed at the service's declared port follows each replica's port."""
    if check is None or port is None or own == port or check.kind == "exec":
        return check
    if check.kind == "tcp":
        host, _, p = check.target.rpartition(":")
        target = f"{host}:{own}" if p == str(port) else check.target
    else:
        parts = urlsplit(check.target)
        if parts.port != port:
            return check
        target = urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0] + f":{own}"))
    return dataclasses.replace(check, target=target)


def _numbered(log_file: str | None, i: int) -> str | None:
    """Each replica its own log file (web.log -> web.1.log): one rotation per file."""
    if log_file is None:
        return None
    head, dot, ext = log_file.rpartition(".")
    if not dot or "/" in ext:
        return f"{log_file}.{i}"
    return f"{head}.{i}.{ext}"


def resolve_dependencies(specs: list[ServiceSpec]) -> list[ServiceSpec]:
    """`depends_on` naming a replicated service, rewritten to all of its replicas."""
    groups: dict[str, list[str]] = {}
    for spec in specs:
        if spec.replica_of:
            groups.setdefault(spec.replica_of, []).append(spec.name)
    if not groups:
        return specs
    out = []
    for spec in specs:
        deps = []
        for dep, cond in spec.depends_on:
            deps += [(name, cond) for name in groups.get(dep, [dep]) if name != spec.name]
        out.append(dataclasses.replace(spec, depends_on=tuple(deps)) if deps != list(spec.depends_on)
                   else spec)
    return out


def port_problems(specs: list[ServiceSpec], where: dict[str, str]) -> list[Problem]:
    """Two services (or replicas) declaring one port: each later one is a problem."""
    owners: dict[int, str] = {}
    found = []
    for spec in specs:
        if spec.port is None or not spec.enabled:
            continue
        first = owners.setdefault(spec.port, spec.name)
        if first != spec.name:
            found.append(Problem(f"{where.get(spec.replica_of or spec.name, spec.name)}: port",
                                 f'port {spec.port} of "{spec.name}" is already declared by "{first}"',
                                 "give each service its own port (replicas use port, port+1, ...)"))
    return found


def group_of(name: str) -> str:
    """`web` for `web.3`; a plain name for itself."""
    m = _REPLICA.fullmatch(name)
    return m[1] if m else name


def same_but_replicas(a: ServiceSpec, b: ServiceSpec) -> bool:
    """Equal once dependencies on replicas are read as dependencies on their group: a
    dependent of `web` is not changed by `web` going from 2 to 3 replicas."""
    def collapsed(spec: ServiceSpec):
        deps = tuple(dict.fromkeys((group_of(d), c) for d, c in spec.depends_on))
        return dataclasses.replace(spec, depends_on=deps)
    return a == b or collapsed(a) == collapsed(b)
