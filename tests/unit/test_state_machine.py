"""The state machine and the restart policy, with a fake clock and a fake spawner.

`RestartPolicy` is pure: it is fed run durations. The run loop of `Service` is driven
through its seams (`Runtime.spawn`, `Runtime.clock`): each fake child exits when the test
says, after the fake clock moved by the run's duration. No process is started here; the
real child handle is tested on real processes in tests/integration/test_child.py.
"""

from __future__ import annotations

import asyncio

import pytest

from entrypoint.config.spec import ServiceSpec, Timeouts
from entrypoint.core.reaper import ExitStatus
from entrypoint.core.restart import RestartPolicy
from entrypoint.core.service import Runtime, Service
from entrypoint.core.spawn import SpawnError
from entrypoint.core.state import ALLOWED, TERMINAL, State

pytestmark = pytest.mark.timeout(20)

FAIL = ExitStatus(1)
OK = ExitStatus(0)


def spec(**kw) -> ServiceSpec:
    base = dict(name="app", argv=("/bin/app",), restart_delay=1.0, restart_delay_max=8.0,
                restart_limit=100, stable_after=10.0)
    base.update(kw)
    return ServiceSpec(**base)


# -- the restart policy ------------------------------------------------------------------

def test_backoff_doubles_up_to_the_cap():
    policy = RestartPolicy(spec())
    delays = [policy.decide(FAIL, "", ran_for=0.1).delay for _ in range(6)]
    assert delays == [1, 2, 4, 8, 8, 8]


def test_gives_up_after_a_burst_of_quick_failures():
    policy = RestartPolicy(spec(restart_limit=3))
    first, second, third = (policy.decide(FAIL, "", ran_for=0.5) for _ in range(3))
    assert first.restart and second.restart
    assert not third.restart and third.state == "FAILED"
    assert third.reason.startswith("gave up after 3 quick failures in a row")
    assert "exit status 1" in third.reason


def test_a_stable_run_resets_the_backoff_and_the_count():
    policy = RestartPolicy(spec(restart_limit=3))
    assert policy.decide(FAIL, "", ran_for=1).delay == 1
    assert policy.decide(FAIL, "", ran_for=1).delay == 2
    stable = policy.decide(FAIL, "", ran_for=10.0)     # ran stable_after: settled
    assert stable.restart and stable.delay == 1
    assert policy.decide(FAIL, "", ran_for=1).restart  # the count started over
    assert policy.decide(FAIL, "", ran_for=1).restart
    assert not policy.decide(FAIL, "", ran_for=1).restart


@pytest.mark.parametrize("kw, status, expect", [
    (dict(), OK, (False, "STOPPED")),                         # on-failure, exit 0
    (dict(restart="always"), OK, (True, "")),
    (dict(restart="no"), FAIL, (False, "FAILED")),
    (dict(oneshot=True), OK, (False, "COMPLETED")),
    (dict(oneshot=True), FAIL, (True, "")),
    (dict(), ExitStatus(None, 9), (True, "")),                # killed by a signal
])
def test_what_ends_a_run_and_what_restarts_it(kw, status, expect):
    decision = RestartPolicy(spec(**kw)).decide(status, "", ran_for=1)
    assert (decision.restart, decision.state) == expect


def test_a_stop_request_or_a_health_restart_decides_first():
    assert RestartPolicy(spec()).decide(FAIL, "", 1, stop_requested=True).state == "STOPPED"
    assert RestartPolicy(spec(oneshot=True)).decide(OK, "", 1, stop_requested=True).state == "COMPLETED"
    assert RestartPolicy(spec(restart="no")).decide(OK, "", 1, health_restart=True).restart


def test_a_start_that_never_ran_gives_its_reason():
    decision = RestartPolicy(spec()).decide(None, "cannot start: no PTY", ran_for=0)
    assert decision.restart and decision.reason.startswith("cannot start: no PTY; restarting in 1s")


# -- the transition table ----------------------------------------------------------------

def test_every_state_has_its_transitions_and_terminal_states_only_restart_or_disable():
    assert set(ALLOWED) == set(State)
    for state in TERMINAL:
        assert ALLOWED[state] <= {State.PENDING, State.DISABLED} and State.PENDING in ALLOWED[state]
    # A job's run, whatever its outcome, ends back in SCHEDULED, never FAILED by itself.
    for state in (State.STARTING, State.RUNNING, State.STOPPING):
        assert State.SCHEDULED in ALLOWED[state]
    assert State.FAILED in ALLOWED[State.STARTING] and State.BACKOFF in ALLOWED[State.RUNNING]


# -- the run loop, with fakes -------------------------------------------------------------

class FakeChild:
    """What the run loop needs of a `Child`; it exits when `exit()` is called."""

    def __init__(self, pid: int, loop: asyncio.AbstractEventLoop):
        self.pid, self.reaped, self.stopping = pid, False, False
        self.exited: asyncio.Future = loop.create_future()
        self.signals: list[int] = []

    def exit(self, status: ExitStatus) -> None:
        self.reaped = True
        self.exited.set_result(status)

    async def finished(self) -> ExitStatus:
        return await self.exited

    def stop(self, sig, timeout, on_timeout=None):
        self.stopping = True
        self.signals.append(sig)
        self.exit(ExitStatus(None, sig))
        return self.exited

    def kill(self) -> None:
        self.signals.append(9)


class Printer:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def system(self, text: str, level: str = "info") -> None:
        self.lines.append((level, text))


class Harness:
    """One service whose runs last `durations` (fake seconds) and exit with `statuses`;
    a `SpawnError` in `statuses` is a start that fails."""

    def __init__(self, service_spec: ServiceSpec, durations, statuses):
        self.loop = asyncio.get_running_loop()
        self.now = 1000.0
        self.durations, self.statuses = list(durations), list(statuses)
        self.spawned: list[FakeChild] = []
        self.printer = Printer()
        rt = Runtime(loop=self.loop, reaper=None, printer=self.printer, timeouts=Timeouts(),
                     lookup=lambda name: None, on_change=lambda s: None,
                     outputs_for=lambda s: {}, hook_output_for=lambda s: None,
                     environ={}, spawn=self.spawn, clock=lambda: self.now)
        self.service = Service(service_spec, rt)

    def spawn(self, argv, **kwargs) -> FakeChild:
        status = self.statuses.pop(0)
        if isinstance(status, SpawnError):
            raise status
        child = FakeChild(100 + len(self.spawned), self.loop)
        self.spawned.append(child)
        duration = self.durations.pop(0)

        def end() -> None:
            self.now += duration        # the run lasted `duration` on the fake clock
            child.exit(status)

        self.loop.call_soon(end)
        return child

    def states(self) -> list[str]:
        return [state for _, state, _ in self.service.history]

    def errors(self) -> list[str]:
        return [text for level, text in self.printer.lines if level == "error"]


FAST = dict(restart_delay=0.001, restart_delay_max=0.004)


async def _run(harness: Harness) -> None:
    await asyncio.wait_for(harness.service.start(), 10)


def test_quick_failures_back_off_then_give_up():
    async def main():
        h = Harness(spec(restart_limit=3, **FAST), [0.5] * 3, [FAIL] * 3)
        await _run(h)
        assert h.service.state == State.FAILED
        assert h.service.restarts == 2
        assert h.states() == ["PENDING", "STARTING", "RUNNING", "BACKOFF", "STARTING", "RUNNING",
                              "BACKOFF", "STARTING", "RUNNING", "FAILED"]
        assert "gave up after 3 quick failures" in h.service.last_error
        assert not [e for e in h.errors() if "internal error" in e]
    asyncio.run(main())


def test_a_stable_run_in_between_lets_it_try_again():
    async def main():
        # quick, quick, stable (20 s on the fake clock), quick x3: six runs before giving up
        h = Harness(spec(restart_limit=3, **FAST), [1, 1, 20, 1, 1, 1], [FAIL] * 6)
        await _run(h)
        assert len(h.spawned) == 6 and h.service.state == State.FAILED
    asyncio.run(main())


def test_exhausted_resources_are_failed_starts_that_the_policy_retries():
    async def main():
        no_pty = SpawnError("cannot get a terminal (PTY): No space left on device (ENOSPC)")
        h = Harness(spec(**FAST), [5.0], [no_pty, no_pty, OK])
        await _run(h)
        assert h.service.state == State.STOPPED           # the third start ran, exited 0
        reasons = [reason for _, state, reason in h.service.history if state == "BACKOFF"]
        assert len(reasons) == 2 and all("No space left on device" in r for r in reasons)
        assert "cannot start: cannot get a terminal" in h.service.last_error
    asyncio.run(main())


def test_restart_no_fails_with_the_exit_status_and_oneshot_completes():
    async def main():
        h = Harness(spec(restart="no"), [1], [ExitStatus(3)])
        await _run(h)
        assert h.service.state == State.FAILED
        assert h.service.history[-1][2] == "exit status 3"
        h = Harness(spec(oneshot=True), [1], [OK])
        await _run(h)
        assert h.service.state == State.COMPLETED and h.service.completed_once
    asyncio.run(main())


def test_an_illegal_transition_is_reported_loudly_and_recorded():
    async def main():
        h = Harness(spec(), [], [])
        h.service._set_state(State.COMPLETED, "bug")      # PENDING -> COMPLETED: not allowed
        assert h.service.state == State.COMPLETED
        assert any("PENDING -> COMPLETED is not in the transition table" in e for e in h.errors())
    asyncio.run(main())
