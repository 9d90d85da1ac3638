#!/usr/bin/env python3
"""Readiness latency: a notify service's READY=1 to its dependent's start, against the same
stack gated by a 1 s-interval healthcheck.

    python3 scripts/bench.py --readiness            # 30 + 15 rounds (~40 s)
    python3 scripts/bench_ready.py --rounds 10      # the same, directly

Each round runs `entrypoint -c services.toml -- true` from this checkout: a service `svc`
that waits a random 0.2-1.2 s, notes the wall time and becomes ready (sends READY=1, or
starts listening on a port the healthcheck probes), and a oneshot `dep` that depends on
it and is `date +%s.%N`. The latency is dep's printed time minus svc's: it includes the
runner hearing READY=1 (or the next probe passing), waking the dependent, spawning it,
and `date` starting. Both times come from the services, read from the runner's output.
The result goes into a section of docs/benchmarks.md between markers (kept when
scripts/bench.py rewrites the rest of the file).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- readiness: begin -->", "<!-- readiness: end -->"
TARGET_MS = 5.0

NOTIFY_SVC = r"""
import os, socket, sys, time
time.sleep(float(sys.argv[1]))
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
t = time.time()
s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
print("ready-at %.6f" % t, flush=True)
time.sleep(1000)
"""

LISTEN_SVC = r"""
import socket, sys, time
time.sleep(float(sys.argv[1]))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t = time.time()
s.bind(("127.0.0.1", int(sys.argv[2])))
s.listen(64)
print("ready-at %.6f" % t, flush=True)
while True:
    s.accept()[0].close()
"""


def config(tmp: Path, kind: str, delay: float, port: int) -> Path:
    if kind == "notify":
        svc = f'args = ["{tmp / "svc.py"}", "{delay}"]\nready = "notify"'
    else:
        svc = (f'args = ["{tmp / "svc.py"}", "{delay}", "{port}"]\n'
               f'healthcheck = {{ tcp = "127.0.0.1:{port}", interval = 1, timeout = 1 }}')
    path = tmp / f"{kind}.toml"
    path.write_text(f"""
[timeouts]
service_shutdown_timeout = 2
[[services]]
name = "svc"
command = "{sys.executable}"
{svc}
[[services]]
name = "dep"
command = "date"
args = ["+dep-at %s.%N"]
oneshot = true
depends_on = "svc"
""")
    return path


def latency(output: str) -> float:
    """Milliseconds from svc's ready time to dep's start, from the runner's output."""
    ready = re.search(r"^svc\s+\| ready-at ([\d.]+)\s*$", output, re.M)
    dep = re.search(r"^dep\s+\| dep-at ([\d.]+)\s*$", output, re.M)
    if not ready or not dep:
        raise ValueError(f"no ready-at/dep-at line in:\n{output[-2000:]}")
    return (float(dep[1]) - float(ready[1])) * 1000.0


def one_round(tmp: Path, kind: str, rng: random.Random) -> float:
    (tmp / "svc.py").write_text(NOTIFY_SVC if kind == "notify" else LISTEN_SVC)
    port = _free_port()
    cfg = config(tmp, kind, round(rng.uniform(0.2, 1.2), 3), port)
    env = {**os.environ, "NO_COLOR": "1", "ENTRYPOINT_NO_INSTALL": "1",
           "ENTRYPOINT_SOCKET": str(tmp / "ctl.sock"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-m", "entrypoint", "-c", str(cfg), "--", "true"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    text = out.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"the run failed ({proc.returncode}):\n{text[-2000:]}")
    return latency(text)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(rounds: int, health_rounds: int, seed: int = 1) -> dict:
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {"notify": [], "healthcheck": []}
    with tempfile.TemporaryDirectory(prefix="ep-bench-ready-") as tmp:
        for kind, n in (("notify", rounds), ("healthcheck", health_rounds)):
            for _ in range(n):
                samples[kind].append(one_round(Path(tmp), kind, rng))
    return {"samples": samples, "rounds": rounds, "health_rounds": health_rounds,
            "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
            "python": sys.version.split()[0]}


def section(result: dict) -> str:
    n, h = result["samples"]["notify"], result["samples"]["healthcheck"]

    def row(name: str, values: list[float]) -> str:
        q = statistics.quantiles(values, n=10, method="inclusive") if len(values) >= 2 else values * 9
        return (f"| {name} | {statistics.median(values):.2f} ms | {q[8]:.2f} ms | "
                f"{min(values):.2f}-{max(values):.2f} ms | {len(values)} |")

    median = statistics.median(n)
    met = "yes" if median < TARGET_MS else "**no**"
    return "\n".join([
        BEGIN,
        "## Readiness: READY=1 to the dependent's start",
        "",
        f"Measured by `scripts/bench.py --readiness` on {result['date']} ({result['cores']} "
        f"cores, Python {result['python']}). A service becomes ready after a random 0.2-1.2 s; "
        "its dependent is `date +%s.%N`. The time is the dependent's printed time minus the "
        "moment the service became ready, both taken by the services themselves: it "
        "includes hearing the readiness, waking the dependent, spawning it, and `date` "
        "starting.",
        "",
        "| gate | median | p90 | min-max | rounds |",
        "| --- | --- | --- | --- | --- |",
        row('`ready = "notify"` (READY=1)', n),
        row("tcp healthcheck, `interval = 1`", h),
        "",
        f"Target: under {TARGET_MS:g} ms median with notify: {median:.2f} ms, met: {met}. "
        f"A 1 s-interval healthcheck waits for its next probe: "
        f"{statistics.median(h) / median:.0f}x longer at the median.",
        END,
    ])


def write_section(text: str, path: Path) -> None:
    """Put `text` between the markers of `path` (replacing the old one), else at its end."""
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + text + rest.split(END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30, help="notify rounds (default 30)")
    p.add_argument("--health-rounds", type=int, default=15,
                   help="healthcheck rounds (default 15)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--no-report", action="store_true", help="print; do not write --out")
    args = p.parse_args(argv)
    result = measure(args.rounds, args.health_rounds)
    text = section(result)
    print(text)
    print(json.dumps(result["samples"]), file=sys.stderr)
    if not args.no_report:
        write_section(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
