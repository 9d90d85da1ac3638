"""A service whose shape pydantic accepted, turned into its runtime `ServiceSpec`.

On the way it is checked against the world the service will run in: its env files,
directory, programs on its PATH, log directory, user and group, and the contradictions
between its own fields. Problems are appended to a list, never raised, so that `check`
reports every one at once.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import stat
from collections.abc import Callable, Mapping

from entrypoint.config import graph
from entrypoint.config.schema import ServiceModel, show
from entrypoint.config.spec import HealthSpec, JobSpec, ServiceSpec
from entrypoint.errors import Problem

PATH_HINT = "use an absolute path or add its directory to PATH"
MAX_ID = 2**32 - 2      # (uid_t) -1 means "no change" to the kernel


def read_dotenv(path: str, where: str, problems: list[Problem], environ: Mapping[str, str]) -> dict[str, str]:
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


def service_spec(m: ServiceModel, where: str, deps: tuple[tuple[str, str], ...], base: str,
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
        env.update(read_dotenv(os.path.join(base, name), f"{where}: {key}", problems, environ))
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
    elif m.shell and m.args:
        # The contract runs `args` directly, never through a shell: the two disagree.
        bad("shell", "shell = true cannot be used with args",
            "write the whole command line in `command` for the shell, or remove `shell` "
            "to run command with args directly")
    elif m.shell:
        argv = ("/bin/sh", "-c", m.command)
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
    job = _job(m, environ, bad)
    return ServiceSpec(
        job=job, name=m.name, argv=argv, enabled=m.enabled, required=m.required, depends_on=deps,
        wait_after=m.wait_after, user=m.user, group=m.group, directory=directory, env=tuple(env.items()),
        pre_script=pre, post_script=post, log_file=log_file, log_max_bytes=m.log_max_bytes,
        log_backups=m.log_backups, oneshot=m.oneshot, tty=m.tty, restart=restart, stop_signal=m.stop_signal,
        healthcheck=health, restart_delay=m.restart_delay, restart_delay_max=m.restart_delay_max,
        restart_limit=m.restart_limit, stable_after=m.stable_after, ready=m.ready,
        ready_timeout=m.ready_timeout, watchdog=m.watchdog,
        env_files=tuple(os.path.join(base, name) for name in m.env_file))


JOB_ONLY = ("retry_every", "timezone", "run_on_start", "timeout")


def _job(m: ServiceModel, environ: Mapping[str, str], bad: Callable[..., None]) -> JobSpec | None:
    """The schedule of a job (`schedule` or `every`), or None for a service that is not one."""
    if m.schedule is None and m.every is None:
        for key in JOB_ONLY:
            if key in m.model_fields_set:
                bad(key, "only a job has it", 'add schedule = "..." or every = "..." to make '
                    "this service a job, or remove it")
        if "overlap" in m.model_fields_set:
            bad("overlap", "only a job has it", "add schedule or every, or remove it")
        return None
    from entrypoint.core import schedule

    if m.schedule is not None and m.every is not None:
        bad("every", "schedule and every are both set", "keep one of them")
    if m.schedule is not None:
        problem = schedule.cron_problem(m.schedule)
        if problem:
            bad("schedule", problem, 'five fields: minute hour day-of-month month day-of-week, '
                'e.g. "*/5 * * * *", or @hourly, @daily, @weekly')
    tz = m.timezone
    if tz is None:
        tz = (environ.get("TZ") or "").lstrip(":") or "UTC"
        if tz.startswith("/"):       # TZ=:/etc/localtime: a file, not a zone name
            tz = "UTC"
        try:
            schedule.zone(tz)
        except ValueError:
            bad("", f"TZ={environ.get('TZ')!r} is not a tz database name; the job's times "
                f"are read in UTC", 'set timezone = "Area/City" on the job', warning=True)
            tz = "UTC"
    else:
        try:
            schedule.zone(tz)
        except ValueError as e:
            bad("timezone", str(e))
    if m.restart is not None:
        bad("restart", "a job is not restarted: a failed run waits for its next time",
            "use retry_every for an earlier retry, or remove restart", warning=True)
    return JobSpec(schedule=m.schedule if m.every is None else None, every=m.every,
                   retry_every=m.retry_every, timezone=tz, run_on_start=m.run_on_start,
                   overlap=m.overlap, timeout=m.timeout)


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
            if ident > MAX_ID:
                bad(key, f"{key} id {value} is out of range", f"ids go up to {MAX_ID}")
                continue
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
