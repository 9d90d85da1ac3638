"""The runner's process title, as `ps` shows it: `entrypoint: 5 services, 4 running`.

setproctitle is optional: without it (or where it fails) the title simply stays as it was.
"""

from __future__ import annotations

import asyncio

try:
    import setproctitle as _setproctitle
except ImportError:                       # pragma: no cover - depends on the install
    _setproctitle = None


def summary(services, shutting_down: bool = False) -> str:
    """`entrypoint: 5 services, 4 running`, plus failures and a shutdown when there are."""
    enabled = [s for s in services if s.spec.enabled]
    running = sum(1 for s in enabled if s.state == "RUNNING")     # State is a str Enum
    failed = sum(1 for s in enabled if s.state == "FAILED")
    text = f"entrypoint: {len(enabled)} service{'' if len(enabled) == 1 else 's'}, {running} running"
    if failed:
        text += f", {failed} failed"
    if shutting_down:
        text += ", shutting down"
    return text


class Title:
    """Sets the title when it changes; cheap enough to call on every state change."""

    def __init__(self) -> None:
        self.current = ""
        self._pending = False

    def set(self, text: str) -> None:
        if text == self.current:
            return
        self.current = text
        if _setproctitle is not None:
            try:
                _setproctitle.setproctitle(text)
            except Exception:             # never let cosmetics hurt PID 1
                pass

    def update(self, supervisor) -> None:
        self._pending = False
        self.set(summary(supervisor.services.values(), supervisor.shutting_down))

    def update_soon(self, supervisor) -> None:
        """Update once the current loop callback is done (many changes, one title)."""
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self.update, supervisor)
