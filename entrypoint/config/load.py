"""Find and load `services.toml` or a Procfile into a validated `spec.Config`.

pydantic checks the shape of each table (unknown keys, types, ranges); then each service
is checked against the filesystem and the user database (`resolve.py`) -- with the fields
that failed their shape left out, so that one bad field hides no other problem -- and
the services against each other (`graph.py`). Every problem found is collected and
raised at once as `ConfigError`; bad input never shows a traceback.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from entrypoint.config import graph, replicas, web
from entrypoint.errors import ConfigError, Problem
from entrypoint.config.interpolate import interpolate_tree
from entrypoint.config.resolve import read_dotenv, service_spec
from entrypoint.config.schema import NAME_RE, AlertsModel, ServiceModel, TimeoutsModel, depends_on_pairs, from_pydantic, show
from entrypoint.config.spec import AlertsSpec, Config, ServiceSpec, Timeouts
from entrypoint.config.locate import SEARCHED_PLACES, _kind_of, locate  # noqa: F401  (re-exported)

DOCKER_STOP_GRACE = 10.0
TOP_LEVEL = ("timeouts", "services", "web", "state_dir", "alerts")
MAX_CONFIG_BYTES = 4 << 20


# ---------------------------------------------------------------- finding and reading

def _read_text(path: str) -> str:
    """The file's text; a ConfigError with one problem when it cannot be read as UTF-8."""
    def fail(message: str, hint: str = "") -> ConfigError:
        return ConfigError(path, [Problem("", message, hint)])
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise fail("no such file", "check the path, or pass one with -c FILE") from None
    except IsADirectoryError:
        raise fail("is a directory, not a config file", "name the file inside it") from None
    except PermissionError:
        raise fail("permission denied", f"make it readable by uid {os.geteuid()}") from None
    except OSError as e:
        raise fail(f"cannot read it: {e.strerror or e}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise fail(f"larger than {MAX_CONFIG_BYTES >> 20} MiB; this is not a config file")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise fail(f"not valid UTF-8 at line {line}, column {column}", "save the file as UTF-8") from None


def _parse_toml(path: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", str(e), re.S)
        if not m:
            raise ConfigError(path, [Problem("", f"TOML syntax error: {e}")]) from None
        line = int(m[2])
        source = text.splitlines()[line - 1].strip() if line <= len(text.splitlines()) else ""
        hint = f"the line reads: {source[:80]}" if source else ""
        raise ConfigError(path, [Problem(f"line {m[2]}, column {m[3]}", f"TOML syntax error: {m[1]}",
                                         hint)]) from None
    except RecursionError:
        raise ConfigError(path, [Problem("", "TOML nesting too deep")]) from None
    except ValueError as e:   # e.g. an integer too large to convert
        raise ConfigError(path, [Problem("", f"TOML value not accepted: {e}")]) from None


# ---------------------------------------------------------------- loading

def load(path: str, kind: str = "toml", environ: Mapping[str, str] | None = None) -> tuple[Config, list[Problem]]:
    """Validate the config at `path`: `(Config, warnings)`, or ConfigError with every problem."""
    environ = os.environ if environ is None else environ
    if kind == "procfile":
        return load_procfile(path, environ)
    raw = _parse_toml(path, _read_text(path))
    problems: list[Problem] = []
    try:
        config = _build(raw, path, environ, problems)
    except RecursionError:
        raise ConfigError(path, [*problems, Problem("", "nesting too deep")]) from None
    problems.sort(key=_service_index)   # stable: file-wide problems first, then service by service
    if any(not p.warning for p in problems):
        raise ConfigError(path, problems)
    return config, problems


def _service_index(problem: Problem) -> int:
    m = re.match(r"services\[(\d+)\]", problem.where)
    return int(m[1]) if m else -1


def _build(raw: dict[str, Any], path: str, environ: Mapping[str, str], problems: list[Problem]) -> Config:
    base = os.path.dirname(os.path.abspath(path))
    top = ["timeouts", "services", "state_dir", "alerts"]
    for key in raw:
        if key not in TOP_LEVEL:
            problems.append(web.unknown_top_level(key, list(TOP_LEVEL)))
    state_dir = _state_dir(raw.get("state_dir"), base, problems)
    alerts = _alerts(raw.get("alerts"), problems)
    timeouts = Timeouts()
    if not isinstance(raw.get("timeouts", {}), dict):
        problems.append(Problem("timeouts", f"expected a table, got {show(raw['timeouts'])}", "write [timeouts]"))
    else:
        try:
            timeouts = Timeouts(**TimeoutsModel.model_validate(raw.get("timeouts", {})).model_dump())
        except ValidationError as e:
            problems.extend(from_pydantic(e, "timeouts", list(TimeoutsModel.model_fields)))
    items = raw.get("services", [])
    if not isinstance(items, list):
        problems.append(Problem("services", f"expected an array of tables, got {show(items)}",
                                "write [[services]] before each service"))
        items = []

    models: list[tuple[int, str, ServiceModel, frozenset[str]]] = []   # with the keys that failed
    nodes: list[tuple[int, str, list[str]]] = []    # for graph.problems, incl. services that failed shape
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        named = isinstance(name, str) and NAME_RE.fullmatch(name)
        where = graph.label(index, name) if named else f"services[{index}]"
        if not isinstance(item, dict):
            problems.append(Problem(where, f"expected a table, got {show(item)}", "write [[services]] tables"))
            continue
        if named:
            if name in first_index:
                problems.append(Problem(f"{where}: name", f'duplicate name "{name}"',
                                        f"services[{first_index[name]}] already uses it; names must be unique"))
            else:
                first_index[name] = index
        item = {k: v if k == "name" else interpolate_tree(v, environ, where, k, problems) for k, v in item.items()}
        failed: frozenset[str] = frozenset()
        try:
            model = ServiceModel.model_validate(item)
        except ValidationError as e:
            problems.extend(from_pydantic(e, where, list(ServiceModel.model_fields)))
            failed = frozenset(str(err["loc"][0]) for err in e.errors() if err["loc"])
            model = _without(item, failed)
        if named:   # a node even when its shape failed: its dependencies are checked too
            nodes.append((index, name, _raw_dependencies(item.get("depends_on", ()))))
        if model is not None:
            models.append((index, where, model, failed))

    by_name: dict[str, ServiceModel] = {}
    for _, _, m, failed in models:
        if not failed:      # a dependency's half-checked fields would mislead its dependents
            by_name.setdefault(m.name, m)
    graph_problems = graph.problems(nodes)
    problems.extend(graph_problems)
    specs = []
    for index, where, model, failed in models:
        found: list[Problem] = []
        deps = _resolve_deps(model, where, by_name, found)
        spec = service_spec(model, where, deps, base, environ, found)
        stand_ins = {f"{where}: {key}" for key in failed}
        problems.extend(p for p in found if p.where not in stand_ins)
        if not failed:
            specs += replicas.expand(spec, model.replicas, model.port)
            if model.replicas is not None and model.port is not None \
                    and model.port + model.replicas - 1 > 65535:
                problems.append(Problem(f"{where}: port", f"{model.replicas} replicas from port "
                                        f"{model.port} go past 65535", "lower port or replicas"))
    specs = replicas.resolve_dependencies(specs)
    problems.extend(replicas.port_problems(specs, {m.name: w for _, w, m, _ in models}))
    _shutdown_warnings(specs, timeouts, problems, cyclic=bool(graph_problems))
    web_spec = web.web_service(raw.get("web"), environ, base, problems, set(first_index))
    if web_spec is not None:    # the HTTP face: a service of its own, never in the runner
        specs.append(web_spec)
    return Config(source=path, services=tuple(specs), timeouts=timeouts, procfile=False,
                  state_dir=state_dir, alerts=alerts)


def _alerts(value: Any, problems: list[Problem]) -> AlertsSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.append(Problem("alerts", f"expected a table, got {show(value)}", "write [alerts]"))
        return None
    try:
        m = AlertsModel.model_validate(value)
    except ValidationError as e:
        problems.extend(from_pydantic(e, "alerts", list(AlertsModel.model_fields)))
        return None
    command = m.command
    if command is not None:
        import shutil

        found = shutil.which(command[0]) if "/" not in command[0] else command[0]
        if not found or not os.access(found, os.X_OK):
            problems.append(Problem("alerts: command", f'"{command[0]}" not found or not '
                                    f"executable", "use an absolute path or install it"))
        else:
            command = (os.path.abspath(found), *command[1:])
    return AlertsSpec(on=m.on, command=command, webhook=m.webhook, timeout=m.timeout,
                      tries=m.tries)


def _state_dir(value: Any, base: str, problems: list[Problem]) -> str | None:
    """`state_dir`: a directory for the run history (created at start when missing)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        problems.append(Problem("state_dir", f"expected a directory path, got {show(value)}",
                                'e.g. state_dir = "/var/lib/entrypoint"'))
        return None
    full = os.path.normpath(os.path.join(base, value))
    if os.path.exists(full) and not os.path.isdir(full):
        problems.append(Problem("state_dir", f'"{value}" is not a directory',
                                "name a directory (a volume, to outlive the container)"))
    return full


def _without(item: dict[str, Any], failed: frozenset[str]) -> ServiceModel | None:
    """The service with the keys that failed their shape left out, to check the others.

    A failed name or command gets a stand-in, so that the rest is still checked; what
    the checks then say about the stand-in is dropped by `_build`.
    """
    rest = {k: v for k, v in item.items() if k not in failed}
    if "name" in failed:
        rest["name"] = "_"
    if "command" in failed:
        rest["command"] = ""
    try:
        return ServiceModel.model_validate(rest)
    except ValidationError:
        return None


def _raw_dependencies(value: Any) -> list[str]:
    try:
        return [dep for dep, _ in depends_on_pairs(value)]
    except ValueError:
        return []


def _resolve_deps(m: ServiceModel, where: str, by_name: Mapping[str, ServiceModel],
                  problems: list[Problem]) -> tuple[tuple[str, str], ...]:
    """(name, condition) pairs with default conditions; impossible conditions are problems."""
    resolved = []
    for dep, cond in m.depends_on:
        target = by_name.get(dep)
        if target is None or dep == m.name:
            resolved.append((dep, cond or "started"))
            continue
        cond = cond or ("completed" if target.oneshot else "healthy" if target.healthcheck else "started")
        at = f"{where}: depends_on"
        if cond == "healthy" and target.healthcheck is None:
            problems.append(Problem(at, f'"{dep}" has no healthcheck, so it never becomes "healthy"',
                                    f'add a healthcheck to "{dep}" or use "started"'))
        if cond == "completed" and not target.oneshot:
            problems.append(Problem(at, f'"{dep}" is not a oneshot, so it never becomes "completed"',
                                    f'set oneshot = true on "{dep}" or use "started"'))
        if m.enabled and not target.enabled:
            problems.append(Problem(at, f'"{dep}" is disabled',
                                    f'enable "{dep}", remove it from depends_on, or disable "{m.name}" too'))
        resolved.append((dep, cond))
    return tuple(resolved)


def _shutdown_warnings(specs: list[ServiceSpec], t: Timeouts, problems: list[Problem], cyclic: bool) -> None:
    if t.service_shutdown_timeout > t.global_shutdown_timeout:
        problems.append(Problem("timeouts: service_shutdown_timeout",
                                f"is longer than global_shutdown_timeout ({t.global_shutdown_timeout:g} s)",
                                "the global deadline will SIGKILL services first", warning=True))
    if cyclic or not any(s.enabled for s in specs):
        return
    try:
        depth = len(graph.stop_order(specs))
    except ValueError:   # a cycle through a duplicate name: already an error
        return
    worst = min(t.global_shutdown_timeout, depth * t.service_shutdown_timeout)
    if any(s.enabled and s.post_script for s in specs):
        worst += t.post_script_timeout
    if worst > DOCKER_STOP_GRACE:
        grace = math.ceil(worst) + 5
        problems.append(Problem(
            "timeouts", f"a graceful shutdown may take up to {worst:g} s, but `docker stop` waits only "
                        f"{DOCKER_STOP_GRACE:g} s before SIGKILL",
            f"run `docker stop -t {grace}`, or set compose `stop_grace_period: {grace}s` or Kubernetes "
            "terminationGracePeriodSeconds (default 30 s), or lower the timeouts", warning=True,
            check_only=True))


# ---------------------------------------------------------------- Procfile

PROCFILE_LINE = re.compile(r"([^:#\s][^:]*?)\s*:\s*(.*)")


def load_procfile(path: str, environ: Mapping[str, str] | None = None) -> tuple[Config, list[Problem]]:
    """`name: command` lines, each run by `/bin/sh -c`; a `.env` beside the file goes into every env."""
    environ = os.environ if environ is None else environ
    text = _read_text(path)
    label = os.path.basename(path)
    problems: list[Problem] = []
    env: dict[str, str] = {}
    dotenv = os.path.join(os.path.dirname(os.path.abspath(path)), ".env")
    if os.path.isfile(dotenv):
        env = read_dotenv(dotenv, ".env", problems, environ)
    seen: dict[str, int] = {}
    specs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{label}:{number}"
        m = PROCFILE_LINE.fullmatch(line)
        if not m:
            problems.append(Problem(where, f"expected \"name: command\", got {show(line)}"))
            continue
        name, command = m[1], m[2].strip()
        if not NAME_RE.fullmatch(name):
            problems.append(Problem(where, f"{show(name)} is not a valid name", "use only letters, digits, - and _"))
        elif name in seen:
            problems.append(Problem(where, f'duplicate name "{name}"', f"first defined on line {seen[name]}"))
        elif not command:
            problems.append(Problem(where, f'"{name}" has no command', "write the command after the colon"))
        elif "\0" in command:
            problems.append(Problem(where, "contains a NUL character", "remove it"))
        else:
            seen[name] = number
            specs.append(ServiceSpec(name=name, argv=("/bin/sh", "-c", command), restart="no",
                                     env=tuple(env.items())))
    if not specs and not problems:
        problems.append(Problem("", "no processes defined", 'add lines like "web: python3 -m http.server"',
                                warning=True))
    web_spec = web.web_service(None, environ, os.path.dirname(os.path.abspath(path)), problems,
                               set(seen))       # ENTRYPOINT_WEB_LISTEN: the HTTP face
    if web_spec is not None:
        specs.append(web_spec)
    if any(not p.warning for p in problems):
        raise ConfigError(path, problems)
    return Config(source=path, services=tuple(specs), timeouts=Timeouts(), procfile=True), problems
