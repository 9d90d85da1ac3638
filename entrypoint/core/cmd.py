"""The main command (CMD): find it, start it with our stdio, signal it.

Used by the full runner (after the services are ready) and by the plain init (no
services). The CMD inherits the signal dispositions and mask entrypoint was started
with (core/signals.Original), not the ones the runner installed for itself.
"""

from __future__ import annotations

import os
import signal

from entrypoint.core import signals
from entrypoint.errors import EntrypointError

EXIT_NOT_EXECUTABLE = 126      # as a shell says it
EXIT_NOT_FOUND = 127


class CmdError(EntrypointError):
    """The CMD cannot be started: nothing was started; exit 126 or 127, as a shell."""


class CmdChild:
    """The started CMD. A plain class: the plain init must not import dataclasses."""

    def __init__(self, pid: int, popen=None):
        self.pid, self.popen = pid, popen
        self.fds: dict[str, int] = {}    # nothing to drain: the CMD writes to our stdio

    def mark_reaped(self, returncode: int) -> None:
        # Popen must never wait for this pid itself (the reaper did): give it a status.
        if self.popen is not None:
            self.popen.returncode = returncode


def resolve(word: str, search_path: str | None) -> str:
    """The path the CMD `word` runs from; CmdError (126 or 127) saying why not."""
    if "/" in word:
        if not os.path.exists(word):
            raise CmdError(f"{word}: no such file", EXIT_NOT_FOUND)
        if os.path.isdir(word):
            raise CmdError(f"{word}: is a directory, not a program", EXIT_NOT_EXECUTABLE)
        if not os.access(word, os.X_OK):
            raise CmdError(f"{word}: not executable (permission denied)", EXIT_NOT_EXECUTABLE)
        return word
    denied = None
    for directory in (search_path if search_path is not None else os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", word)
        if os.path.isfile(path):
            if os.access(path, os.X_OK):
                return path
            denied = denied or path
    if denied:
        raise CmdError(f"{word}: {denied} is not executable (permission denied)",
                         EXIT_NOT_EXECUTABLE)
    raise CmdError(f"{word}: command not found in PATH", EXIT_NOT_FOUND)


def spawn_cmd(argv: list[str], *, env: dict[str, str]) -> CmdChild:
    """Start the CMD in a process group of its own, with our stdio as it is.

    When stdin is a terminal, the CMD's group becomes the terminal's foreground group
    (as tini does), so shells get job control and Ctrl-C goes to the CMD rather than to
    us; that must happen in the child before exec (the CMD could read the terminal
    first). Popen with a preexec, not posix_spawn: glibc's posix_spawn leaves its two
    internal signals (32, 33) ignored in the child, and those survive exec.
    """
    import subprocess

    path = resolve(argv[0], env.get("PATH"))
    interactive = os.isatty(0)

    def in_child() -> None:
        os.setpgid(0, 0)
        if interactive:
            # SIGTTOU is blocked here (init) or handled (runner): tcsetpgrp from what is now
            # a background group raises it, and an inherited handler would report it to
            # the runner's loop. Block it; restore_in_child then sets the mask we got.
            signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTTOU,))
            try:
                os.tcsetpgrp(0, os.getpgrp())
            except OSError:
                pass
        signals.restore_in_child()

    try:
        popen = subprocess.Popen(list(argv), executable=path, env=env, close_fds=False,
                                 restore_signals=False, preexec_fn=in_child)
    except OSError as exc:
        raise CmdError(f"{argv[0]}: cannot run: {exc.strerror or exc}",
                       EXIT_NOT_EXECUTABLE if isinstance(exc, PermissionError)
                       else EXIT_NOT_FOUND) from None
    return CmdChild(popen.pid, popen)


def take_terminal_back() -> None:
    """After the CMD ended: make our group the terminal's foreground again, so that a
    Ctrl-C during the shutdown reaches us. SIGTTOU blocked: we ask from the background."""
    if not os.isatty(0):
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTTOU,))
    try:
        os.tcsetpgrp(0, os.getpgrp())
    except OSError:
        pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def forward(pid: int, sig: int) -> None:
    """Pass a signal on to the CMD (gone already: nothing to do)."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
