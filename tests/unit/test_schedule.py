"""Job schedules (CONTRACT §11) as pure logic, with fake wall and monotonic clocks."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from entrypoint.config.load import load
from entrypoint.config.spec import JobSpec
from entrypoint.core.schedule import Schedule, cron_problem, parse_every
from entrypoint.errors import ConfigError

pytestmark = pytest.mark.timeout(20)


def wall(text: str, tz: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def shown(t: float, tz: str = "UTC") -> str:
    return datetime.fromtimestamp(t, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %z")


@pytest.mark.parametrize("value, seconds", [(30, 30), (2.5, 2.5), ("90s", 90), ("10m", 600),
                                            ("1h", 3600), ("1d", 86400), ("5", 5)])
def test_every_reads_seconds_and_units(value, seconds):
    assert parse_every(value) == seconds


@pytest.mark.parametrize("value", [0, -1, "0s", "10x", "", "1h30", True, [1], 10**9])
def test_every_refuses_what_is_not_a_period(value):
    with pytest.raises(ValueError):
        parse_every(value)


def test_every_runs_on_the_monotonic_clock_and_ignores_wall_jumps():
    s = Schedule(JobSpec(every=10))
    first = s.next(wall=1_000_000, mono=50, last=None)
    assert (first.at, first.wall) == (60, 1_000_010)
    # The wall clock was set back an hour meanwhile: the period is still 10 real seconds.
    second = s.next(wall=1_000_010 - 3600, mono=60, last=first.slot)
    assert second.at == 70 and second.wall == 1_000_010 - 3600 + 10


def test_every_skips_missed_slots_instead_of_bursting():
    s = Schedule(JobSpec(every=10))
    # The loop was held up for 35 s after the slot at 60: the next one is 100, not 70.
    plan = s.next(wall=2000, mono=95, last=60)
    assert plan.at == 100 and plan.wall == 2005


def test_cron_next_slot_and_aliases():
    s = Schedule(JobSpec(schedule="*/15 * * * *"))
    now = wall("2026-05-01T10:07:30")
    plan = s.next(wall=now, mono=100, last=None)
    assert shown(plan.wall) == "2026-05-01 10:15 +0000" and plan.at == 100 + 450
    hourly = Schedule(JobSpec(schedule="@hourly")).next(wall=now, mono=0, last=None)
    assert shown(hourly.wall) == "2026-05-01 11:00 +0000"


def test_cron_exactly_on_a_slot_plans_the_following_one():
    s = Schedule(JobSpec(schedule="0 * * * *"))
    slot = wall("2026-05-01T11:00:00")
    assert shown(s.next(wall=slot, mono=0, last=slot).wall) == "2026-05-01 12:00 +0000"


def test_cron_clock_set_back_does_not_run_the_same_slot_again():
    s = Schedule(JobSpec(schedule="0 * * * *"))
    slot = wall("2026-05-01T11:00:00")
    # The timer fired for 11:00, then the wall clock went back 30 minutes.
    plan = s.next(wall=slot - 1800, mono=500, last=slot)
    assert shown(plan.wall) == "2026-05-01 12:00 +0000"
    assert plan.at == 500 + 3600 + 1800          # 12:00 is 90 real minutes away now


def test_cron_clock_set_forward_plans_once_from_the_new_time():
    s = Schedule(JobSpec(schedule="0 * * * *"))
    slot = wall("2026-05-01T11:00:00")
    # A day passed on the wall clock in an instant: one next slot, no burst of 24.
    plan = s.next(wall=slot + 86400 + 60, mono=10, last=slot)
    assert shown(plan.wall) == "2026-05-02 12:00 +0000" and plan.at == 10 + 3540


def test_dst_a_skipped_time_runs_once_after_the_gap():
    s = Schedule(JobSpec(schedule="30 2 * * *", timezone="Europe/Berlin"))
    start = wall("2026-03-28T12:00:00", "Europe/Berlin")
    first = s.next(wall=start, mono=0, last=None)
    second = s.next(wall=first.wall, mono=0, last=first.slot)
    assert shown(first.wall, "Europe/Berlin") == "2026-03-29 03:00 +0200"
    assert shown(second.wall, "Europe/Berlin") == "2026-03-30 02:30 +0200"


def test_dst_a_repeated_time_runs_once():
    s = Schedule(JobSpec(schedule="30 2 * * *", timezone="Europe/Berlin"))
    first = s.next(wall=wall("2026-10-24T12:00:00", "Europe/Berlin"), mono=0, last=None)
    second = s.next(wall=first.wall, mono=0, last=first.slot)
    assert shown(first.wall, "Europe/Berlin") == "2026-10-25 02:30 +0200"
    assert shown(second.wall, "Europe/Berlin") == "2026-10-26 02:30 +0100"


def test_retry_keeps_the_schedules_place():
    s = Schedule(JobSpec(every=60, retry_every=5))
    plan = s.retry(wall=1000, mono=20, last=10)
    assert (plan.at, plan.wall, plan.slot) == (25, 1005, 25)
    cron = Schedule(JobSpec(schedule="@daily", retry_every=5))
    assert cron.retry(wall=1000, mono=20, last=900).slot == 900


@pytest.mark.parametrize("expr", ["0 0 30 2 *", "*/5 * * *", "61 * * * *", "x * * * *", "@reboot"])
def test_bad_cron_expressions_say_why(expr):
    assert expr in cron_problem(expr)


CASES = {
    'schedule = "0 0 30 2 *"': 'schedule: \'0 0 30 2 *\' is not a valid cron schedule',
    'schedule = "*/5 * * *"': "Wrong number of fields",
    'schedule = "@hourly"\ntimezone = "Mars/Olympus"': "timezone: unknown timezone 'Mars/Olympus'",
    "every = 0": "every: must be more than 0 seconds",
    'every = "10m"\nschedule = "@hourly"': "every: schedule and every are both set",
    "timeout = 5": "timeout: only a job has it",
    'every = "1m"\noverlap = "sometimes"': "overlap: expected 'skip', 'queue' or 'replace'",
}


@pytest.mark.parametrize("extra, message", CASES.items())
def test_job_config_errors_are_located(tmp_path, extra, message):
    path = tmp_path / "services.toml"
    path.write_text(f'[[services]]\nname = "job"\ncommand = "/bin/true"\n{extra}\n')
    with pytest.raises(ConfigError) as info:
        load(str(path), "toml", {})
    rendered = [p.render() for p in info.value.problems if not p.warning]
    assert any(r.startswith('services[0] "job": ') and message in r for r in rendered), rendered


def test_a_valid_job_becomes_a_job_spec(tmp_path):
    path = tmp_path / "services.toml"
    path.write_text('[[services]]\nname = "job"\ncommand = "/bin/true"\nevery = "2m"\n'
                    'retry_every = 10\ntimeout = 30\noverlap = "queue"\nrun_on_start = true\n')
    config, _ = load(str(path), "toml", {"TZ": "Europe/Paris"})
    job = config.services[0].job
    assert job == JobSpec(every=120, retry_every=10, timeout=30, overlap="queue",
                          run_on_start=True, timezone="Europe/Paris")


def test_cronsim_is_not_imported_without_a_job(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "services.toml"
    path.write_text('[[services]]\nname = "svc"\ncommand = "/bin/true"\n')
    code = ("import sys; from entrypoint.config.load import load; "
            f"load({str(path)!r}, 'toml', {{}}); print('cronsim' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "False", done.stderr
