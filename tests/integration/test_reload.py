"""Hot reload (CONTRACT §6, §8) on a real runner: `entrypoint reload` and SIGHUP."""

from __future__ import annotations

import re
import signal
import textwrap

import pytest

from conftest import pid_alive, service_lines, wait_until
from control_helpers import ctl, services, start_runner, wait_states

pytestmark = pytest.mark.timeout(60)


PROGRAM = ("import signal, sys, time\\n"
           "signal.signal(signal.SIGTERM, lambda *_: (print('bye {name}'), sys.exit(0)))\\n"
           "print('{says}')\\n"
           "while True: time.sleep(1)")


def service(name: str, says: str, *, depends_on: str | None = None, extra: str = "") -> str:
    """A service that prints `says`, and `bye NAME` when it is asked to stop."""
    deps = f'depends_on = "{depends_on}"\n' if depends_on else ""
    return textwrap.dedent(f"""
        [[services]]
        name = "{name}"
        command = "python3"
        args = ["-u", "-c", "{PROGRAM.format(name=name, says=says)}"]
        {deps}{extra}
    """)


def greeted(runner, *names: str) -> None:
    """Wait for each service's first line: its SIGTERM handler is in place by then."""
    for name in names:
        runner.wait_for(rf"{name} +\| {name} v1")


HEAD = "[timeouts]\nservice_shutdown_timeout = 3\n"


def test_reload_applies_only_the_difference(run_entrypoint, tmp_path, sock):
    config = tmp_path / "services.toml"
    config.write_text(HEAD + service("db", "db v1") + service("web", "web v1", depends_on="db")
                      + service("old", "old v1") + service("cache", "cache v1"))
    runner = start_runner(run_entrypoint, str(config), sock,
                          db="RUNNING", web="RUNNING", old="RUNNING", cache="RUNNING")
    greeted(runner, "db", "web", "old", "cache")
    before = services(sock)

    config.write_text(HEAD + service("db", "db v1") + service("web", "web v2", depends_on="db")
                      + service("cache", "cache v1") + service("new", "new v1"))
    done = ctl(sock, "reload")
    assert done.returncode == 0, done.stderr
    assert "added: new; removed: old; changed: web (2 unchanged)" in done.stdout
    assert "web: RUNNING" in done.stdout and "new: RUNNING" in done.stdout

    after = services(sock)
    assert list(after) == ["db", "web", "cache", "new"]          # the new config's order
    assert after["db"]["pid"] == before["db"]["pid"]            # unchanged: same process
    assert after["cache"]["pid"] == before["cache"]["pid"]
    assert after["web"]["pid"] != before["web"]["pid"] and after["web"]["state"] == "RUNNING"
    assert after["new"]["state"] == "RUNNING"
    assert not pid_alive(before["old"]["pid"]) and not pid_alive(before["web"]["pid"])
    assert service_lines(runner, "web")[:3] == ["web v1", "bye web", "web v2"]
    assert "bye old" in service_lines(runner, "old")
    # The log buffer of a changed service survives its restart; a removed one's is gone.
    assert ctl(sock, "logs", "web").stdout.splitlines() == ["web v1", "bye web", "web v2"]
    assert ctl(sock, "logs", "old").returncode == 1
    # Its history too.
    history = [h["state"] for h in services(sock)["web"]["history"]]
    assert history[:3] == ["PENDING", "STARTING", "RUNNING"] and history[-1] == "RUNNING"

    done = ctl(sock, "reload")
    assert done.returncode == 0 and "nothing changed (4 unchanged)" in done.stdout
    assert {n: s["pid"] for n, s in services(sock).items()} == \
        {n: s["pid"] for n, s in after.items()}
    # Validation ran in a child: the long-running runner never loaded pydantic.
    with open(f"/proc/{runner.pid}/maps") as maps:
        assert "pydantic_core" not in maps.read()


def test_changed_services_restart_in_dependency_order(run_entrypoint, tmp_path, sock):
    config = tmp_path / "services.toml"
    config.write_text(HEAD + service("app", "app v1", depends_on="db") + service("db", "db v1"))
    runner = start_runner(run_entrypoint, str(config), sock, db="RUNNING", app="RUNNING")
    greeted(runner, "db", "app")
    config.write_text(HEAD + service("app", "app v2", depends_on="db") + service("db", "db v2"))
    done = ctl(sock, "reload")
    assert done.returncode == 0, done.stderr
    runner.wait_for(r"app +\| app v2")
    lines = runner.lines
    at = {text: next(i for i, line in enumerate(lines) if re.search(text, line))
          for text in (r"app +\| bye app", r"db +\| bye db", r"app +\| app v2")}
    # Stopped dependents first...
    assert at[r"app +\| bye app"] < at[r"db +\| bye db"] < at[r"app +\| app v2"], "\n".join(lines)
    # ...and started dependencies first: app's process began only once db's was up.
    now = services(sock)
    db_up = now["db"]["history"][-1]
    app_starting = [h for h in now["app"]["history"] if h["state"] == "STARTING"][-1]
    assert db_up["state"] == "RUNNING" and db_up["at"] <= app_starting["at"]


def test_invalid_config_is_rejected_and_the_old_one_keeps_running(run_entrypoint, tmp_path, sock):
    config = tmp_path / "services.toml"
    config.write_text(HEAD + service("db", "db v1") + service("web", "web v1", depends_on="db"))
    runner = start_runner(run_entrypoint, str(config), sock, db="RUNNING", web="RUNNING")
    before = services(sock)
    config.write_text(HEAD + service("db", "db v2", depends_on="nginx")
                      + '[[services]]\nname = "web"\ncomand = "true"\n')
    done = ctl(sock, "reload")
    assert done.returncode == 2
    assert "reload rejected" in done.stderr and "the running one is kept" in done.stderr
    assert 'unknown service "nginx"' in done.stderr                # every problem...
    assert 'comand: unknown key (did you mean "command"?)' in done.stderr
    runner.wait_for(r"entrypoint \|   error: .*unknown service \"nginx\"")    # ...and in the log
    runner.wait_for(r"entrypoint \|   error: .*comand: unknown key")
    after = services(sock)
    assert {n: (s["pid"], s["state"]) for n, s in after.items()} == \
        {n: (s["pid"], s["state"]) for n, s in before.items()}

    config.write_text("[[services]\nbroken toml")
    done = ctl(sock, "reload")
    assert done.returncode == 2 and "TOML syntax error" in done.stderr
    assert services(sock)["db"]["pid"] == before["db"]["pid"]
    assert runner.proc.poll() is None


def test_sighup_reloads(run_entrypoint, tmp_path, sock):
    config = tmp_path / "services.toml"
    config.write_text(HEAD + service("db", "db v1") + service("web", "web v1"))
    runner = start_runner(run_entrypoint, str(config), sock, db="RUNNING", web="RUNNING")
    before = services(sock)
    config.write_text(HEAD + service("db", "db v1") + service("web", "web v2"))
    runner.signal(signal.SIGHUP)
    runner.wait_for(r"web +\| web v2")
    after = wait_states(sock, web="RUNNING")
    assert after["db"]["pid"] == before["db"]["pid"]
    assert after["web"]["pid"] != before["web"]["pid"]
    # An invalid one on SIGHUP: reported in the log, nothing changes.
    config.write_text(HEAD + service("db", "db v1", depends_on="ghost"))
    runner.signal(signal.SIGHUP)
    runner.wait_for(r"reload rejected: .*services\.toml: 1 problem")
    runner.wait_for(r'error: .*unknown service "ghost"')
    assert services(sock)["web"]["pid"] == after["web"]["pid"]


def test_reload_disables_and_enables_and_applies_timeouts(run_entrypoint, tmp_path, sock):
    config = tmp_path / "services.toml"
    config.write_text(HEAD + service("a", "a v1") + service("b", "b v1", extra="enabled = false"))
    start_runner(run_entrypoint, str(config), sock, a="RUNNING", b="DISABLED")
    config.write_text("[timeouts]\nservice_shutdown_timeout = 2\n"
                      + service("a", "a v1", extra="enabled = false") + service("b", "b v1"))
    done = ctl(sock, "reload")
    assert done.returncode == 0, done.stderr
    assert "changed: a, b (0 unchanged)" in done.stdout
    now = services(sock)
    assert now["a"]["state"] == "DISABLED" and now["b"]["state"] == "RUNNING"
    # Only the timeouts changed: no service restarts, the new value is used.
    config.write_text("[timeouts]\nservice_shutdown_timeout = 4\n"
                      + service("a", "a v1", extra="enabled = false") + service("b", "b v1"))
    done = ctl(sock, "reload")
    assert done.returncode == 0 and "nothing changed" in done.stdout
    assert services(sock)["b"]["pid"] == now["b"]["pid"]


def test_reload_without_a_config_file(run_entrypoint, tmp_path, sock):
    from control_helpers import ctl_env
    # No config: a plain init (as tini), which has no control socket to reload through.
    runner = run_entrypoint("--socket", sock, "--", "sleep", "30", env=ctl_env(sock),
                            cwd=tmp_path)
    wait_until(lambda: open(f"/proc/{runner.pid}/task/{runner.pid}/children").read().split(),
               15, what="the CMD started")
    done = ctl(sock, "reload")
    assert done.returncode == 3 and sock in done.stderr
    assert runner.proc.poll() is None
