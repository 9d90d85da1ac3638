"""Start processes: under a PTY or with pipes, as another user, in their own session.

`spawn()` never waits: the caller registers the pid with the reaper in the same loop
callback. The user switch happens in C inside `subprocess.Popen` (setgroups, setregid,
setreuid); the only Python run in the child is a tiny preexec that makes the PTY the
controlling terminal and puts back signal dispositions the runner changed.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import shutil
import signal
import struct
import subprocess
import termios
from dataclasses import dataclass, field

from entrypoint.errors import EntrypointError

# Signals the runner ignores; ignored dispositions survive exec, so children get them back.
_RUNNER_IGNORED = (signal.SIGTTOU, signal.SIGTTIN, signal.SIGTSTP, signal.SIGPIPE)


class SpawnError(EntrypointError):
    """A process could not be started (exec failed, unknown user, bad directory)."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    home: str


@dataclass
class Spawned:
    pid: int
    # Read ends to drain, by stream name: {"stdout": fd} under a PTY, or stdout + stderr.
    fds: dict[str, int] = field(default_factory=dict)
    popen: subprocess.Popen | None = None

    def mark_reaped(self, returncode: int) -> None:
        # Popen must never wait for this pid itself (the reaper did): give it a status so
        # neither __del__ nor subprocess._cleanup() calls waitpid on a recycled pid.
        if self.popen is not None:
            self.popen.returncode = returncode


def resolve_identity(user: str | None, group: str | None) -> Identity | None:
    """The uid, gid, supplementary groups, name and HOME for `user`/`group`, or None."""
    if user is None and group is None:
        return None
    try:
        if user is None:
            entry = pwd.getpwuid(os.getuid())
        elif user.isdigit():
            try:
                entry = pwd.getpwuid(int(user))
            except KeyError:
                return Identity(int(user), _group_id(group) if group else int(user), (), user, "/")
        else:
            entry = pwd.getpwnam(user)
    except KeyError:
        raise SpawnError(f'user "{user}" does not exist') from None
    gid = _group_id(group) if group else entry.pw_gid
    groups = tuple(os.getgrouplist(entry.pw_name, gid)) if user is not None else ()
    return Identity(entry.pw_uid, gid, groups, entry.pw_name, entry.pw_dir)


def _group_id(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise SpawnError(f'group "{group}" does not exist') from None


def child_environment(base: dict[str, str], identity: Identity | None) -> dict[str, str]:
    env = dict(base)
    if identity is not None:
        env["HOME"] = identity.home
        env["USER"] = identity.name
        env["LOGNAME"] = identity.name
    return env


def _winsize() -> bytes:
    try:
        return fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return struct.pack("HHHH", 24, 80, 0, 0)


def _restore_signals() -> None:
    for sig in _RUNNER_IGNORED:
        signal.signal(sig, signal.SIG_DFL)


def _child_with_ctty() -> None:
    # Runs in the child after setsid(): stdin is the PTY slave; adopt it as the
    # controlling terminal so the service gets job control and SIGHUP/SIGWINCH semantics.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    _restore_signals()


def spawn(
    argv: tuple[str, ...] | list[str],
    *,
    env: dict[str, str],
    cwd: str | None = None,
    identity: Identity | None = None,
    tty: bool = True,
    merge_stderr: bool = False,
    extra_fds: dict[int, int] | None = None,
) -> Spawned:
    """Start `argv` in a new session; return its pid and the fds to read its output from.

    `tty=True`: one PTY for stdin/stdout/stderr, made the controlling terminal.
    `tty=False`: stdin is /dev/null, stdout and stderr are separate pipes (one pipe when
    `merge_stderr`). `extra_fds` {target: fd}: `fd` becomes `target` in the child (an s6
    notification-fd). Raises SpawnError with a readable message when exec fails.
    """
    extra = _movable(extra_fds or {})
    user_kwargs = {}
    if identity is not None:
        user_kwargs = dict(user=identity.uid, group=identity.gid, extra_groups=list(identity.groups))
    if tty:
        # os.openpty, not pty.openpty: the latter hides the errno (ENOSPC) behind a BSD
        # fallback's "out of pty devices".
        master, slave = _resource(os.openpty, "a terminal (PTY)")
        try:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, _winsize())
            attrs = termios.tcgetattr(slave)
            attrs[1] &= ~termios.ONLCR     # "\n" stays "\n": no "\r\n" to undo per line
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
            if identity is not None and os.geteuid() == 0:
                # The terminal belongs to the service's user (as login, sshd and runc do):
                # otherwise it cannot open its own tty by name (root's, mode 0600).
                os.fchown(slave, identity.uid, -1)
            if identity is None and cwd is None:
                pid, popen = _spawn_fast(argv, env, os.ttyname(slave), None, None, extra), None
            else:
                popen = _popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                               preexec_fn=_with_fds(_child_with_ctty, extra), extra=extra,
                               **user_kwargs)
                pid = popen.pid
        except OSError as exc:
            os.close(master)
            raise SpawnError(f"cannot set up the terminal: {exc.strerror or exc}") from None
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return Spawned(pid, {"stdout": master}, popen)

    out_r, out_w = _resource(os.pipe, "a pipe")
    try:
        err_r, err_w = (None, out_w) if merge_stderr else _resource(os.pipe, "a pipe")
    except SpawnError:
        os.close(out_r)
        os.close(out_w)
        raise
    try:
        if identity is None and cwd is None and min(out_w, err_w) > 2:
            pid, popen = _spawn_fast(argv, env, None, out_w, err_w, extra), None
        else:
            popen = _popen(argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, env=env,
                           cwd=cwd, preexec_fn=_with_fds(_restore_signals, extra), extra=extra,
                           **user_kwargs)
            pid = popen.pid
    except BaseException:
        os.close(out_r)
        if err_r is not None:
            os.close(err_r)
        raise
    finally:
        os.close(out_w)
        if err_r is not None:
            os.close(err_w)
    fds = {"stdout": out_r}
    if err_r is not None:
        fds["stderr"] = err_r
    for fd in fds.values():
        os.set_blocking(fd, False)
    return Spawned(pid, fds, popen)


def _resource(make, what: str):
    """`make()`, with running out of PTYs (ENOSPC, EAGAIN), fds (EMFILE, ENFILE) or memory
    turned into a SpawnError: a failed start that the restart policy handles, never an
    error that takes the runner down."""
    try:
        return make()
    except OSError as exc:
        code = f" ({errno.errorcode.get(exc.errno, exc.errno)})" if exc.errno else ""
        raise SpawnError(f"cannot get {what}: {exc.strerror or exc}{code}") from None


_inherited_checked = False


def _close_inherited_fds_on_exec() -> None:
    """posix_spawn has no close_fds: make the fds we inherited (3 and up) close-on-exec,
    once, so that services see only 0, 1 and 2, as with Popen(close_fds=True). Every fd
    Python opens is close-on-exec already."""
    global _inherited_checked
    if _inherited_checked:
        return
    _inherited_checked = True
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
            except OSError:
                pass        # the listing's own fd, already closed


# Reset to SIG_DFL in a posix_spawn child: what the runner ignores, and what Python itself
# ignores at start-up (SIGPIPE, SIGXFSZ; Popen's restore_signals resets those).
_SPAWN_SIGDEF = tuple(dict.fromkeys((*_RUNNER_IGNORED, signal.SIGPIPE, signal.SIGXFSZ)))


def _movable(extra: dict[int, int]) -> dict[int, int]:
    """`extra`, checked: dup2(fd, fd) would leave it close-on-exec (callers avoid it)."""
    for target, fd in extra.items():
        if fd == target:
            raise SpawnError(f"internal error: fd {fd} is already fd {target}")
    return extra


def _with_fds(preexec, extra: dict[int, int]):
    if not extra:
        return preexec

    def run() -> None:
        preexec()
        for target, fd in extra.items():
            os.dup2(fd, target)     # inheritable: it survives the exec
    return run


def _spawn_fast(argv, env: dict[str, str], tty_path: str | None,
                out_w: int | None, err_w: int | None, extra: dict[int, int]) -> int:
    """Start `argv` with os.posix_spawn in a new session; return its pid.

    For the common case (no user switch, no working directory): glibc starts the child
    with CLONE_VFORK and execs it in C, so neither the runner's page tables are copied
    nor any Python runs in the child. Popen with a preexec_fn must fork() and run Python
    there, and waits for the exec: ~8 ms per service for a ~35 MB runner in a VM against
    ~1 ms here (profiled with py-spy, see docs/benchmarks.md). Under a PTY the child
    opens the slave by name after setsid(), which makes it the controlling terminal, as
    TIOCSCTTY does in the Popen path.
    """
    _close_inherited_fds_on_exec()
    path = argv[0]
    if "/" not in path:     # as Popen does: search the service's PATH, not ours
        path = shutil.which(path, path=env.get("PATH", os.defpath)) or path
    if tty_path is not None:
        actions = [(os.POSIX_SPAWN_OPEN, 0, tty_path, os.O_RDWR, 0),
                   (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2)]
    else:
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
    actions += [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in extra.items()]
    try:
        return os.posix_spawn(path, list(argv), env, file_actions=actions, setsid=True,
                              setsigdef=_SPAWN_SIGDEF)
    except FileNotFoundError as exc:
        raise SpawnError(f'"{exc.filename or argv[0]}": no such file or directory') from None
    except PermissionError as exc:
        raise SpawnError(f'"{exc.filename or argv[0]}": permission denied '
                         f"(is it executable, and readable by the service's user?)") from None
    except (OSError, ValueError) as exc:
        raise SpawnError(f'cannot start "{argv[0]}": {getattr(exc, "strerror", None) or exc}') from None


def _popen(argv, *, new_session: bool = True, extra: dict | None = None,
           **kwargs) -> subprocess.Popen:
    if extra:
        # The preexec dup2()s the extra fds into place, and close_fds would close them
        # again; every fd of ours is close-on-exec, so nothing else leaks without it.
        _close_inherited_fds_on_exec()
    try:
        return subprocess.Popen(list(argv), start_new_session=new_session,
                                close_fds=not extra, **kwargs)
    except FileNotFoundError as exc:
        missing = exc.filename or argv[0]
        if kwargs.get("cwd") and missing == kwargs["cwd"]:
            raise SpawnError(f'directory "{missing}" does not exist') from None
        raise SpawnError(f'"{missing}": no such file or directory') from None
    except PermissionError as exc:
        raise SpawnError(f'"{exc.filename or argv[0]}": permission denied '
                         f"(is it executable, and readable by the service's user?)") from None
    except OSError as exc:
        raise SpawnError(f'cannot start "{argv[0]}": {exc.strerror or exc}') from None
    except subprocess.SubprocessError as exc:
        raise SpawnError(f'cannot start "{argv[0]}": {exc}') from None

