#!/usr/bin/env python3
"""How long a cold `entrypoint list` takes against a running runner (median of N runs).

Starts a runner with three small services on a temporary socket, then times N separate
`python3 -m entrypoint list` processes (interpreter start-up included, as `docker exec`
pays it), next to a bare `python3 -c pass` for comparison. Usage:

    python3 scripts/client_latency.py [-n 10] [--command /opt/venv/bin/entrypoint]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = """
[[services]]
name = "web"
command = "sleep 1000"
[[services]]
name = "worker"
command = "sleep 1000"
depends_on = "web"
[[services]]
name = "cache"
command = "sleep 1000"
"""


def timed(argv: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()}")
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=10, help="runs to time (default 10)")
    p.add_argument("--command", help="the client to time (default: python3 -m entrypoint)")
    p.add_argument("--no-site", action="store_true",
                   help="run both with `python3 -S` (no site-packages .pth files): the "
                        "figure without what this host's site adds to every start")
    args = p.parse_args()
    python = [sys.executable, "-S"] if args.no_site else [sys.executable]
    client = [args.command] if args.command else [*python, "-m", "entrypoint"]
    with tempfile.TemporaryDirectory() as tmp:
        config, sock = os.path.join(tmp, "services.toml"), os.path.join(tmp, "ctl.sock")
        with open(config, "w") as f:
            f.write(CONFIG)
        env = {**os.environ, "PYTHONPATH": ROOT, "ENTRYPOINT_SOCKET": sock,
               "ENTRYPOINT_NO_INSTALL": "1"}
        # An installed package has its bytecode compiled (pip does it); let the warm-up
        # run write it here too, or every run would pay for compiling the modules.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        runner = subprocess.Popen([sys.executable, "-m", "entrypoint", "-c", config], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while subprocess.run([*client, "health"], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL).returncode != 0:
                if time.monotonic() > deadline or runner.poll() is not None:
                    raise SystemExit("the runner did not become healthy")
                time.sleep(0.1)
            timed([*client, "list"], env)   # warm the page cache, as a real host would be
            lists = [timed([*client, "list"], env) for _ in range(args.n)]
            bare = [timed([*python, "-c", "pass"], env) for _ in range(args.n)]
        finally:
            runner.send_signal(signal.SIGTERM)
            runner.wait(30)
    ms = lambda xs: f"median {statistics.median(xs) * 1000:.1f} ms (min {min(xs) * 1000:.1f}, max {max(xs) * 1000:.1f})"
    print(f"entrypoint list, {args.n} cold processes: {ms(lists)}")
    print(f"python3 -c pass, for comparison:       {ms(bare)}")
    print(f"difference (what entrypoint adds):     {(statistics.median(lists) - statistics.median(bare)) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
