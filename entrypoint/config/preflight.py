"""`check --strict`: each service as its own user would see it (CONTRACT §13).

The ordinary check runs as the runner (root, in an image build) and root can read and run
almost anything. Here, for each service user, a forked child drops to that user (its gid
and supplementary groups too, as the spawn does) and tries what the service will need:
its command, scripts and exec probe resolve and are executable (a script's `#!`
interpreter too), its directory exists and can be entered, its env_files can be read.
Log directories are written by the runner, so they are checked as the runner. Every
problem is collected; nothing is started.
"""

from __future__ import annotations

import json
import os
import stat

from entrypoint.config.spec import Config, ServiceSpec
from entrypoint.errors import Problem


def problems(config: Config) -> list[Problem]:
    """Every problem, for every service, as its user; [] when all is well."""
    found: list[Problem] = []
    by_identity: dict[tuple, list[ServiceSpec]] = {}
    seen_groups = set()
    for spec in config.services:
        if not spec.enabled or (spec.replica_of and spec.replica_of in seen_groups):
            continue        # one replica speaks for all: they share everything checked here
        if spec.replica_of:
            seen_groups.add(spec.replica_of)
        try:
            identity = _identity(spec)
        except KeyError as exc:
            found.append(Problem(_where(spec, "user"), f"cannot resolve {exc.args[0]}"))
            continue
        by_identity.setdefault(identity, []).append(spec)
        if spec.log_file:
            parent = os.path.dirname(spec.log_file)
            if not os.access(parent, os.W_OK | os.X_OK):
                found.append(Problem(_where(spec, "log_file"),
                                     f'directory "{parent}" is not writable by entrypoint '
                                     f"(uid {os.geteuid()})", "fix its permissions or mount"))
    for spec in config.services:
        for path in _programs(spec).values():
            if path not in FIRST_LINES and os.path.isabs(path):
                FIRST_LINES[path] = _first_line(path)
    for identity, specs in by_identity.items():
        found += _as_user(identity, specs)
    return found


def _where(spec: ServiceSpec, key: str) -> str:
    return f'service "{spec.replica_of or spec.name}": {key}'


def _identity(spec: ServiceSpec) -> tuple[int, int, tuple[int, ...], str]:
    """(uid, gid, groups, label) the service runs with; KeyError naming what is unknown."""
    import grp
    import pwd

    if spec.user is None and spec.group is None:
        return os.geteuid(), os.getegid(), tuple(os.getgroups()), f"uid {os.geteuid()}"
    if spec.user is None:
        entry = pwd.getpwuid(os.geteuid())
    elif spec.user.isdigit():
        try:
            entry = pwd.getpwuid(int(spec.user))
        except KeyError:
            gid = int(spec.group) if spec.group and spec.group.isdigit() else int(spec.user)
            return int(spec.user), gid, (), f"uid {spec.user}"
    else:
        try:
            entry = pwd.getpwnam(spec.user)
        except KeyError:
            raise KeyError(f'user "{spec.user}"') from None
    gid = entry.pw_gid
    if spec.group:
        try:
            gid = int(spec.group) if spec.group.isdigit() else grp.getgrnam(spec.group).gr_gid
        except KeyError:
            raise KeyError(f'group "{spec.group}"') from None
    groups = tuple(os.getgrouplist(entry.pw_name, gid)) if spec.user is not None else ()
    return entry.pw_uid, gid, groups, f'user "{entry.pw_name}" (uid {entry.pw_uid})'


def _as_user(identity: tuple, specs: list[ServiceSpec]) -> list[Problem]:
    """Run the checks of `specs` in a child that has become `identity`."""
    uid, gid, groups, label = identity
    if (uid, gid) == (os.geteuid(), os.getegid()):
        return [p for spec in specs for p in _check(spec, label)]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:        # the child: drop privileges for good, check, report, exit
        status = 0
        try:
            os.close(read_fd)
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            found = [p for spec in specs for p in _check(spec, label)]
            data = json.dumps([[p.where, p.message, p.hint] for p in found]).encode()
            with os.fdopen(write_fd, "wb") as out:
                out.write(data)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        return [Problem(_where(specs[0], "user"), f"could not check as {label}",
                        "is entrypoint allowed to switch users here (root, no seccomp filter)?")]
    return [Problem(where, message, hint) for where, message, hint in json.loads(data)]


def _programs(spec: ServiceSpec) -> dict[str, str]:
    """What the service executes, by config key."""
    programs = {"command": spec.argv[0] if spec.argv else None,
                "pre_script": spec.pre_script, "post_script": spec.post_script}
    if spec.healthcheck and spec.healthcheck.kind == "exec":
        programs["healthcheck.exec"] = spec.healthcheck.target[0]
    return {key: path for key, path in programs.items() if path}


def _check(spec: ServiceSpec, label: str) -> list[Problem]:
    """The checks themselves, run as the service's user (os.access uses our real ids)."""
    found: list[Problem] = []

    def bad(key: str, message: str, hint: str = "") -> None:
        found.append(Problem(_where(spec, key), f"as {label}: {message}", hint))

    for key, path in _programs(spec).items():
        _check_program(path, key, bad)
    if spec.directory:
        try:
            is_dir = stat.S_ISDIR(os.stat(spec.directory).st_mode)
        except PermissionError:
            bad("directory", f'"{spec.directory}" cannot be reached (a directory above it is '
                f"not searchable)", "chmod o+x the directories on the way")
        except OSError as exc:
            bad("directory", f'"{spec.directory}": {exc.strerror}')
        else:
            if not is_dir:
                bad("directory", f'"{spec.directory}" is not a directory')
            elif not os.access(spec.directory, os.X_OK):
                bad("directory", f'"{spec.directory}" cannot be entered',
                    "chmod o+x it, or chown it to the user")
    for path in spec.env_files:
        if not os.access(path, os.R_OK):
            bad("env_file", f'"{path}" is not readable', "chmod o+r, or chown it to the user")
    return found


def _first_line(path: str) -> bytes:
    """The start of a file, read as the runner (root): a script's `#!` line, or b""."""
    try:
        with open(path, "rb") as f:
            return f.read(256).split(b"\n", 1)[0]
    except OSError:
        return b""


def _check_program(path: str, key: str, bad, depth: int = 0) -> None:
    if not os.path.isabs(path):
        bad(key, f'"{path}" was not found in PATH')
        return
    try:
        st = os.stat(path)
    except PermissionError:
        bad(key, f'"{path}" cannot be reached (a directory above it is not searchable)',
            "chmod o+x the directories on the way")
        return
    except OSError as exc:
        bad(key, f'"{path}": {exc.strerror}')
        return
    if not stat.S_ISREG(st.st_mode):
        bad(key, f'"{path}" is not a file')
        return
    if not os.access(path, os.X_OK):
        bad(key, f'"{path}" is not executable', f"chmod +x {path}, or make it the user's")
        return
    head = FIRST_LINES.get(path, b"")
    if head.startswith(b"#!"):
        # A binary runs without read permission (mode 0711); a script's interpreter
        # must read it.
        if not os.access(path, os.R_OK):
            bad(key, f'script "{path}" is not readable', f"chmod o+r {path}")
        words = head[2:].split()
        if words and depth == 0:
            _check_program(words[0].decode("utf-8", "replace"), f"{key} (its #! interpreter)",
                           bad, depth + 1)


# First lines of every program checked, read by the runner before the fork (as root it can
# read what the user may not), so the child knows a script from a binary.
FIRST_LINES: dict[str, bytes] = {}
