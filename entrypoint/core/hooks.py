"""Children a service runs besides itself: pre/post scripts and exec health probes.

Each runs as the service would run (user, group, directory, environment), through the one
child handle (`core/child.py`): registered with the reaper, drained, killed on its
timeout, and killed too when the task waiting for it is cancelled (a probe of a service
that just exited), so no hook is ever left running with nobody to reap it.
"""

from __future__ import annotations

from entrypoint.core.child import Child
from entrypoint.core.reaper import ExitStatus
from entrypoint.core.spawn import SpawnError, child_environment, resolve_identity


class Capture:
    """A StreamOutput stand-in that keeps an exec probe's output instead of printing it."""

    has_partial = False

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        if self._size < 65536:
            self._chunks.append(data)
            self._size += len(data)

    def flush_partial(self) -> None:
        pass

    def close(self) -> None:
        pass

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")


async def run_hook(service, argv: tuple[str, ...], timeout: float, what: str,
                   capture: bool = False) -> tuple[ExitStatus | None, str]:
    """Run a pre/post script (or exec health probe) of `service` as the service would run.

    Its output goes to the service's log, or is returned when `capture`. The status is
    None when the hook was killed for taking longer than `timeout`.
    """
    spec, rt = service.spec, service.rt
    output = Capture() if capture else rt.hook_output_for(service)
    try:
        identity = resolve_identity(spec.user, spec.group)
        env = child_environment({**rt.environ, **spec.environment()}, identity)
        child = rt.spawn(argv, outputs={"stdout": output}, label=what, env=env,
                         cwd=spec.directory, identity=identity, tty=False, merge_stderr=True)
    except SpawnError as exc:
        service.say(f"{what}: {exc.message}", "error")
        return ExitStatus(127), exc.message
    if not capture:
        service.hook = (child, what)
    try:
        status = await child.run_bounded(timeout)
    finally:
        if not capture:
            service.hook = None
    if status is None:
        service.say(f"{what} {argv[0]} took longer than {timeout:g}s; killed", "warning")
    return status, (output.text() if capture else "")


def child_spawner(loop, reaper):
    """The production spawner for `Runtime.spawn`: `Child.spawn` on this loop and reaper."""

    def spawn(argv, *, outputs=None, label="", **kwargs) -> Child:
        return Child.spawn(loop, reaper, argv, outputs=outputs, label=label, **kwargs)

    return spawn
