#!/usr/bin/env python3
"""Take docs/dashboard.png: the example stack (services.toml.example) in Debian's chromium.

    python3 scripts/screenshot_dashboard.py [--out docs/dashboard.png] [--width 1280]

Needs entrypoint[web], playwright and /usr/bin/chromium. Starts the runner on its own
socket, waits for the cards, shoots, then stops the runner by its pid.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=800)
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = tempfile.mkdtemp(prefix="ep-shot-")
    env = dict(os.environ, ENTRYPOINT_SOCKET=f"{tmp}/ctl.sock", ENTRYPOINT_NO_INSTALL="1")
    runner = subprocess.Popen([sys.executable, "-m", "entrypoint", "-c",
                               "services.toml.example"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                         args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            deadline = time.monotonic() + 20
            while True:
                try:
                    page.goto("http://127.0.0.1:9180/")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            page.wait_for_selector('.card[data-service="worker"] .state:text("RUNNING")',
                                   timeout=20000)
            page.wait_for_timeout(4000)     # a few log lines and a CPU reading
            page.screenshot(path=str(args.out))
            browser.close()
    finally:
        os.killpg(runner.pid, signal.SIGTERM)
        runner.wait(20)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
