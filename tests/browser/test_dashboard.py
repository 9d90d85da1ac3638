"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a
real stack: cards, restart and the PID changing, log filters, a crash's notice, login
and logout. Skipped when chromium, Playwright or the web extra is missing."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from control_helpers import ctl, services  # noqa: E402
from web_helpers import have_web, web_stack  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    sync_playwright = None

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sync_playwright is None, reason="needs playwright (pip install playwright)"),
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"needs {CHROMIUM} (apt-get install chromium)"),
    pytest.mark.skipif(not have_web(), reason="needs entrypoint[web]"),
]

TOKEN = "dashboard-token-0123456789"
STACK = """
[timeouts]
service_shutdown_timeout = 3
[[services]]
name = "api"
command = "sh"
args = ["-c", "echo api listening on 8080; exec sleep 1000"]
[[services]]
name = "worker"
command = "sh"
args = ["-c", "i=0; while :; do i=$((i+1)); echo processed job $i; sleep 0.2; done"]
[[services]]
name = "migrate"
command = "sh"
args = ["-c", "echo migrations applied"]
oneshot = true
[[services]]
name = "flaky"
command = "sh"
args = ["-c", "echo flaky waiting; read x; echo flaky crashing now; exit 3"]
restart = "no"
[[services]]
name = "cron-report"
command = "sh"
args = ["-c", "echo report: disk 71% full; exit 4"]
restart = "no"
"""


@pytest.fixture
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def test_cards_restart_logs_and_a_crash_notice(run_entrypoint, write_config, sock, browser,
                                               tmp_path):
    runner, base = web_stack(run_entrypoint, write_config, sock, STACK)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(base + "/")
    api = page.locator('.card[data-service="api"]')
    expect(api.locator(".state")).to_have_text("RUNNING", timeout=10000)
    for name in ("worker", "migrate", "flaky", "entrypoint-web"):
        expect(page.locator(f'.card[data-service="{name}"]')).to_be_visible()
    expect(page.locator('.card[data-service="migrate"] .state')).to_have_text("COMPLETED")
    old_pid = services(sock)["api"]["pid"]
    expect(api.locator(".pid")).to_have_text(str(old_pid))

    api.locator('button[data-action="restart"]').click()
    expect(page.locator(".notice.ok").filter(has_text="api: restart done")).to_be_visible(timeout=15000)
    new_pid = services(sock)["api"]["pid"]
    assert new_pid != old_pid
    expect(api.locator(".pid")).to_have_text(str(new_pid), timeout=2000)

    # Logs: live, filtered by service and by text.
    view = page.locator("#log-view")
    expect(view).to_contain_text("processed job", timeout=10000)
    page.select_option("#log-service", "api")
    expect(view).to_contain_text("api listening on 8080")
    expect(view).not_to_contain_text("processed job")
    page.select_option("#log-service", "")
    page.fill("#log-filter", "migrations")
    expect(view).to_contain_text("migrations applied")
    expect(view).not_to_contain_text("processed job")
    page.fill("#log-filter", "")

    # A crash shows as a notice and on its card within a second or so.
    shot = tmp_path / "dashboard.png"      # docs/dashboard.png: scripts/screenshot_dashboard.py
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    flaky_pid = services(sock)["flaky"]["pid"]
    os.kill(flaky_pid, 9)
    expect(page.locator(".notice.error").filter(has_text="flaky")).to_be_visible(timeout=3000)
    expect(page.locator('.card[data-service="flaky"] .state')).to_have_text("FAILED", timeout=1500)
    assert "Traceback" not in runner.output + runner.stderr


def test_state_changes_show_without_reload_and_actions_that_fail_say_why(
        run_entrypoint, write_config, sock, browser):
    runner, base = web_stack(run_entrypoint, write_config, sock, STACK)
    page = browser.new_page(viewport={"width": 390, "height": 844})     # a phone
    page.goto(base + "/")
    worker = page.locator('.card[data-service="worker"]')
    expect(worker.locator(".state")).to_have_text("RUNNING", timeout=10000)
    assert ctl(sock, "stop", "worker").returncode == 0
    expect(worker.locator(".state")).to_have_text("STOPPED", timeout=1500)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1   # no sideways scroll
    report = page.locator('.card[data-service="cron-report"]')
    expect(report.locator(".state")).to_have_text("FAILED")
    report.locator('button[data-action="start"]').click()
    # It exits 4 at once: the start fails, and the notice says so and why.
    failed = page.locator(".notice.error").filter(has_text="cron-report: start failed")
    expect(failed).to_be_visible(timeout=15000)
    expect(failed).to_contain_text("4")


def test_login_and_logout(run_entrypoint, write_config, sock, browser):
    runner, base = web_stack(run_entrypoint, write_config, sock, STACK, f'token = "{TOKEN}"')
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(base + "/")
    expect(page.locator("#login")).to_be_visible(timeout=10000)
    page.fill("#token", "wrong-token-0000000000")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_have_text(re.compile("failed"), timeout=5000)
    page.fill("#token", TOKEN)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login")).to_be_hidden(timeout=5000)
    api = page.locator('.card[data-service="api"]')
    expect(api.locator(".state")).to_have_text("RUNNING", timeout=10000)
    old_pid = services(sock)["api"]["pid"]
    api.locator('button[data-action="restart"]').click()      # a cookie POST with its Origin
    expect(page.locator(".notice.ok").filter(has_text="api: restart done")).to_be_visible(timeout=15000)
    assert services(sock)["api"]["pid"] != old_pid
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible(timeout=5000)
    page.reload()
    expect(page.locator("#login")).to_be_visible(timeout=5000)
    cookies = page.context.cookies()
    assert all(c["httpOnly"] for c in cookies if c["name"] == "entrypoint_session")


FLOOD = """
import sys, time
began = time.monotonic()
i = 0
while time.monotonic() - began < 6:
    for _ in range(100):
        i += 1
        sys.stdout.write(f"flood line {i}\\n")
    sys.stdout.flush()
    ahead = began + i / 10000 - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
print("flood done", i, flush=True)
time.sleep(1000)
"""


def test_the_page_stays_responsive_under_10000_lines_per_second(
        run_entrypoint, write_config, sock, browser, tmp_path):
    (tmp_path / "flood.py").write_text(FLOOD)
    stack = STACK + (f'[[services]]\nname = "flood"\ncommand = "{sys.executable}"\n'
                     f'args = ["{tmp_path / "flood.py"}"]\ntty = false\n')
    runner, base = web_stack(run_entrypoint, write_config, sock, stack)
    try:
        _flood_watched(page=browser.new_page(viewport={"width": 1280, "height": 800}),
                       base=base, sock=sock, runner=runner)
    finally:
        # With pipes (tty = false) the flood gets no SIGHUP when its runner is killed at
        # teardown: end it here, by its pid.
        flood = services(sock).get("flood", {}).get("pid") if os.path.exists(sock) else None
        if flood:
            ctl(sock, "stop", "flood")
            try:
                os.kill(flood, 9)
            except ProcessLookupError:
                pass


def _flood_watched(page, base: str, sock: str, runner) -> None:
    page.goto(base + "/")
    expect(page.locator('.card[data-service="flood"] .state')).to_have_text("RUNNING", timeout=10000)
    assert ctl(sock, "restart", "flood").returncode == 0       # a flood from now on, watched
    # Some lines are skipped on screen when frames cannot keep up (the page keeps the
    # newest): wait for any line past 10,000.
    expect(page.locator("#log-view")).to_contain_text(re.compile(r"flood line [1-9]\d{4}\b"),
                                                      timeout=15000)
    # In the middle of the flood: the page answers, keeps a bounded number of lines,
    # filters at once, and still shows a state change within a second.
    lag = page.evaluate("""() => new Promise(done => { const t = performance.now();
                             setTimeout(() => done(performance.now() - t), 0); })""")
    assert lag < 250, f"the page's event loop lagged {lag:.0f} ms"
    assert page.locator("#log-view > .l").count() <= 2000
    page.fill("#log-filter", "api listening")
    expect(page.locator("#log-view")).not_to_contain_text("flood line", timeout=1000)
    page.fill("#log-filter", "")
    assert ctl(sock, "stop", "worker").returncode == 0
    expect(page.locator('.card[data-service="worker"] .state')).to_have_text("STOPPED", timeout=1000)
    runner.wait_for(r"flood done \d+", timeout=20)
    assert page.locator("#log-view > .l").count() <= 2000
