"""Stopping services in reverse dependency order: written once, for the shutdown, the
`stop`/`restart` operations and a reload."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable


async def stop_in_order(services: list, reason: str,
                        stop: Callable[..., Awaitable[None]] | None = None) -> None:
    """Stop `services`, each only after those of them that depend on it have stopped;
    independent ones in parallel (CONTRACT §4). `stop(service, reason)` replaces
    `service.stop(reason)` (the shutdown reports each stop)."""
    loop = asyncio.get_running_loop()
    names = {service.name for service in services}
    dependents: dict[str, list[str]] = {name: [] for name in names}
    for service in services:
        for dep, _ in service.spec.depends_on:
            if dep in dependents:
                dependents[dep].append(service.name)
    tasks: dict[str, asyncio.Task] = {}

    async def stop_one(service) -> None:
        waits = [tasks[name] for name in dependents[service.name]]
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)
        if stop is not None:
            await stop(service, reason)
        else:
            await service.stop(reason)

    for service in services:
        tasks[service.name] = loop.create_task(stop_one(service))
    await asyncio.gather(*tasks.values())
