"""Hot reload (`entrypoint reload`, SIGHUP): validate the new config, then apply the diff.

Services compare by their frozen `ServiceSpec`: removed ones stop and go, added ones start,
changed ones stop (dependents first) and start again with the new spec (dependencies
first: a service waits for its dependencies as at startup), unchanged ones are not touched
and keep their PID. An invalid new config changes nothing: every problem goes to the
caller and to the log, and the running config stays.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from entrypoint.errors import ConfigError, EntrypointError
from entrypoint.control.operations import OperationError
from entrypoint.config.spec import Config
from entrypoint.core.order import stop_in_order


@dataclass(frozen=True)
class Diff:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def describe(self) -> str:
        parts = [f"{label} {', '.join(names)}" for label, names in
                 (("added", self.added), ("removed", self.removed), ("changed", self.changed))
                 if names]
        parts.append(f"{len(self.unchanged)} unchanged")
        return "; ".join(parts)


def diff(old: Config, new: Config) -> Diff:
    """What changed between two configs, names in config order (removed: old order)."""
    from entrypoint.config.replicas import same_but_replicas as same   # only a reload needs it

    before = {s.name: s for s in old.services}
    after = {s.name: s for s in new.services}
    return Diff(
        added=tuple(n for n in after if n not in before),
        removed=tuple(n for n in before if n not in after),
        changed=tuple(n for n in after if n in before and not same(after[n], before[n])),
        unchanged=tuple(n for n in after if n in before and same(after[n], before[n])))


class Reloader:
    """Reloads one supervisor's config from the file it was started with."""

    def __init__(self, supervisor, operations, source: tuple[str, str] | None):
        self.sup = supervisor
        self.ops = operations
        self.source = source            # (path, "toml" | "procfile"), None: no config file
        self._lock = asyncio.Lock()

    def on_signal(self) -> None:
        """SIGHUP: reload in the background; the outcome goes to the log."""
        self.sup.printer.system("SIGHUP received: reloading the config")
        task = asyncio.get_running_loop().create_task(self.reload("SIGHUP"))
        task.add_done_callback(self._reported)

    def _reported(self, task: asyncio.Task) -> None:
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, OperationError):
            if exc.code != "invalid_config":      # that one printed its problems already
                self.sup.printer.system(f"reload: {exc.message}", "error")
        elif exc is not None:
            self.sup.printer.system(f"reload failed: internal error: {exc!r}", "error")

    async def reload(self, origin: str) -> dict:
        async with self._lock:          # one reload at a time; a second one waits
            self.sup.tell("reloading")
            try:
                return await self._reload(origin)
            finally:
                if not self.sup.shutting_down:
                    self.sup.tell("reloaded")

    async def _load(self) -> tuple[Config, list]:
        if self.source is None:
            raise OperationError("no_config", "this runner was started without a config file: "
                                              "there is nothing to reload")
        path, kind = self.source
        from entrypoint.config import isolate   # pydantic stays out of the runner, as at start

        try:
            return await isolate.load_in_child(self.sup.reaper, path, kind, self.sup.environ)
        except ConfigError as exc:
            problems = [p.render() for p in exc.problems if not p.warning]
            warnings = [p.render() for p in exc.problems if p.warning]
        except EntrypointError as exc:
            problems, warnings = [exc.message], []
        except Exception as exc:      # a bug in validation must not take the runner down
            problems, warnings = [f"internal error while validating: {exc!r}"], []
        noun = "problem" if len(problems) == 1 else "problems"
        message = f"{path}: {len(problems)} {noun}; the new config was rejected and the running one is kept"
        self.sup.printer.system("reload rejected: " + message + ":\n"
                                + "\n".join(f"  error: {p}" for p in problems), "error")
        raise OperationError("invalid_config", message, problems=problems, warnings=warnings)

    async def _reload(self, origin: str) -> dict:
        sup, printer = self.sup, self.sup.printer
        if sup.shutting_down:
            raise OperationError("shutting_down", "the runner is shutting down")
        new, warnings = await self._load()
        new = new.with_enabled(sup.enabled_overrides)     # `enable`/`disable` outlive a reload
        for problem in warnings:
            if not problem.check_only:
                printer.system(f"warning: {problem.render()}", "warning")
        d = diff(sup.config, new)
        printer.system(f"reload ({origin}): {d.describe()}")

        # Stop what goes away or changes, dependents first, with the old specs' edges.
        going = [sup.services[n] for n in (*d.removed, *d.changed) if n in sup.services]
        await stop_in_order(going, "reload")
        if sup.shutting_down:
            raise OperationError("shutting_down", "the runner began shutting down during the reload")

        # Swap the config (no await from here to the starts: nothing sees a half state).
        old_services = dict(sup.services)
        for name in d.removed:
            sup.remove_service(name, keep_ring=False)
            self.ops.index.forget(name)
        sup.config = new
        for name in d.changed:
            sup.remove_service(name, keep_ring=True)
        for spec in new.services:
            if spec.name in d.changed or spec.name in d.added:
                service = sup._add_service(spec)
                old = old_services.get(spec.name)
                if old is not None:       # keep its story: history and restart count
                    history = deque(old.history, maxlen=old.history.maxlen)
                    history.append((time.time(), service.state.value, "reloaded: config changed"))
                    service.history, service.restarts = history, old.restarts
        order = {name: i for i, name in enumerate(new.names)}
        ordered = sorted(sup.services.items(), key=lambda item: order.get(item[0], len(order)))
        sup.services.clear()                 # in place: every Runtime's lookup uses this dict
        sup.services.update(ordered)
        for service in sup.services.values():
            service.rt.timeouts = new.timeouts
        for name in d.unchanged:     # same but for the replicas it depends on: those are new
            sup.services[name].spec = new.service(name)
        sup.printer.set_names(new.names)
        self.ops.index.attach_all(sup.rings)

        starting = [sup.services[n] for n in new.names
                    if (n in d.changed or n in d.added) and sup.services[n].spec.enabled]
        result = {"source": new.source, "added": list(d.added), "removed": list(d.removed),
                  "changed": list(d.changed), "unchanged": list(d.unchanged),
                  "warnings": [p.render() for p in warnings], "services": []}
        if starting:
            try:
                result["services"] = (await self.ops.start_and_wait(starting, "reload"))["services"]
            except OperationError as exc:
                result["services"] = exc.details.get("services", [])
                printer.system(f"reload applied, but {exc.message}", "warning")
        return result


