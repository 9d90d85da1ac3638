"""`state_dir` in the runner: read once at start, then written through the writer child.

- `load()` reads the SQLite file before the event loop starts (like the config, it is
  part of getting ready): the last runs of each service, and the enable/disable choices.
  A file that is not a database, or a directory we cannot write, is refused with a
  message: the history then lives in memory only, and nothing of the file is touched.
- `Store` sends each finished run and each enable/disable as one JSON line to the writer
  child (`store/writer.py`) over a pipe written without blocking: a slow disk never holds
  up the loop. What the pipe cannot take at once waits in a bounded buffer
  (`add_writer`); past the bound, records are dropped from the file (said once) but stay
  in memory.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sqlite3
import sys

from entrypoint.store.history import KEEP, Run

DB_NAME = "entrypoint.sqlite"
MAX_BUFFER = 4 << 20        # bytes waiting for the writer before records are dropped
CLOSE_TIMEOUT = 5.0         # the writer's last commit at shutdown
_WRITER_CODE = ("import sys; sys.path.append(sys.argv[1]); "
                "from entrypoint.store.writer import main; raise SystemExit(main(sys.argv[2]))")


class Loaded:
    """What `load` found: runs, enable/disable choices, and a refusal (why nothing is kept)."""

    def __init__(self, path: str):
        self.path = path
        self.runs: list[Run] = []
        self.enabled: dict[str, bool] = {}
        self.refusal: str = ""


def load(state_dir: str) -> Loaded:
    path = os.path.join(state_dir, DB_NAME)
    found = Loaded(path)
    if not os.path.isdir(state_dir):
        found.refusal = f'state_dir "{state_dir}" is not a directory'
    elif not os.access(state_dir, os.W_OK | os.X_OK):
        found.refusal = f'state_dir "{state_dir}" is not writable by uid {os.geteuid()}'
    elif os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        found.refusal = f'"{path}" is not readable and writable by uid {os.geteuid()}'
    if found.refusal or not os.path.exists(path):
        return found
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            found.enabled = {name: bool(on) for name, on in
                             db.execute("SELECT service, enabled FROM enabled")}
            rows = db.execute(
                "SELECT service, trigger, start, ready, end, duration, exit_code, signal, "
                "outcome, why, status, progress, planned FROM runs WHERE id IN (SELECT id FROM runs r "
                "WHERE r.service = runs.service ORDER BY id DESC LIMIT ?) ORDER BY id", (KEEP,))
            for row in rows:
                run = Run(*row[:11], planned=row[12])
                run.progress = json.loads(row[11]) if row[11] else None
                found.runs.append(run)
        finally:
            db.close()
    except (sqlite3.Error, ValueError, TypeError) as exc:
        found.refusal = f'"{path}" cannot be read ({exc}); move it away to start afresh'
        found.runs, found.enabled = [], {}
    return found


class Store:
    """The runner's side of the writer child."""

    def __init__(self, path: str, printer):
        self.path = path
        self.printer = printer
        self._fd: int | None = None
        self._child = None
        self._buffer = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dropped = 0
        self.broken = False
        self._drained: asyncio.Future | None = None    # set when the buffer empties

    def start(self, loop: asyncio.AbstractEventLoop, reaper) -> None:
        from entrypoint.core.child import Child
        from entrypoint.core.spawn import SpawnError
        from entrypoint.output.stream import StreamOutput

        self._loop = loop
        read_fd, write_fd = os.pipe()
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        said = StreamOutput(self.printer, "entrypoint", "stderr")
        try:
            self._child = Child.spawn(loop, reaper, (sys.executable, "-I", "-c", _WRITER_CODE,
                                                     root, self.path),
                                      label="history writer", outputs={"stdout": said},
                                      env={"PATH": os.defpath}, cwd="/", tty=False,
                                      merge_stderr=True, extra_fds={0: read_fd})
        except SpawnError as exc:
            os.close(write_fd)
            self._refuse(f"cannot start the history writer: {exc.message}")
            return
        finally:
            os.close(read_fd)
        os.set_blocking(write_fd, False)
        self._fd = write_fd
        self._child.exited.add_done_callback(lambda _: self._writer_ended())

    def _refuse(self, why: str) -> None:
        if not self.broken:
            self.broken = True
            self.printer.system(f"state_dir: {why}; history and enable/disable are kept in "
                                f"memory only", "warning")
        self._close_fd()

    def _writer_ended(self) -> None:
        if self._fd is not None:      # not at our asking
            self._refuse("the history writer ended")

    def run(self, run: Run) -> None:
        self._send({"t": "run", "run": run.as_dict()})

    def enabled(self, service: str, enabled: bool) -> None:
        self._send({"t": "enabled", "service": service, "enabled": enabled})

    def _send(self, record: dict) -> None:
        if self._fd is None:
            return
        data = (json.dumps(record) + "\n").encode()
        if len(self._buffer) + len(data) > MAX_BUFFER:
            self._dropped += 1
            if self._dropped == 1:
                self.printer.system("state_dir: the history writer falls behind; records are "
                                    "kept in memory only until it catches up", "warning")
            return
        waiting = bool(self._buffer)
        self._buffer += data
        if not waiting:
            self._flush()

    def _flush(self) -> None:
        while self._buffer and self._fd is not None:
            try:
                sent = os.write(self._fd, self._buffer)
            except BlockingIOError:
                self._loop.add_writer(self._fd, self._flush)
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._refuse(f"cannot send to the history writer: {exc.strerror or exc}")
                return
            del self._buffer[:sent]
        if self._fd is not None:
            self._loop.remove_writer(self._fd)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if self._loop is not None:
                self._loop.remove_writer(fd)
            os.close(fd)

    async def close(self) -> None:
        """At shutdown, before the final sweep: hand over what is left, let it commit."""
        if self._child is None:
            return
        deadline = self._loop.time() + CLOSE_TIMEOUT
        if self._buffer and self._fd is not None:   # the add_writer callback drains it
            self._drained = self._loop.create_future()
            try:
                await asyncio.wait_for(self._drained, CLOSE_TIMEOUT)
            except asyncio.TimeoutError:
                pass
        self._close_fd()
        if await self._child.run_bounded(max(0.1, deadline - self._loop.time())) is None:
            self.printer.system("state_dir: the history writer did not finish in time; the "
                                "last runs may be missing from the file", "warning")


def attach(supervisor) -> None:
    """Give a supervisor with `state_dir` its saved history and enable/disable choices
    (read now, before the loop starts) and the writer for what follows."""
    state_dir = supervisor.config.state_dir
    if not state_dir:
        return
    printer = supervisor.printer
    try:
        os.makedirs(state_dir, exist_ok=True)
    except OSError as exc:
        printer.system(f'state_dir: cannot create "{state_dir}": {exc.strerror or exc}; '
                       f"history and enable/disable are kept in memory only", "warning")
        return
    found = load(state_dir)
    if found.refusal:
        printer.system(f"state_dir: {found.refusal}; history and enable/disable are kept in "
                       f"memory only", "warning")
        return
    for run in found.runs:
        supervisor.history.add(run, persist=False)
    supervisor.enabled_overrides.update(found.enabled)
    supervisor.config = supervisor.config.with_enabled(found.enabled)
    store = Store(found.path, printer)
    supervisor.store = store
    supervisor.history.listeners.append(store.run)

    async def startup(sup) -> None:
        store.start(asyncio.get_running_loop(), sup.reaper)

    async def before_sweep(sup) -> None:
        await store.close()

    supervisor.startup_hooks.append(startup)
    supervisor.before_sweep_hooks.append(before_sweep)
