"""Find and load `services.toml` or a Procfile into a validated `spec.Config`.

pydantic checks the shape of each table (unknown keys, types, ranges); then the services
that passed are checked against the filesystem, the user database and each other
(`graph.py`). Every problem found is collected and raised at once as `ConfigError`;
bad input never shows a traceback.
"""

from __future__ import annotations

import grp
import math
import os
import pwd
import re
import shlex
import shutil
import stat
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from entrypoint.config import graph, web
from entrypoint.errors import ConfigError, Problem, UsageError
from entrypoint.config.interpolate import interpolate_tree
from entrypoint.config.schema import NAME_RE, ServiceModel, TimeoutsModel, depends_on_pairs, from_pydantic, show
from entrypoint.config.spec import Config, HealthSpec, ServiceSpec, Timeouts

SEARCHED_PLACES = ["$ENTRYPOINT_CONFIG", "./services.toml", "/etc/entrypoint/services.toml", "./Procfile"]
DOCKER_STOP_GRACE = 10.0
MAX_CONFIG_BYTES = 4 << 20
PATH_HINT = "use an absolute path or add its directory to PATH"


# ---------------------------------------------------------------- finding and reading

def locate(explicit: str | None, procfile: str | None, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The config to use as `(path, "toml" | "procfile")`, or None when there is none.

    `-c FILE` wins, then `--procfile FILE`, then `$ENTRYPOINT_CONFIG`, then SEARCHED_PLACES.
    A file named explicitly (by option or variable) that does not exist is a UsageError.
    """
    for path, kind, what in ((explicit, None, "-c"), (procfile, "procfile", "--procfile"),
                             (environ.get("ENTRYPOINT_CONFIG"), None, "$ENTRYPOINT_CONFIG")):
        if path:
            if not os.path.exists(path):
                raise UsageError(f"config file {path} (from {what}) does not exist")
            return path, kind or _kind_of(path)
    for place in SEARCHED_PLACES[1:]:
        path = place.removeprefix("./")
        if os.path.isfile(path):
            return path, _kind_of(path)
    return None


def _kind_of(path: str) -> str:
    name = os.path.basename(path).lower()
    return "procfile" if "procfile" in name and not name.endswith(".toml") else "toml"


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


def _read_dotenv(path: str, where: str, problems: list[Problem], environ: Mapping[str, str]) -> dict[str, str]:
    """A dotenv file's variables (python-dotenv syntax; `KEY` alone takes KEY from environ)."""
    from dotenv import dotenv_values    # imported here: ~30 ms (logging) few configs need
    try:
        with open(path, "rb") as f:
            f.read(1)
        values = dotenv_values(path)
    except FileNotFoundError:
        problems.append(Problem(where, f'"{path}" does not exist', "create it or remove env_file"))
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as e:
        problems.append(Problem(where, f'cannot read "{path}": {getattr(e, "strerror", None) or e}'))
        return {}
    return {k: v if v is not None else environ[k] for k, v in values.items() if v is not None or k in environ}


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
    for key in raw:
        if key not in ("timeouts", "services", "web"):
            problems.append(web.unknown_top_level(key, ["timeouts", "services", "web"]))
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

    models: list[tuple[int, str, ServiceModel]] = []
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
        try:
            model = ServiceModel.model_validate(item)
        except ValidationError as e:
            problems.extend(from_pydantic(e, where, list(ServiceModel.model_fields)))
            if named:   # still a node, so its dependencies and dependents are checked too
                nodes.append((index, name, _raw_dependencies(item.get("depends_on", ()))))
            continue
        models.append((index, where, model))
        nodes.append((index, model.name, [dep for dep, _ in model.depends_on]))

    by_name: dict[str, ServiceModel] = {}
    for _, _, m in models:
        by_name.setdefault(m.name, m)
    graph_problems = graph.problems(nodes)
    problems.extend(graph_problems)
    specs = []
    for index, where, model in models:
        deps = _resolve_deps(model, where, by_name, problems)
        specs.append(_service(model, where, deps, base, environ, problems))
    _shutdown_warnings(specs, timeouts, problems, cyclic=bool(graph_problems))
    web_spec = web.web_service(raw.get("web"), environ, base, problems, set(first_index))
    if web_spec is not None:    # the HTTP face: a service of its own, never in the runner
        specs.append(web_spec)
    return Config(source=path, services=tuple(specs), timeouts=timeouts, procfile=False)


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


def _service(m: ServiceModel, where: str, deps: tuple[tuple[str, str], ...], base: str,
             environ: Mapping[str, str], problems: list[Problem]) -> ServiceSpec:
    """The runtime spec of a shape-valid service, after its filesystem and user checks.

    For a disabled service these problems are only warnings: it is not started, and an image
    may well lack the program of a service it disables.
    """
    def bad(key: str, message: str, hint: str = "", warning: bool = False) -> None:
        problems.append(Problem(f"{where}: {key}" if key else where, message, hint, warning or not m.enabled))

    post, post_key = m.post_script, "post_script"
    if m.pos_script is not None:
        if m.post_script is not None:
            bad("pos_script", "both pos_script and post_script are set", "keep only post_script")
        else:
            post, post_key = m.pos_script, "pos_script"
            bad("", "pos_script is read as post_script", "rename it to post_script", warning=True)

    env: dict[str, str] = {}
    for i, name in enumerate(m.env_file):
        key = "env_file" if len(m.env_file) == 1 else f"env_file[{i}]"
        env.update(_read_dotenv(os.path.join(base, name), f"{where}: {key}", problems, environ))
    for key, value in m.env.items():
        if not key or "=" in key or "\0" in key:
            bad(f"env.{key}", "not a valid environment variable name", "use letters, digits and _")
        env[key] = value
    search_path = env.get("PATH", environ.get("PATH", os.defpath))

    directory = os.path.normpath(os.path.join(base, m.directory)) if m.directory else None
    if directory and not os.path.isdir(directory):
        exists = os.path.exists(directory)
        bad("directory", f'"{m.directory}" {"is not a directory" if exists else "does not exist"}',
            "create it in the image or fix the path")
    cwd = directory or base

    def resolve(word: str, key: str) -> str:
        return _resolve_program(word, key, search_path, cwd, bad)

    argv: tuple[str, ...] = ()
    command = m.command.strip()
    if not command:
        bad("command", "is empty", "name the program to run")
    elif m.shell:
        argv = ("/bin/sh", "-c", m.command + (" " + shlex.join(m.args) if m.args else ""))
    else:
        try:
            words = [command, *m.args] if m.args else shlex.split(command)
        except ValueError as e:
            bad("command", f"cannot split {show(m.command)}: {e}", "fix the quoting, or use args = [...]")
            words = []
        if words:
            argv = (resolve(words[0], "command"), *words[1:])

    pre = resolve(m.pre_script, "pre_script") if m.pre_script else None
    post = resolve(post, post_key) if post else None
    log_file = _log_file(m.log_file, base, bad) if m.log_file else None
    _check_identity(m, bad)

    restart = m.restart or ("no" if m.oneshot else "on-failure")
    if m.oneshot and restart == "always":
        bad("restart", 'a oneshot cannot use restart = "always"',
            'use "on-failure" to retry a failed run, or set oneshot = false')
    if m.restart_delay_max < m.restart_delay:
        bad("restart_delay_max", f"is less than restart_delay ({m.restart_delay:g})",
            "the delay never grows; raise restart_delay_max", warning=True)
    health = None
    if m.healthcheck:
        h = m.healthcheck
        kind, target = ("http", h.http) if h.http else ("tcp", h.tcp) if h.tcp else ("exec", h.exec)
        if kind == "exec":
            target = (resolve(target[0], "healthcheck.exec"), *target[1:])
        health = HealthSpec(kind=kind, target=target, interval=h.interval, timeout=h.timeout, retries=h.retries,
                            start_period=h.start_period, on_unhealthy=h.on_unhealthy)
    return ServiceSpec(
        name=m.name, argv=argv, enabled=m.enabled, required=m.required, depends_on=deps,
        wait_after=m.wait_after, user=m.user, group=m.group, directory=directory, env=tuple(env.items()),
        pre_script=pre, post_script=post, log_file=log_file, log_max_bytes=m.log_max_bytes,
        log_backups=m.log_backups, oneshot=m.oneshot, tty=m.tty, restart=restart, stop_signal=m.stop_signal,
        healthcheck=health, restart_delay=m.restart_delay, restart_delay_max=m.restart_delay_max,
        restart_limit=m.restart_limit, stable_after=m.stable_after)


def _resolve_program(word: str, key: str, search_path: str, cwd: str, bad: Callable[..., None]) -> str:
    """The absolute path of a program: relative paths against `cwd`, bare names in PATH."""
    if "/" in word:
        full = os.path.normpath(os.path.join(cwd, word))
        shown = f'"{word}"' + ("" if full == word else f" ({full})")
        try:
            st = os.stat(full)
        except FileNotFoundError:
            bad(key, f"{shown} does not exist", "install it in the image or fix the path")
            return full
        except OSError as e:
            bad(key, f"{shown}: {e.strerror}")
            return full
        if not stat.S_ISREG(st.st_mode):
            bad(key, f"{shown} is not a file", "name the program itself")
        elif not os.access(full, os.X_OK):
            bad(key, f"{shown} is not executable", f"chmod +x {full}")
        return full
    found = shutil.which(word, path=search_path)
    if found:
        return os.path.abspath(found)
    close = graph.did_you_mean(word, _programs_in(search_path))
    bad(key, f'"{word}" not found in PATH', f"{close} otherwise {PATH_HINT}" if close else PATH_HINT)
    return word


def _programs_in(search_path: str) -> set[str]:
    names: set[str] = set()
    for d in search_path.split(os.pathsep):
        try:
            names.update(e.name for e in os.scandir(d or ".") if e.is_file() and os.access(e.path, os.X_OK))
        except OSError:
            pass
    return names


def _log_file(value: str, base: str, bad: Callable[..., None]) -> str:
    full = os.path.normpath(os.path.join(base, value))
    parent = os.path.dirname(full)
    if os.path.isdir(full):
        bad("log_file", f'"{value}" is a directory', "name a file inside it")
    elif not os.path.isdir(parent):
        bad("log_file", f'directory "{parent}" does not exist', "create it in the image or fix the path")
    elif not os.access(parent, os.W_OK | os.X_OK):
        bad("log_file", f'directory "{parent}" is not writable by uid {os.geteuid()}', "fix its permissions")
    return full


def _check_identity(m: ServiceModel, bad: Callable[..., None]) -> None:
    """user and group exist; a non-root entrypoint can only run services as itself."""
    euid, egid = os.geteuid(), os.getegid()
    for key, value, db, current, tool in (("user", m.user, pwd.getpwnam, euid, "useradd"),
                                          ("group", m.group, grp.getgrnam, egid, "groupadd")):
        if value is None:
            continue
        if value.isdigit():
            ident = int(value)
        else:
            try:
                entry = db(value)
            except KeyError:
                bad(key, f'no {key} "{value}" on this system',
                    f"create it in the image with {tool} {value}, or use a numeric id")
                continue
            ident = entry.pw_uid if key == "user" else entry.gr_gid
        if euid != 0 and ident != current:
            bad(key, f"entrypoint runs as uid {euid} and cannot switch to {key} {value}",
                f"run it as root or remove `{key}`")


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
        env = _read_dotenv(dotenv, ".env", problems, environ)
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
