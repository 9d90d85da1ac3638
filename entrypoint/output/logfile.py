"""Log files of services, rotated by size."""

from __future__ import annotations

import errno
import os
import stat
from typing import Callable


class LogFileError(OSError):
    """A log file problem, worded for people (`str()` is the whole message)."""

    def __str__(self) -> str:
        return self.args[0]


def others_can_write(directory: str) -> bool:
    """True when someone other than root may create or replace files in `directory`."""
    try:
        st = os.stat(directory)
    except OSError:
        return False
    return bool(st.st_uid != 0 or st.st_mode & stat.S_IWOTH
                or (st.st_mode & stat.S_IWGRP and st.st_gid != 0))


class RotatingLog:
    """Append-only log file rotated by size, like logging.handlers.RotatingFileHandler.

    `app.log` -> `app.log.1` -> ... -> `app.log.<backups>`; `backups=0` truncates in place.
    Rotation happens only between blocks, so a rotated file never ends mid-line. Errors
    are reported once through `on_error(exc)` and never raised.
    """

    def __init__(self, path: str, max_bytes: int, backups: int,
                 on_error: Callable[[Exception], None] | None = None):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = max(0, backups)
        self.on_error = on_error
        self.failed = False
        self._fd: int | None = None
        self._size = 0
        # As root, in a directory others can write, a symlink planted at our path (or at
        # a rotation target) would make us append to any file: never follow one there.
        self._nofollow = (os.geteuid() == 0
                          and others_can_write(os.path.dirname(os.path.abspath(path))))
        self._open()

    def _open(self) -> bool:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            self._fd = os.open(self.path, flags | (os.O_NOFOLLOW if self._nofollow else 0), 0o644)
            self._size = os.fstat(self._fd).st_size
            return True
        except OSError as e:
            if e.errno == errno.ELOOP and self._nofollow:
                e = LogFileError(f"{self.path} is a symbolic link in a directory that others "
                                 f"can write ({os.path.dirname(os.path.abspath(self.path))}): "
                                 f"refused, since the runner is root; point log_file at the "
                                 f"file itself, or at a directory only root can write")
            else:
                e = LogFileError(f"cannot open {self.path}: {e.strerror or e}")
            self._fail(e)
            return False

    def _fail(self, exc: Exception) -> None:
        if not self.failed and self.on_error is not None:
            self.on_error(exc)
        self.failed = True

    def _rotate(self) -> None:
        if self.backups == 0:
            os.ftruncate(self._fd, 0)
            self._size = 0
            return
        os.close(self._fd)
        self._fd = None
        for i in range(self.backups - 1, 0, -1):
            if os.path.exists(f"{self.path}.{i}"):
                os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
        os.replace(self.path, self.path + ".1")
        self._open()

    def write(self, block: bytes) -> None:
        """Append `block` (whole lines), rotating at line ends so no file passes max_bytes.

        A block may hold megabytes (one drained read burst): it is split at the last
        newline that still fits. Only a single line longer than max_bytes overflows.
        """
        if self._fd is None and not self._open():
            return
        while 0 < self.max_bytes < self._size + len(block):
            # A block that fits a fresh file starts one; a larger one fills this file first.
            room = self.max_bytes - self._size if len(block) > self.max_bytes else 0
            cut = block.rfind(b"\n", 0, room) + 1 if room > 0 else 0
            if cut == 0 and self._size == 0:
                cut = block.find(b"\n") + 1 or len(block)   # one over-long line: alone
            if cut:
                self._append(block[:cut])
                block = block[cut:]
            if not block or self._fd is None:
                return
            try:
                self._rotate()
            except OSError as e:
                self._fail(e)
                return
            if self._fd is None:
                return
        self._append(block)

    def _append(self, block: bytes) -> None:
        if self._fd is None:
            return
        try:
            view = memoryview(block)
            while view:
                n = os.write(self._fd, view)
                view, self._size = view[n:], self._size + n
        except OSError as e:
            self._fail(e)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
