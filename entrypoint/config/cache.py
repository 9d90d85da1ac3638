"""The validated config that `entrypoint check` keeps, so that `run` starts without pydantic.

Validation (pydantic, the filesystem, the user database) costs a few hundred ms; at
image build it runs anyway (`entrypoint check`). `check` writes the result as JSON
beside the config (`.services.toml.validated.json`), or, where that directory is not
writable, in a cache directory. `run` uses it only while everything the validation read
is unchanged:

- the config file and each env file, by content hash: a `COPY` in a later layer keeps
  the content but not the inode or mtime, and an edit within one mtime tick that keeps
  the size would fool mtime+size+inode; hashing a few KiB costs well under a millisecond;
- every environment variable the validation asked for (present or absent), by hash:
  `${VAR}` in the config, `KEY` alone and `${VAR}` in env files, PATH, the web face's;
- entrypoint's version and the effective uid (a root check says nothing of a non-root run).

Anything else means: validate as without a cache. A cache file is trusted only when it is
a regular file (opened with O_NOFOLLOW), owned by us or root, and writable by nobody else;
it is JSON, never pickle, and rebuilt only into the dataclasses of `spec.py`, so even a
forged one cannot run code. Nothing here imports pydantic.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping

from entrypoint import __version__
from entrypoint.config import spec as spec_module
from entrypoint.errors import Problem

try:                    # the C module directly: `hashlib` loads OpenSSL (~4 ms at start)
    from _blake2 import blake2b
except ImportError:     # pragma: no cover - other Pythons
    from hashlib import blake2b

FORMAT = 1
MAX_BYTES = 16 << 20
_DOTENV_VAR = re.compile(rb"\$\{([A-Za-z_][A-Za-z0-9_]*)")


class RecordingEnv(Mapping):
    """The environment, noting every name the validation asks for (and what it found)."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        self.used: dict[str, str | None] = {}

    def __getitem__(self, key: str) -> str:
        value = self._environ.get(key)
        self.used[key] = value
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        # Whoever lists the environment depends on all of it.
        for key in self._environ:
            self.used[key] = self._environ[key]
        return iter(list(self._environ))

    def __len__(self) -> int:
        return len(self._environ)


def _digest(data: bytes) -> str:
    return blake2b(data, digest_size=20).hexdigest()


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_BYTES)
    except OSError:
        return None


def _env_files(config) -> list[str]:
    files = {f for s in config.services for f in s.env_files}
    if config.procfile:
        files.add(os.path.join(os.path.dirname(os.path.abspath(config.source)), ".env"))
    return sorted(files)


def _key(path: str, kind: str, env_used: Mapping[str, str | None], files: list[str]) -> dict:
    """What the validation depended on, as hashes (no env value is written out)."""
    contents = {f: _read(f) for f in [os.path.abspath(path), *files]}
    return {"format": FORMAT, "version": __version__, "kind": kind, "euid": os.geteuid(),
            "files": {f: None if data is None else _digest(data) for f, data in contents.items()},
            "env": {k: None if v is None else _digest(v.encode("utf-8", "surrogateescape"))
                    for k, v in sorted(env_used.items())}}


def _dotenv_names(files: list[str]) -> set[str]:
    """Variables that python-dotenv expands in env files (it reads os.environ itself)."""
    names = set()
    for f in files:
        names.update(m.decode() for m in _DOTENV_VAR.findall(_read(f) or b""))
    return names


# ------------------------------------------------------------------ where

def locations(path: str) -> list[str]:
    """Beside the config first, then the user's cache directory (for a read-only config dir)."""
    path = os.path.abspath(path)
    head, name = os.path.split(path)
    if os.geteuid() == 0:
        cache_dir = "/var/cache/entrypoint"
    else:
        cache_dir = os.path.join(os.environ.get("XDG_CACHE_HOME")
                                 or os.path.join(os.path.expanduser("~"), ".cache"), "entrypoint")
    return [os.path.join(head, f".{name}.validated.json"),
            os.path.join(cache_dir, _digest(path.encode("utf-8", "surrogateescape")) + ".json")]


# ------------------------------------------------------------------ writing (check)

def save(path: str, kind: str, config, warnings: list[Problem],
         environ: RecordingEnv) -> str | None:
    """Write the validated form; the path written, or None when no place would take it.

    `environ` is the RecordingEnv the validation was given."""
    files = _env_files(config)
    for name in _dotenv_names(files):
        environ.get(name)               # noted, as used: its value went into the env file's
    try:
        body = {"key": _key(path, kind, environ.used, files), "config": _encode(config),
                "warnings": [list(p._key()) for p in warnings]}
        data = json.dumps(body, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        return None
    # Readable by whoever may read the config and every env file it pulled in, no more.
    mode = 0o600 | _read_bits([os.path.abspath(path), *files])
    for target in locations(path):
        try:
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            tmp = f"{target}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            try:
                os.fchmod(fd, mode)             # umask must not widen or narrow it
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, target)
            return target
        except OSError:
            try:
                os.unlink(tmp)
            except (OSError, UnboundLocalError):
                pass
    return None


def _read_bits(files: list[str]) -> int:
    bits = 0o044
    for f in files:
        try:
            bits &= os.stat(f).st_mode
        except OSError:
            pass
    return bits


# ------------------------------------------------------------------ reading (run)

def load(path: str, kind: str, environ: Mapping[str, str]):
    """(Config, warnings) from a trusted, current cache; None: validate as usual."""
    for target in locations(path):
        data = _trusted_read(target)
        if data is None:
            continue
        try:
            body = json.loads(data)
            key = body["key"]
            env_used = {k: environ.get(k) for k in key["env"]}
            files = [f for f in key["files"] if f != os.path.abspath(path)]
            if key != _key(path, kind, env_used, files):
                continue
            config = _decode(body["config"])
            warnings = [Problem(*fields) for fields in body["warnings"]]
        except Exception:       # corrupt, truncated, or of another format: validate instead
            continue
        if isinstance(config, spec_module.Config):
            return config, warnings
    return None


def _trusted_read(target: str) -> bytes | None:
    """The file's bytes if only we (or root) could have written it, else None."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid()) \
                or st.st_mode & 0o022 or st.st_size > MAX_BYTES:
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


# ------------------------------------------------------------------ the dataclasses as JSON

def _encode(value):
    if dataclasses.is_dataclass(value):
        cls = type(value)
        if getattr(spec_module, cls.__name__, None) is not cls:
            raise TypeError(f"not a spec class: {cls!r}")
        return {"@": cls.__name__, **{f.name: _encode(getattr(value, f.name))
                                      for f in dataclasses.fields(value)}}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if "@" in value:
            raise TypeError("a mapping with an '@' key")
        return {str(k): _encode(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot keep {type(value).__name__} in the cache")


def _decode(value):
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)     # the spec is frozen: tuples throughout
    if isinstance(value, dict):
        name = value.get("@")
        if name is None:
            return {k: _decode(v) for k, v in value.items()}
        cls = getattr(spec_module, name, None)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise ValueError(f"unknown class {name!r}")
        return cls(**{k: _decode(v) for k, v in value.items() if k != "@"})
    return value
