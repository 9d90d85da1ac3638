"""`entrypoint install`: make `entrypoint` reachable on PATH with a symlink.

An image often installs the package into a virtualenv (`/opt/venv/bin/entrypoint`) and
starts it by that path, so `docker exec app entrypoint list` finds nothing. The fix is a
symlink `/usr/local/bin/entrypoint` -> the console script. The runner makes it by itself
when it starts as root and `entrypoint` is not on PATH (unless --no-install or
ENTRYPOINT_NO_INSTALL=1). `ENTRYPOINT_INSTALL_DIR` changes the directory (tests use it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from entrypoint.errors import EntrypointError

DEFAULT_DIR = "/usr/local/bin"
NAME = "entrypoint"


class InstallError(EntrypointError):
    pass


def install_dir(environ=os.environ) -> str:
    return environ.get("ENTRYPOINT_INSTALL_DIR") or DEFAULT_DIR


def find_executable(argv0: str | None = None, python: str | None = None) -> str | None:
    """The `entrypoint` console script this process belongs to, as an absolute path."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    python = sys.executable if python is None else python
    candidates = []
    if os.path.basename(argv0) == NAME:
        candidates.append(argv0 if os.sep in argv0 else shutil.which(argv0))
    if python:
        candidates.append(os.path.join(os.path.dirname(python), NAME))   # the venv's bin/
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path)
    return None


def on_path(environ=os.environ) -> str | None:
    return shutil.which(NAME, path=environ.get("PATH", os.defpath))


def install(directory: str, target: str, environ=os.environ) -> tuple[str, bool]:
    """Link `directory/entrypoint` -> `target`: (link path, created). InstallError if not."""
    link = os.path.join(directory, NAME)
    if os.path.lexists(link):
        if os.path.islink(link) and os.path.realpath(link) == os.path.realpath(target):
            return link, False
        if os.path.islink(link) and not os.path.exists(link):
            try:                        # a dangling link (an old venv, say): ours to fix
                os.unlink(link)
            except OSError as exc:
                raise InstallError(f"cannot replace the broken link {link}: "
                                   f"{exc.strerror or exc}") from None
            return install(directory, target, environ)
        raise InstallError(f"{link} exists already and is not a link to {target}; "
                           f"remove it first, or add {os.path.dirname(target)} to PATH")
    try:
        os.symlink(target, link)
    except FileExistsError:             # someone else was quicker: fine if it is the same
        return install(directory, target, environ)
    except PermissionError:
        who = "root" if os.geteuid() != 0 else "write access"
        raise InstallError(f"cannot create {link}: permission denied; this needs {who} "
                           f"(e.g. `docker exec -u 0 CONTAINER {target} install`)") from None
    except FileNotFoundError:
        raise InstallError(f"cannot create {link}: {directory} does not exist") from None
    except OSError as exc:
        raise InstallError(f"cannot create {link}: {exc.strerror or exc}") from None
    return link, True


def _dir_on_path(directory: str, environ) -> bool:
    parts = environ.get("PATH", os.defpath).split(os.pathsep)
    return any(p and os.path.realpath(p) == os.path.realpath(directory) for p in parts)


def cmd_install(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="entrypoint install",
        description="Make `entrypoint` reachable on PATH: a symlink in /usr/local/bin "
                    "(or $ENTRYPOINT_INSTALL_DIR) to this installation's executable. Does "
                    "nothing when `entrypoint` is on PATH already; when another installation "
                    "is, says which and changes nothing (exit 1).")
    from entrypoint.cli import options     # --dir and its variable, from the one table

    chosen = options.add_options(parser, options.INSTALL)
    values = options.from_environment(options.parse(parser, argv), chosen, os.environ)
    directory = values.get("dir", DEFAULT_DIR)
    found = on_path()
    target = find_executable()
    if found:
        there = os.path.realpath(found)
        if target is None or there == os.path.realpath(target):
            print(f"entrypoint is on PATH already: {found}")
            return 0
        # Another installation (an older venv, say) answers to `entrypoint`: say which,
        # and leave it alone: replacing it is for the user to decide.
        shown = f"{found} -> {there}" if there != found else found
        raise InstallError(f"another entrypoint is on PATH: {shown}; this one is {target}. "
                           f"Nothing was changed; to use this one instead, remove {found} "
                           f"and run `{target} install` again")
    if target is None:
        raise InstallError(f"found no `entrypoint` executable to link to (looked at "
                           f"{sys.argv[0]} and beside {sys.executable}); run it by the "
                           f"console script's path, e.g. /opt/venv/bin/entrypoint install")
    link, created = install(directory, target)
    print(f"{'installed' if created else 'already installed:'} {link} -> {target}")
    if not _dir_on_path(directory, os.environ):
        print(f"note: {directory} is not on PATH here", file=sys.stderr)
    return 0


def auto_install(printer, environ=os.environ) -> str | None:
    """The runner, started as root from outside PATH, links itself; returns the link made."""
    if os.geteuid() != 0 or on_path(environ):
        return None
    target = find_executable()
    if target is None:
        return None
    try:
        link, created = install(install_dir(environ), target, environ)
    except InstallError as exc:
        printer.system(f"could not put entrypoint on PATH: {exc.message} "
                       f"(--no-install to skip)", "warning")
        return None
    if created:
        printer.system(f"installed {link} -> {target}, so that `docker exec CONTAINER "
                       f"entrypoint ...` works (--no-install or ENTRYPOINT_NO_INSTALL=1 to skip)")
    return link
