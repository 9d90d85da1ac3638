"""The operations on what outlives a run (CONTRACT §11): the run history, and runtime
enable/disable. Part of `Operations` (operations.py), kept apart for its size."""

from __future__ import annotations

from dataclasses import replace

from entrypoint.core.order import stop_in_order
from entrypoint.core.state import State


def history(ops, names: list[str], n: int) -> dict:
    """The last `n` runs of `names` (all when empty), oldest first (CONTRACT §11).

    A name no longer in the config but still in the history (state_dir) is allowed."""
    known = set(ops.sup.services) | set(ops.sup.history.names())
    unknown = [name for name in names if name not in known]
    if unknown:
        ops.services(unknown)      # raises, listing the known services
    return {"runs": ops.sup.history.query(names or None, n)}


async def set_enabled(ops, names: list[str], enabled: bool, origin: str = "") -> dict:
    """`enable`/`disable NAME...`: kept across reloads, and restarts with state_dir.

    Disable stops the service (a job's schedule pauses) and leaves it DISABLED; enable
    starts it again (a job: back to SCHEDULED, waiting for its next time)."""
    services = ops.services(names)
    ops._refuse_when_shutting_down()
    sup = ops.sup
    reason = ops._announce(services, "enable" if enabled else "disable", origin)
    for service in services:
        sup.enabled_overrides[service.name] = enabled
        if sup.store is not None:
            sup.store.enabled(service.name, enabled)
        service.spec = replace(service.spec, enabled=enabled)
    sup.config = sup.config.with_enabled(sup.enabled_overrides)
    if not enabled:
        for service in services:
            if service.job is not None:
                service.job.pause()
        await stop_in_order(services, reason)
        for service in services:
            if service.state in (State.STOPPED, State.COMPLETED, State.FAILED, State.PENDING):
                service._set_state(State.DISABLED, reason)
        return {"services": [ops._result(s, True) for s in services]}
    ops._refuse_when_shutting_down()
    waiting = [s for s in services if not s.active]
    if not waiting:
        return {"services": [ops._result(s, True) for s in services]}
    return await ops.start_and_wait(waiting, "enable")
