"""The restart policy: after a run ended, restart, and after what delay, or give up.

Pure logic, no clock of its own: the service tells it how long each run lasted. Backoff
doubles from `restart_delay` up to `restart_delay_max`; `restart_limit` quick failures in
a row (each shorter than `stable_after`) give up; a run that lasted `stable_after` resets
both the count and the delay (CONTRACT §2).
"""

from __future__ import annotations

from dataclasses import dataclass

from entrypoint.core.reaper import ExitStatus


@dataclass
class Decision:
    """What to do after a run: `end` in `state` (with `reason`), or restart after `delay`."""

    restart: bool
    delay: float = 0.0
    state: str = ""            # a State value when not restarting
    reason: str = ""


class RestartPolicy:
    def __init__(self, spec) -> None:
        self.spec = spec
        self.delay = spec.restart_delay
        self.quick_failures = 0

    def decide(self, exit_status: ExitStatus | None, error: str, ran_for: float, *,
               stop_requested: bool = False, health_restart: bool = False) -> Decision:
        """One run ended with `exit_status` (None: it never started, because of `error`)."""
        spec = self.spec
        success = exit_status is not None and exit_status.success
        why = error or (exit_status.describe() if exit_status else "did not start")
        if stop_requested:
            return Decision(False, state="COMPLETED" if spec.oneshot and success else "STOPPED",
                            reason="stopped")
        if spec.oneshot and success:
            return Decision(False, state="COMPLETED", reason="exited 0")
        if success and spec.restart != "always" and not health_restart:
            return Decision(False, state="STOPPED", reason="exited 0")
        if spec.restart == "no" and not health_restart:
            return Decision(False, state="FAILED", reason=why)
        if ran_for >= spec.stable_after:
            self.quick_failures, self.delay = 0, spec.restart_delay     # it had settled
        else:
            self.quick_failures += 1
        if self.quick_failures >= spec.restart_limit:
            return Decision(False, state="FAILED",
                            reason=f"gave up after {self.quick_failures} quick failures in a row "
                                   f"(each ran less than {spec.stable_after:g}s); last: {why}")
        delay = self.delay
        self.delay = min(self.delay * 2, spec.restart_delay_max)
        return Decision(True, delay=delay, reason=f"{why}; restarting in {delay:g}s")
