"""scripts/bench.py's own checks: the line checker and the goal ratios (no runner started)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def payload(svc: int, seq: int) -> bytes:
    return b"s%d %08d %s" % (svc, seq, b"x" * 67)


def test_a_clean_prefixed_stream_is_all_intact(bench):
    out = b"entrypoint | starting 2 services\n" + b"".join(
        b"s%d         | %s\n" % (svc, payload(svc, i)) for i in range(100) for svc in (1, 2))
    check = bench.check_lines(out, "entrypoint", 2, 100)
    assert check == {"expected": 200, "intact": 200, "lost": 0, "cut_or_mixed": 0,
                     "duplicates": 0, "wrong_prefix": 0, "out_of_order": 0}


def test_cut_lost_mixed_and_duplicated_lines_are_counted(bench):
    lines = [b"s1         | " + payload(1, i) for i in range(10)]
    lines[3] = lines[3][:40]                              # cut
    lines[5] = b"s2         | " + payload(1, 5)           # under another service's name
    del lines[7]                                          # lost
    lines.append(lines[0])                                # duplicated
    check = bench.check_lines(b"\n".join(lines) + b"\n", "entrypoint", 1, 10)
    assert check["intact"] == 7
    assert check["lost"] == 3
    assert check["wrong_prefix"] == 1
    assert check["duplicates"] == 1
    assert check["cut_or_mixed"] >= 1


def test_unprefixed_and_honcho_formats(bench):
    raw = b"".join(payload(1, i) + b"\n" for i in range(5))
    assert bench.check_lines(raw, "supervisord", 1, 5)["intact"] == 5
    honcho = b"".join(b"12:00:01 s1.1 | " + payload(1, i) + b"\n" for i in range(5))
    assert bench.check_lines(honcho, "honcho", 1, 5)["intact"] == 5


def test_goal_ratios_pair_rounds(bench):
    samples = {"log.entrypoint_pty": [1.0, 2.0, 3.0], "log.bare_pty": [2.0, 2.0, 2.0],
               "log.supervisord": [1.0, 1.0, 1.0], "list.entrypoint": [0.05],
               "list.supervisord": [0.2, 0.2]}
    goals = {g["goal"]: g for g in bench.goals(samples, {})}
    vs_bare = goals["prefixed log throughput (PTY) vs bare PTY drain"]
    assert vs_bare["value"] == pytest.approx(1.0) and vs_bare["met"] is True
    vs_list = goals["`entrypoint list` vs `supervisorctl status`"]
    assert vs_list["value"] == pytest.approx(0.25) and vs_list["met"] is True
    assert goals["start of 50 services vs honcho"]["met"] is None     # not measured


def test_plain_init_goal_is_the_gap_to_a_bare_python_in_ms(bench):
    name = "plain init `entrypoint -- true` minus `python3 -c pass`"
    fast = {g["goal"]: g for g in bench.goals(
        {"init.entrypoint": [0.040, 0.045, 0.200], "init.python": [0.020, 0.025]}, {})}[name]
    assert fast["value"] == pytest.approx(22.5) and fast["met"] is True
    slow = {g["goal"]: g for g in bench.goals(
        {"init.entrypoint": [0.270], "init.python": [0.020]}, {})}[name]
    assert slow["value"] == pytest.approx(250.0) and slow["met"] is False
    assert {g["goal"]: g for g in bench.goals({}, {})}[name]["met"] is None


@pytest.fixture(scope="module")
def bench_ready():
    spec = importlib.util.spec_from_file_location("bench_ready", ROOT / "scripts" / "bench_ready.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readiness_latency_is_read_from_the_services_lines(bench_ready):
    out = ("entrypoint | svc: started (pid 5)\nsvc        | ready-at 100.000500\n"
           "entrypoint | svc: ready (READY=1)\ndep        | dep-at 100.003750000\n")
    assert bench_ready.latency(out) == pytest.approx(3.25, abs=1e-6)
    with pytest.raises(ValueError):
        bench_ready.latency("svc | ready-at 1.0\n")


def test_readiness_section_replaces_its_markers_only(bench_ready, tmp_path):
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\nkept\n")
    bench_ready.write_section(f"{bench_ready.BEGIN}\none\n{bench_ready.END}", md)
    bench_ready.write_section(f"{bench_ready.BEGIN}\ntwo\n{bench_ready.END}", md)
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nkept\n") and "two" in text and "one" not in text
    assert text.count(bench_ready.BEGIN) == 1
