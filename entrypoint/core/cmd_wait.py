"""With a CMD: the wait until every service is ready, which ends early on a failure.

Kept apart from the supervisor so that its module stays about the run as a whole; it
wakes on the services' change event, never on a timer.
"""

from __future__ import annotations

import asyncio

from entrypoint.core.state import TERMINAL, State


async def wait_until_ready(sup) -> bool:
    """True once every enabled service holds its ready condition; False (the run's end
    set) when one failed for good, ended, or --ready-timeout passed."""
    deadline = sup._loop.time() + sup.ready_timeout
    while not sup.shutting_down:
        # Any service that FAILED for good ends the wait, even one that was ready once
        # (it started, then gave up): the CMD would run without it (CONTRACT §1).
        failed = [s for s in sup.services.values() if s.spec.enabled
                  and s.state == State.FAILED and not s.spec.required]
        if failed:      # a required one ends the run by itself, with its status
            for service in failed:
                sup.printer.system(f"{service.name} FAILED before the command could "
                                   f"start: {_why(service)}", "error")
            sup._end(1, ", ".join(f'"{s.name}"' for s in failed)
                     + " FAILED before the command could start")
            return False
        waiting = sup.not_ready()
        if not waiting:
            return True
        for service in waiting:
            if service.state in TERMINAL:
                if not service.spec.required:   # a required one ends the run by itself
                    sup._end(1, f'"{service.name}" {service.state.value} before the '
                                f"command could start")
                return False
        remaining = deadline - sup._loop.time()
        if remaining <= 0:
            names = ", ".join(f"{s.name} ({s.state.value}, wants {s.ready_condition})"
                              for s in waiting)
            sup.printer.system(f"services not ready after {sup.ready_timeout:g}s "
                               f"(--ready-timeout): {names}", "error")
            for service in waiting:
                for line in sup.rings[service.name].tail(5):
                    sup.printer.system(f"  {service.name} | {line}")
            sup._end(1, "services never became ready")
            return False
        try:
            await asyncio.wait_for(sup._ready_changed.wait(), remaining)
        except asyncio.TimeoutError:
            pass
    return False

def _why(service) -> str:
    reason = service.history[-1][2] if service.history else ""
    return reason or service.last_error or "no reason given"
