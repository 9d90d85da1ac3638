"""A service's wait for its dependencies (`depends_on` with started/healthy/completed).

A function of the service rather than a method, to keep core/service.py to its run loop;
it wakes on the dependencies' change events and on the service's own stop request, never
on a timer.
"""

from __future__ import annotations

import asyncio

from entrypoint.core.state import State


async def wait_dependencies(service) -> bool:
    """Wait until every dependency of `service` holds its condition.

    True when they all do; False after a failed start (a dependency that never will, or
    dependency_wait_timeout) or a stop request, the service's state set accordingly."""
    deps = service.spec.depends_on
    if not deps:
        return True
    timeout = service.rt.timeouts.dependency_wait_timeout
    deadline = service.rt.loop.time() + timeout
    announced = False
    while True:
        waiting = []
        for dep_name, cond in deps:
            dep = service.rt.lookup(dep_name)
            held = dep.condition(cond)
            if held is False:
                return service._fail_start(f'dependency "{dep_name}" will not become {cond} '
                                           f"(it is {dep.state.value})")
            if held is None:
                waiting.append((dep, cond))
        if not waiting:
            return True
        if service._stop_requested:
            service._set_state(State.STOPPED, "stopped while waiting for dependencies")
            return False
        remaining = deadline - service.rt.loop.time()
        if remaining <= 0:
            names = ", ".join(f'"{d.name}" ({c})' for d, c in waiting)
            return service._fail_start(f"dependencies not ready after {timeout:g}s "
                                       f"(dependency_wait_timeout): {names}")
        if not announced:
            names = ", ".join(f"{d.name} ({c})" for d, c in waiting)
            service.say(f"waiting for {names}")
            announced = True
        waits = [asyncio.ensure_future(d.changed()) for d, _ in waiting]
        waits.append(asyncio.ensure_future(service._wake.wait()))
        try:
            await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
