"""Work done in a short-lived forked child, so the long-running runner stays small.

Validation needs pydantic (~20 MB, ~250 ms to import); the runner lives as long as the
container and needs only the plain dataclasses of `spec.py`. `start()` forks a child that
validates and sends the result back pickled, while the parent imports the runtime on the
other core. Call it before any thread or event loop exists.
"""

from __future__ import annotations

import os
import sys

from entrypoint.errors import ConfigError, EntrypointError, UsageError

# Modules the runner needs anyway: imported by the parent while the child validates.
RUNTIME_MODULES = ("asyncio", "entrypoint.output.stream", "entrypoint.core.supervisor", "entrypoint.control.server")


def start(func, *args, **kwargs):
    """Start `func(*args, **kwargs)` in a forked child; `.result()` returns or raises it.

    Measured: runner PSS 32 MB -> under supervisord's, and a faster start
    (docs/benchmarks.md). Where fork fails, `.result()` does the work in this process.
    """
    import pickle

    try:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
    except OSError:
        return _InProcess(func, args, kwargs)
    if pid == 0:                                    # the child: validate, answer, vanish
        status = 0
        try:
            os.close(read_fd)
            try:
                answer = ("ok", func(*args, **kwargs))
            except EntrypointError as exc:
                answer = ("error", _portable_error(exc))
            except BaseException as exc:            # a bug: report it, never a traceback
                answer = ("error", ("EntrypointError", f"internal error while validating the "
                                                       f"config: {exc!r}", 1, None))
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
            view = memoryview(data)
            while view:
                view = view[os.write(write_fd, view):]
        except BaseException:
            status = 70
        finally:
            os._exit(status)
    os.close(write_fd)
    import_asyncio_without_ssl()
    for name in RUNTIME_MODULES:                   # meanwhile, on the other core
        try:
            __import__(name)
        except ImportError:
            pass
    return _Isolated(pid, read_fd)


def import_asyncio_without_ssl() -> None:
    """Import asyncio without ssl: 4.8 MB of the runner's ~22 MB PSS (measured), for TLS
    that only an https health probe uses.

    asyncio imports ssl if it can and works without it (its `ssl` globals are None then).
    The block lasts only while asyncio is imported: a later `import ssl` gets the real
    module, and `core/health._tls_context()` hands it to asyncio before the first
    https probe. Used only in the runner, before anything else imported asyncio or ssl.
    """
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None       # `import ssl` raises ImportError while this is set
    try:
        import asyncio  # noqa: F401
    finally:
        if sys.modules.get("ssl", 0) is None:
            del sys.modules["ssl"]


class _Isolated:
    """The forked child of `start`."""

    def __init__(self, pid: int, read_fd: int):
        self.pid, self.read_fd = pid, read_fd

    def result(self):
        import pickle

        chunks = []
        while True:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except InterruptedError:
                continue
            if not chunk:
                break
            chunks.append(chunk)
        os.close(self.read_fd)
        wait_status = 0
        while True:
            try:
                _, wait_status = os.waitpid(self.pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
        if not chunks:
            raise EntrypointError(f"the config could not be validated (the validating process "
                                  f"ended with wait status {wait_status}, sending nothing)")
        kind, payload = pickle.loads(b"".join(chunks))
        if kind == "ok":
            return payload
        raise _rebuilt_error(payload)


class _InProcess:
    def __init__(self, func, args, kwargs):
        self.func, self.args, self.kwargs = func, args, kwargs

    def result(self):
        return self.func(*self.args, **self.kwargs)


def _portable_error(exc: EntrypointError) -> tuple:
    if isinstance(exc, ConfigError):
        return ("ConfigError", exc.source, exc.exit_status, list(exc.problems))
    return (type(exc).__name__, exc.message, exc.exit_status, None)


def _rebuilt_error(payload: tuple) -> EntrypointError:
    name, message, status, problems = payload
    if name == "ConfigError":
        return ConfigError(message, problems)
    cls = UsageError if name == "UsageError" else EntrypointError
    return cls(message, status)


# -- a validation child for the running runner (reload) ---------------------------------------

_MAX_ANSWER = 64 << 20


class _Collect:
    """Keeps a child's stdout whole (a StreamOutput stand-in for Drain)."""

    has_partial = False

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> None:
        if self.size < _MAX_ANSWER:
            self.chunks.append(data)
            self.size += len(data)

    def flush_partial(self) -> None:
        pass

    close = flush_partial


VALIDATE_TIMEOUT = 30.0     # a reload's validation that takes longer is killed and rejected

# The validating child is `python -I` run from "/": neither the runner's WORKDIR nor
# PYTHON* variables decide what it imports (a `tomllib.py` planted in the WORKDIR must not
# run as root on reload). The package itself is appended to sys.path, after the stdlib.
_CHILD_CODE = ("import sys; sys.path.append(sys.argv[1]); "
               "from entrypoint.config.isolate import _child_main; "
               "raise SystemExit(_child_main(sys.argv[2], sys.argv[3]))")


async def load_in_child(reaper, path: str, kind: str, environ: dict[str, str],
                        timeout: float | None = None):
    """`config.load(path, kind)` in a child process spawned and reaped like any other.

    For a reload inside the running runner: forking beside the event loop and the reaper
    would race them, and loading pydantic here would add ~20 MB for good. The child answers
    pickled on its stdout. Returns (Config, warnings) or raises the child's EntrypointError;
    a child still running after `timeout` is killed and the reload rejected.
    """
    import asyncio
    import pickle

    from entrypoint.core.child import Child

    if timeout is None:
        timeout = _validate_timeout(environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    argv = (sys.executable, "-I", "-c", _CHILD_CODE, package_root, os.path.abspath(path), kind)
    answer, errors = _Collect(), _Collect()
    child = Child.spawn(asyncio.get_running_loop(), reaper, argv, label="config validation",
                        outputs={"stdout": answer, "stderr": errors}, env=environ, cwd="/",
                        tty=False)
    status = await child.run_bounded(timeout)
    if status is None:
        raise EntrypointError(f"the config could not be validated: the validating process "
                              f"took longer than {timeout:g}s and was killed (does an "
                              f"env_file block, e.g. a FIFO or a slow network mount?)")
    try:
        kind_, payload = pickle.loads(b"".join(answer.chunks))
    except Exception:
        said = b"".join(errors.chunks).decode("utf-8", "replace").strip()[-500:]
        raise EntrypointError(f"the config could not be validated (the validating process "
                              f"ended with {status.describe()}{': ' + said if said else ''})")
    if kind_ == "ok":
        return payload
    raise _rebuilt_error(payload)


def _validate_timeout(environ: dict[str, str]) -> float:
    raw = environ.get("ENTRYPOINT_RELOAD_TIMEOUT", "").strip()
    if not raw:
        return VALIDATE_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 86400:
        raise EntrypointError(f"ENTRYPOINT_RELOAD_TIMEOUT={raw!r}: expected a number of seconds "
                              f"above 0 (default {VALIDATE_TIMEOUT:g})")
    return value


def _child_main(path: str, kind: str) -> int:
    import pickle

    from entrypoint.config import load as config

    try:
        answer = ("ok", config.load(path, kind, os.environ))
    except EntrypointError as exc:
        answer = ("error", _portable_error(exc))
    except Exception as exc:                    # a bug: report it, never a traceback
        answer = ("error", ("EntrypointError", f"internal error while validating the "
                                               f"config: {exc!r}", 1, None))
    sys.stdout.buffer.write(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.flush()
    return 0
