"""The control socket's file: bind it 0600, replace a stale one, never a live one.

Kept apart from the server, which only answers on the socket this gives it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import struct
import time

from entrypoint.errors import EntrypointError, UsageError

_CRED = struct.Struct("3i")    # struct ucred: pid, uid, gid


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))


class _DirLock:
    """flock() on the socket's directory while we inspect and bind, so two runners
    starting together cannot both decide that the socket is stale. Best effort."""

    def __init__(self, directory: str):
        self.fd = None
        try:
            self.fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        deadline = time.monotonic() + 2.0
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.01)
            except OSError:
                return

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)       # closing drops the lock
            self.fd = None


def _probe(path: str) -> tuple[str, int | None]:
    """Is a runner listening at `path`? ("live", pid) | ("stale", None) | ("denied", None)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return "stale", None
    except FileNotFoundError:
        return "gone", None
    except PermissionError:
        return "denied", None
    except (socket.timeout, OSError):
        return "live", None         # cannot tell: never take a socket that may be in use
    try:
        return "live", peer_credentials(probe)[0]
    except OSError:
        return "live", None
    finally:
        probe.close()


def bind_socket(path: str, say=None) -> tuple[socket.socket, tuple[int, int]]:
    """A listening socket at `path`, mode 0600; replaces a stale one, never a live one.

    Raises EntrypointError when another runner listens there, or when the path is taken
    by something that is not a socket; UsageError (exit 2) when its directory does not
    exist. Returns the socket and its (st_dev, st_ino).
    """
    if len(os.fsencode(path)) > 107:
        raise EntrypointError(f"control socket path too long ({len(path)} bytes, at most 107): "
                              f"{path}; choose a shorter one with --socket or ENTRYPOINT_SOCKET")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):    # never create it: a typo must not make directories
        raise UsageError(f"control socket {path}: directory {directory} does not exist; "
                         f"create it, or choose another path with --socket or ENTRYPOINT_SOCKET")
    lock = _DirLock(directory)
    try:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None:
            if not stat.S_ISSOCK(mode):
                raise EntrypointError(f"{path} exists and is not a socket; remove it, or give "
                                      f"this runner another path with --socket or ENTRYPOINT_SOCKET")
            state, pid = _probe(path)
            if state == "live":
                who = f"(pid {pid}) " if pid else ""
                raise EntrypointError(
                    f"another entrypoint {who}is already listening on {path}; stop it, or give "
                    f"this one its own socket with --socket PATH or ENTRYPOINT_SOCKET=PATH")
            if state == "denied":
                raise EntrypointError(f"{path} belongs to uid {os.lstat(path).st_uid} and "
                                      f"cannot be checked; use --socket or ENTRYPOINT_SOCKET")
            if state == "stale":
                os.unlink(path)
                if say:
                    say(f"removed a stale control socket {path} (its runner is gone)")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)     # born 0600: no window with a wider mode
        try:
            sock.bind(path)
        except BaseException:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(64)
        sock.setblocking(False)
        st = os.stat(path)
        return sock, (st.st_dev, st.st_ino)
    finally:
        lock.release()
