"""config.py: locating, loading and validating services.toml and Procfiles, on real files."""

from __future__ import annotations

import glob
import os
import pwd
import textwrap

import pytest

from entrypoint.config import load as config
from entrypoint.errors import ConfigError, Problem, UsageError
from entrypoint.config.spec import Config, HealthSpec, Timeouts

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root"}

SEED_NGINX_APP_WORKER = """\
[timeouts]
post_script_timeout = 5
service_shutdown_timeout = 15
global_shutdown_timeout = 45
dependency_wait_timeout = 120

[[services]]
name = "nginx"
command = "/usr/sbin/nginx"
args = ["-g", "daemon off;"]
enabled = true
required = false

[[services]]
name = "app"
command = "/usr/local/bin/myapp"
depends_on = "nginx"
wait_after = 3
enabled = true
required = true
user = "appuser"

[[services]]
name = "worker"
command = "/usr/local/bin/worker"
pre_script = "/scripts/setup-worker.sh"
pos_script = "/scripts/post-worker.sh"
log_file = "/var/log/worker.log"
enabled = true
"""

SEED_WEB_STACK = """\
[[services]]
name = "redis"
command = "/usr/bin/redis-server"
enabled = true

[[services]]
name = "db-migrate"
command = "/app/migrate"
depends_on = "redis"
wait_after = 2
enabled = true

[[services]]
name = "web"
command = "/app/server"
args = ["--port", "8080"]
depends_on = "db-migrate"
wait_after = 1
enabled = true
required = true
"""


@pytest.fixture
def write(tmp_path):
    """write(text, name="services.toml") -> path of a file in tmp_path holding `text`."""
    def write(text: str, name: str = "services.toml") -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return str(path)
    return write


def executable(path, body: str = "#!/bin/sh\nexit 0\n") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(0o755)
    return str(path)


def load(path: str, environ=None, kind: str = "toml"):
    return config.load(path, kind, ENV if environ is None else environ)


def errors(path: str, environ=None, kind: str = "toml") -> list[str]:
    """The rendered errors (not warnings) of an invalid config."""
    with pytest.raises(ConfigError) as info:
        load(path, environ, kind)
    assert info.value.source == path
    return [p.render() for p in info.value.problems if not p.warning]


def one_error(path: str, environ=None) -> Problem:
    with pytest.raises(ConfigError) as info:
        load(path, environ)
    found = [p for p in info.value.problems if not p.warning]
    assert len(found) == 1, [p.render() for p in found]
    return found[0]


def service(text: str) -> str:
    """A one-service config body with a command that exists."""
    return '[[services]]\nname = "s"\ncommand = "/bin/sleep"\n' + textwrap.dedent(text)


# ---------------------------------------------------------------- the seed examples

def does_not_exist(where: str, key: str, path: str) -> list[str]:
    """The problem a seed path gives on this box: none when the program happens to exist."""
    if os.path.exists(path):
        return []
    return [f'{where}: {key}: "{path}" does not exist (install it in the image or fix the path)']


def no_user(where: str, name: str) -> list[str]:
    try:
        pwd.getpwnam(name)
        return []
    except KeyError:
        return [f'{where}: user: no user "{name}" on this system '
                f"(create it in the image with useradd {name}, or use a numeric id)"]


def test_seed_nginx_app_worker_verbatim_reports_every_missing_thing(write):
    path = write(SEED_NGINX_APP_WORKER)
    with pytest.raises(ConfigError) as info:
        load(path)
    problems = info.value.problems
    assert [p.render() for p in problems if not p.warning] == [
        *does_not_exist('services[0] "nginx"', "command", "/usr/sbin/nginx"),
        *does_not_exist('services[1] "app"', "command", "/usr/local/bin/myapp"),
        *no_user('services[1] "app"', "appuser"),
        *does_not_exist('services[2] "worker"', "command", "/usr/local/bin/worker"),
        *does_not_exist('services[2] "worker"', "pre_script", "/scripts/setup-worker.sh"),
        *does_not_exist('services[2] "worker"', "pos_script", "/scripts/post-worker.sh"),
    ]
    warnings = [p for p in problems if p.warning]
    assert Problem('services[2] "worker"', "pos_script is read as post_script", "rename it to post_script",
                   warning=True) in warnings
    # 2 stop layers x 15 s, plus the post_script's 5 s: more than docker stop's 10 s.
    [docker] = [p for p in warnings if p.where == "timeouts"]
    assert "up to 35 s" in docker.message and "docker stop" in docker.message
    assert "docker stop -t 40" in docker.hint and "terminationGracePeriodSeconds" in docker.hint
    assert "nothing was started" in info.value.render()


def test_seed_web_stack_verbatim_reports_the_missing_programs(write):
    assert errors(write(SEED_WEB_STACK)) == [
        *does_not_exist('services[0] "redis"', "command", "/usr/bin/redis-server"),
        *does_not_exist('services[1] "db-migrate"', "command", "/app/migrate"),
        *does_not_exist('services[2] "web"', "command", "/app/server"),
    ]


def test_seed_nginx_app_worker_with_stand_in_commands_is_valid(write, tmp_path):
    script = executable(tmp_path / "scripts" / "setup-worker.sh")
    post = executable(tmp_path / "scripts" / "post-worker.sh")
    text = (SEED_NGINX_APP_WORKER
            .replace("/usr/sbin/nginx", "/bin/sleep").replace('args = ["-g", "daemon off;"]', 'args = ["1"]')
            .replace("/usr/local/bin/myapp", "/bin/sleep").replace("/usr/local/bin/worker", "/bin/true")
            .replace('user = "appuser"\n', 'user = "root"\n')
            .replace("/scripts/setup-worker.sh", script).replace("/scripts/post-worker.sh", post)
            .replace("/var/log/worker.log", str(tmp_path / "worker.log")))
    cfg, warnings = load(write(text))
    assert isinstance(cfg, Config) and not cfg.procfile
    assert cfg.names == ["nginx", "app", "worker"]
    assert cfg.timeouts == Timeouts(post_script_timeout=5, service_shutdown_timeout=15,
                                    global_shutdown_timeout=45, dependency_wait_timeout=120)
    nginx, app, worker = cfg.services
    assert nginx.argv == ("/bin/sleep", "1") and not nginx.required and nginx.restart == "on-failure"
    assert app.depends_on == (("nginx", "started"),)
    assert app.wait_after == 3.0 and app.required and app.user == "root"
    assert worker.pre_script == script and worker.post_script == post
    assert worker.log_file == str(tmp_path / "worker.log")
    assert all(p.warning for p in warnings)
    assert any("pos_script is read as post_script" in p.message for p in warnings)


def test_seed_web_stack_with_stand_in_commands_is_valid(write):
    text = SEED_WEB_STACK.replace("/usr/bin/redis-server", "/bin/sleep").replace(
        "/app/migrate", "/bin/true").replace("/app/server", "/bin/echo")
    cfg, _ = load(write(text))
    redis, migrate, web = cfg.services
    assert web.argv == ("/bin/echo", "--port", "8080")
    assert migrate.depends_on == (("redis", "started"),) and migrate.wait_after == 2.0
    assert web.depends_on == (("db-migrate", "started"),) and web.required


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(FIXTURES, "*"))))
def test_every_fixture_is_valid_and_says_its_expected_exit(path):
    with open(path) as f:
        first = f.readline()
    assert first.startswith("# expect-exit: ") and first.split(":")[1].strip().isdigit()
    where = config.locate(path, None, {})
    assert where is not None
    cfg, warnings = config.load(where[0], where[1])
    assert cfg.services and all(p.warning for p in warnings)
    assert cfg.procfile == ("Procfile" in os.path.basename(path))


# ---------------------------------------------------------------- locate()

def test_locate_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config.locate(None, None, {}) is None
    (tmp_path / "Procfile").write_text("web: true\n")
    assert config.locate(None, None, {}) == ("Procfile", "procfile")
    (tmp_path / "services.toml").write_text("")
    assert config.locate(None, None, {}) == ("services.toml", "toml")
    other = tmp_path / "other.toml"
    other.write_text("")
    assert config.locate(None, None, {"ENTRYPOINT_CONFIG": str(other)}) == (str(other), "toml")
    assert config.locate(None, "Procfile", {"ENTRYPOINT_CONFIG": str(other)}) == ("Procfile", "procfile")
    assert config.locate("services.toml", "Procfile", {"ENTRYPOINT_CONFIG": str(other)}) == ("services.toml", "toml")
    # A Procfile named with -c is still read as a Procfile.
    assert config.locate("Procfile", None, {}) == ("Procfile", "procfile")


def test_locate_explicit_paths_that_do_not_exist_are_usage_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "services.toml").write_text("")
    for args in (("nope.toml", None, {}), (None, "nope", {}), (None, None, {"ENTRYPOINT_CONFIG": "nope.toml"})):
        with pytest.raises(UsageError, match="nope.* does not exist") as info:
            config.locate(*args)
        assert info.value.exit_status == 2


def test_searched_places_are_listed_in_order():
    assert config.SEARCHED_PLACES == ["$ENTRYPOINT_CONFIG", "./services.toml",
                                      "/etc/entrypoint/services.toml", "./Procfile"]


# ---------------------------------------------------------------- reading and TOML syntax

def test_toml_syntax_error_has_line_and_column(write):
    path = write('[[services]]\nname = "a"\ncommand = /bin/true\n')
    [p] = errors(path)
    assert p.startswith("line 3, column 11: TOML syntax error: Invalid value")
    assert "the line reads: command = /bin/true" in p


def test_deeply_nested_arrays_do_not_crash(write):
    path = write("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    [p] = errors(path)
    assert "nesting too deep" in p


def test_moderately_nested_values_are_reported_not_crashed(write):
    path = write(service("args = " + "[" * 300 + "]" * 300 + "\n"))
    [p] = errors(path)
    assert p.startswith('services[0] "s": args[0]: expected a string')


def test_huge_integers_do_not_crash(write):
    [p] = errors(write("x = " + "9" * 5000 + "\n"))
    assert "TOML value not accepted" in p
    [p] = errors(write(service("wait_after = " + "9" * 400 + "\n")))
    assert p == 'services[0] "s": wait_after: a huge number seconds is more than 24 hours (durations are in seconds)'
    [p] = errors(write(service("log_max_bytes = " + "9" * 400 + "\n")))
    assert p.startswith('services[0] "s": log_max_bytes: must be between 1 and')


def test_unreadable_inputs_are_problems_not_tracebacks(write, tmp_path):
    assert errors(str(tmp_path / "missing.toml")) == ["no such file (check the path, or pass one with -c FILE)"]
    assert errors(str(tmp_path)) == ["is a directory, not a config file (name the file inside it)"]
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'# ok\nname = "caf\xe9"\n')
    assert errors(str(path)) == ["not valid UTF-8 at line 2, column 12 (save the file as UTF-8)"]


def test_permission_denied(write, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(config, "open", denied, raising=False)   # root would read any file
    assert errors(write("")) == [f"permission denied (make it readable by uid {os.geteuid()})"]


def test_empty_config_and_bom_are_valid(write, tmp_path):
    cfg, warnings = load(write(""))
    assert cfg.services == () and cfg.timeouts == Timeouts() and warnings == []
    path = tmp_path / "bom.toml"
    path.write_bytes("\ufeff[timeouts]\nglobal_shutdown_timeout = 5\n".encode())
    cfg, _ = load(str(path))
    assert cfg.timeouts.global_shutdown_timeout == 5.0


# ---------------------------------------------------------------- shape: keys, names, types

def test_unknown_keys_everywhere_with_suggestions(write):
    path = write("""\
        [timeouts]
        service_shutdown_timout = 3

        [servics]
        a = 1

        [[services]]
        name = "app"
        command = "/bin/true"
        restat = "always"
        cwd = "/"
        healthcheck = { tcp = "127.0.0.1:1", intervall = 3 }
        """)
    assert errors(path) == [
        'servics: unknown top-level key (did you mean "services"?)',
        'timeouts: service_shutdown_timout: unknown key (did you mean "service_shutdown_timeout"?)',
        'services[0] "app": healthcheck.intervall: unknown key (did you mean "interval"?)',
        'services[0] "app": restat: unknown key (did you mean "restart"?)',
        'services[0] "app": cwd: unknown key (did you mean "directory"?)',
    ]


def test_required_fields_and_name_format(write):
    path = write("""\
        [[services]]
        command = "/bin/true"

        [[services]]
        name = "web"

        [[services]]
        name = "my app"
        command = "/bin/true"

        [[services]]
        name = 5
        command = "/bin/true"
        """)
    assert errors(path) == [
        "services[0]: name: required",
        'services[1] "web": command: required',
        "services[2]: name: 'my app' is not a valid name (use only letters, digits, - and _)",
        "services[3]: name: expected a string, got 5",
    ]


def test_duplicate_names(write):
    path = write('[[services]]\nname = "a"\ncommand = "/bin/true"\n' * 2)
    assert errors(path) == ['services[1] "a": name: duplicate name "a" (services[0] already uses it; names must be unique)']


def test_services_and_timeouts_of_the_wrong_kind(write):
    assert errors(write('[services]\nname = "a"\n')) == [
        "services: expected an array of tables, got a table (write [[services]] before each service)"]
    assert errors(write('timeouts = 5\nservices = ["a"]\n')) == [
        "timeouts: expected a table, got 5 (write [timeouts])",
        "services[0]: expected a table, got 'a' (write [[services]] tables)"]


@pytest.mark.parametrize("line, message", [
    ('wait_after = "abc"', "wait_after: expected a number of seconds, got 'abc'"),
    ("wait_after = true", "wait_after: expected a number of seconds, got true"),
    ("wait_after = -1", "wait_after: must be 0 or more seconds, got -1"),
    ("restart_delay = 0", "restart_delay: must be more than 0 seconds, got 0"),
    ("stable_after = inf", "stable_after: expected a number of seconds, got inf"),
    ("stable_after = nan", "stable_after: expected a number of seconds, got nan"),
    ("restart_delay_max = 86401", "restart_delay_max: 86401 seconds is more than 24 hours (durations are in seconds)"),
    ("enabled = \"yes\"", "enabled: expected true or false, got 'yes'"),
    ("oneshot = 1", "oneshot: expected true or false, got 1"),
    ("args = \"--port 8080\"", "args: expected a list, got '--port 8080'"),
    ("args = [\"a\", 1]", "args[1]: expected a string, got 1"),
    ("restart = \"sometimes\"", "restart: expected 'no', 'on-failure' or 'always', got 'sometimes'"),
    ("log_max_bytes = 0", "log_max_bytes: must be between 1 and 9223372036854775807, got 0"),
    ("log_backups = 1.5", "log_backups: expected a whole number, got 1.5"),
    ("restart_limit = 0", "restart_limit: must be between 1 and 1000000, got 0"),
    ("user = true", "user: expected a name or a numeric id, got true"),
    ("env = [\"A=1\"]", "env: expected a table, got a list"),
    ("env = { A = [1] }", "env.A: expected a string, got a list"),
    ("env_file = 3", "env_file: expected a string or a list of strings, got 3"),
    ("depends_on = 3", "depends_on: expected a service name, a list of names or a table of name = condition, got 3"),
    ("depends_on = { s2 = \"ready\" }", "depends_on: s2: expected \"started\", \"healthy\" or \"completed\", got 'ready'"),
    ("stop_signal = \"FOO\"", "stop_signal: unknown signal 'FOO'"),
    ("stop_signal = 99", "stop_signal: unknown signal 99"),
    ("healthcheck = 5", "healthcheck: expected a table, got 5"),
])
def test_wrong_types_and_ranges(write, line, message):
    p = one_error(write(service(line + "\n")))
    assert p.render().startswith(f'services[0] "s": {message}')


def test_zero_is_allowed_for_wait_after_and_start_period(write):
    cfg, _ = load(write(service('wait_after = 0\nhealthcheck = { tcp = "h:1", start_period = 0 }\n')))
    assert cfg.services[0].wait_after == 0.0 and cfg.services[0].healthcheck.start_period == 0.0


def test_timeouts_are_durations(write):
    path = write("""\
        [timeouts]
        pre_script_timeout = 0
        post_script_timeout = "5s"
        dependency_wait_timeout = 100000
        """)
    assert errors(path) == [
        "timeouts: pre_script_timeout: must be more than 0 seconds, got 0",
        "timeouts: post_script_timeout: expected a number of seconds, got '5s'",
        "timeouts: dependency_wait_timeout: 100000 seconds is more than 24 hours (durations are in seconds)",
    ]


def test_defaults(write):
    cfg, _ = load(write(service("")))
    s = cfg.services[0]
    assert (s.enabled, s.required, s.argv, s.wait_after) == (True, False, ("/bin/sleep",), 0.0)
    assert (s.oneshot, s.tty, s.restart, s.stop_signal) == (False, True, "on-failure", "TERM")
    assert (s.log_max_bytes, s.log_backups, s.restart_delay, s.restart_delay_max, s.restart_limit,
            s.stable_after) == (10_000_000, 5, 1.0, 30.0, 5, 10.0)
    assert (s.user, s.group, s.directory, s.env, s.depends_on, s.healthcheck) == (None, None, None, (), (), None)
    assert cfg.timeouts == Timeouts()


def test_durations_accept_int_and_float(write):
    cfg, _ = load(write(service("wait_after = 1\nrestart_delay = 0.25\n")))
    assert cfg.services[0].wait_after == 1.0 and isinstance(cfg.services[0].wait_after, float)
    assert cfg.services[0].restart_delay == 0.25


@pytest.mark.parametrize("value, name", [('"TERM"', "TERM"), ('"SIGTERM"', "TERM"), ('"int"', "INT"),
                                         ('"sigquit"', "QUIT"), ("9", "KILL"), ('"15"', "TERM"),
                                         ('"usr1"', "USR1")])
def test_stop_signal_is_normalised(write, value, name):
    cfg, _ = load(write(service(f"stop_signal = {value}\n")))
    assert cfg.services[0].stop_signal == name


# ---------------------------------------------------------------- command resolution

def test_command_with_args_is_never_split(write):
    cfg, _ = load(write(service('args = ["a b", "$HOME"]\n').replace("/bin/sleep", "/bin/echo")))
    assert cfg.services[0].argv == ("/bin/echo", "a b", "$HOME")


def test_command_alone_is_split_like_a_shell(write):
    cfg, _ = load(write('[[services]]\nname = "s"\ncommand = "sleep \'1 2\' 3"\n'))
    assert cfg.services[0].argv == ("/usr/bin/sleep", "1 2", "3")


def test_command_split_error_is_located(write):
    p = one_error(write('[[services]]\nname = "s"\ncommand = "sleep \'1"\n'))
    assert p.where == 'services[0] "s": command'
    assert p.message == 'cannot split "sleep \'1": No closing quotation'


def test_shell_true_with_args_is_a_contradiction(write):
    # args run directly, never through a shell: with shell = true one of them would be ignored.
    p = one_error(write('[[services]]\nname = "s"\ncommand = "echo $HOME | tr a b"\nshell = true\n'
                        'args = ["x y", "z"]\n'))
    assert p.render().startswith('services[0] "s": shell: shell = true cannot be used with args (')
    cfg, _ = load(write('[[services]]\nname = "s"\ncommand = "echo $HOME | tr a b"\nshell = true\n'))
    assert cfg.services[0].argv == ("/bin/sh", "-c", "echo $HOME | tr a b")


def test_command_not_found_in_path_suggests_and_hints(write, tmp_path):
    bin_dir = tmp_path / "bin"
    executable(bin_dir / "python3")
    p = one_error(write('[[services]]\nname = "db"\ncommand = "/bin/true"\n'
                        '[[services]]\nname = "web"\ncommand = "pythn3 -m http.server"\n'),
                  {"PATH": str(bin_dir)})
    assert p.render() == ('services[1] "web": command: "pythn3" not found in PATH '
                          '(did you mean "python3"? otherwise use an absolute path or add its directory to PATH)')
    p = one_error(write('[[services]]\nname = "web"\ncommand = "zzqqxx"\n'), {"PATH": str(bin_dir)})
    assert p.hint == "use an absolute path or add its directory to PATH"


def test_bare_names_are_found_in_the_services_own_path(write, tmp_path):
    tool = executable(tmp_path / "own" / "mytool")
    path = write(f'[[services]]\nname = "s"\ncommand = "mytool"\nenv = {{ PATH = "{tmp_path / "own"}" }}\n')
    cfg, _ = load(path, {"PATH": "/bin"})
    assert cfg.services[0].argv == (tool,)
    with pytest.raises(ConfigError):   # not in entrypoint's own PATH
        load(write('[[services]]\nname = "s"\ncommand = "mytool"\n'), {"PATH": "/bin"})


def test_relative_command_is_relative_to_directory_else_the_config_dir(write, tmp_path):
    in_config_dir = executable(tmp_path / "bin" / "run")
    in_directory = executable(tmp_path / "srv" / "bin" / "run")
    cfg, _ = load(write('[[services]]\nname = "a"\ncommand = "./bin/run"\n'
                        '[[services]]\nname = "b"\ncommand = "bin/run"\ndirectory = "srv"\n'))
    a, b = cfg.services
    assert a.argv == (in_config_dir,) and a.directory is None
    assert b.argv == (in_directory,) and b.directory == str(tmp_path / "srv")


def test_command_that_is_not_executable_or_is_a_directory(write, tmp_path):
    plain = tmp_path / "plain.sh"
    plain.write_text("echo hi\n")
    assert errors(write(f'[[services]]\nname = "a"\ncommand = "{plain}"\n'
                        f'[[services]]\nname = "b"\ncommand = "{tmp_path}"\n'
                        '[[services]]\nname = "c"\ncommand = "  "\n')) == [
        f'services[0] "a": command: "{plain}" is not executable (chmod +x {plain})',
        f'services[1] "b": command: "{tmp_path}" is not a file (name the program itself)',
        'services[2] "c": command: is empty (name the program to run)',
    ]


def test_relative_command_message_shows_where_it_looked(write, tmp_path):
    p = one_error(write('[[services]]\nname = "a"\ncommand = "./missing"\n'))
    assert p.message == f'"./missing" ({tmp_path / "missing"}) does not exist'


# ---------------------------------------------------------------- interpolation

def test_interpolation_in_every_string_but_name(write, tmp_path):
    (tmp_path / "data").mkdir()
    path = write("""\
        [[services]]
        name = "s${X}"
        command = "${BIN:-/bin}/echo"
        args = ["${GREETING}", "${MISSING:-fallback}", "$$HOME", "$HOME", "${EMPTY:-empty-default}", "${EMPTY-kept}"]
        directory = "${BASE}/data"
        env = { URL = "http://${HOST:-localhost}:${PORT:-80}/", NESTED = "${NOPE:-${GREETING}!}" }
        healthcheck = { tcp = "${HOST:-127.0.0.1}:${PORT}" }
        """)
    with pytest.raises(ConfigError):   # the name is not interpolated, and "s${X}" is not a valid name
        load(path, {**ENV, "GREETING": "hi", "PORT": "8080", "BASE": str(tmp_path), "EMPTY": ""})
    with open(path) as f:
        path = write(f.read().replace("s${X}", "s"))
    cfg, warnings = load(path, {**ENV, "GREETING": "hi", "PORT": "8080", "BASE": str(tmp_path), "EMPTY": ""})
    s = cfg.services[0]
    assert s.argv == ("/bin/echo", "hi", "fallback", "$HOME", "$HOME", "empty-default", "")
    assert s.directory == str(tmp_path / "data")
    assert s.environment() == {"URL": "http://localhost:8080/", "NESTED": "hi!"}
    assert s.healthcheck.target == "127.0.0.1:8080"
    assert warnings == [p for p in warnings if p.where == "timeouts"]


def test_undefined_variable_becomes_empty_with_a_warning(write):
    cfg, warnings = load(write(service('env = { A = "x${UNSET_VAR}y" }\n')))
    assert cfg.services[0].environment() == {"A": "xy"}
    assert Problem('services[0] "s": env.A', '${UNSET_VAR} is not set; using ""',
                   "set UNSET_VAR in entrypoint's environment or write ${UNSET_VAR:-default}",
                   warning=True) in warnings


@pytest.mark.parametrize("text, message", [
    ("${BAD", "unterminated ${ in '${BAD'"),
    ("${}", "malformed ${}"),
    ("${1X}", "malformed ${1X}"),
    ("${A B}", "malformed ${A B}"),
    ("${REQUIRED:?set it please}", "${REQUIRED} is not set: set it please"),
])
def test_malformed_interpolation_is_an_error(write, text, message):
    p = one_error(write(service(f'env = {{ A = "{text}" }}\n')))
    assert (p.where, p.message) == ('services[0] "s": env.A', message)


def test_interpolation_defaults_to_os_environ(write, monkeypatch):
    monkeypatch.setenv("EP_TEST_VALUE", "from-os")
    cfg, _ = config.load(write(service('env = { A = "${EP_TEST_VALUE}" }\n')))
    assert cfg.services[0].environment() == {"A": "from-os"}


def test_nul_characters_are_rejected(write):
    p = one_error(write(service('env = { A = "x\\u0000y" }\n')))
    assert p.render() == 'services[0] "s": env.A: contains a NUL character (remove it)'


# ---------------------------------------------------------------- env and env_file

def test_env_values_are_converted_to_strings(write):
    cfg, _ = load(write(service("env = { N = 1, F = 1.5, T = true, OFF = false, S = \"x\" }\n")))
    assert cfg.services[0].env == (("N", "1"), ("F", "1.5"), ("T", "true"), ("OFF", "false"), ("S", "x"))


def test_env_file_relative_to_the_config_dir_then_env_overrides(write, tmp_path):
    write("A=from-file\nB='two words'\nPASSTHROUGH\n# comment\n", name="conf/app.env")
    write("C=3\n", name="conf/more.env")
    path = write(service('env_file = ["app.env", "more.env"]\nenv = { A = "from-env", D = "4" }\n'),
                 name="conf/services.toml")
    cfg, _ = load(path, {**ENV, "PASSTHROUGH": "yes"})
    assert cfg.services[0].env == (("A", "from-env"), ("B", "two words"), ("PASSTHROUGH", "yes"),
                                   ("C", "3"), ("D", "4"))


def test_env_file_missing_or_unreadable(write, tmp_path):
    (tmp_path / "bad.env").write_bytes(b"A=\xff\xfe\n")
    path = write(service('env_file = ".env"\n') + '[[services]]\nname = "t"\ncommand = "/bin/true"\n'
                 'env_file = ["bad.env", "${DIR:-nowhere}/x.env"]\n')
    found = errors(path)
    assert found[0] == f'services[0] "s": env_file: "{tmp_path / ".env"}" does not exist (create it or remove env_file)'
    assert found[1].startswith(f'services[1] "t": env_file[0]: cannot read "{tmp_path / "bad.env"}"')
    assert found[2] == (f'services[1] "t": env_file[1]: "{tmp_path / "nowhere" / "x.env"}" does not exist '
                        "(create it or remove env_file)")


def test_env_key_with_equals_sign(write):
    p = one_error(write(service('env = { "A=B" = "1" }\n')))
    assert p.where == 'services[0] "s": env.A=B'


# ---------------------------------------------------------------- scripts, log file, directory

def test_scripts_must_exist_and_be_executable(write, tmp_path):
    good = executable(tmp_path / "pre.sh")
    plain = tmp_path / "post.sh"
    plain.write_text("#!/bin/sh\n")
    path = write(service(f'pre_script = "{good}"\npost_script = "{plain}"\n'))
    assert errors(path) == [f'services[0] "s": post_script: "{plain}" is not executable (chmod +x {plain})']
    cfg, _ = load(write(service('pre_script = "./pre.sh"\n')))
    assert cfg.services[0].pre_script == good


def test_pos_script_alias_and_both_given(write, tmp_path):
    script = executable(tmp_path / "post.sh")
    cfg, warnings = load(write(service(f'pos_script = "{script}"\n')))
    assert cfg.services[0].post_script == script
    assert any(p.message == "pos_script is read as post_script" for p in warnings)
    assert errors(write(service(f'pos_script = "{script}"\npost_script = "{script}"\n'))) == [
        'services[0] "s": pos_script: both pos_script and post_script are set (keep only post_script)']


def test_log_file_directory_must_exist(write, tmp_path):
    cfg, _ = load(write(service('log_file = "logs/../s.log"\nlog_max_bytes = 1000\nlog_backups = 0\n')))
    s = cfg.services[0]
    assert (s.log_file, s.log_max_bytes, s.log_backups) == (str(tmp_path / "s.log"), 1000, 0)
    assert errors(write(service('log_file = "/nonexistent-dir/x.log"\n'))) == [
        'services[0] "s": log_file: directory "/nonexistent-dir" does not exist (create it in the image or fix the path)']
    assert errors(write(service(f'log_file = "{tmp_path}"\n'))) == [
        f'services[0] "s": log_file: "{tmp_path}" is a directory (name a file inside it)']


def test_a_disabled_services_missing_files_are_only_warnings(write):
    cfg, warnings = load(write('[[services]]\nname = "opt"\ncommand = "/nonexistent/opt"\nenabled = false\n'
                               'user = "no-such-user-x"\n'))
    assert not cfg.services[0].enabled
    assert [p.render() for p in warnings] == [
        'services[0] "opt": command: "/nonexistent/opt" does not exist (install it in the image or fix the path)',
        'services[0] "opt": user: no user "no-such-user-x" on this system '
        "(create it in the image with useradd no-such-user-x, or use a numeric id)",
    ]
    # Its shape is still checked.
    assert errors(write('[[services]]\nname = "opt"\ncommand = "/x"\nenabled = false\nrestat = 1\n')) == [
        'services[0] "opt": restat: unknown key (did you mean "restart"?)']


def test_duplicate_names_with_a_hidden_cycle_do_not_crash(write):
    path = write('[[services]]\nname = "a"\ncommand = "/bin/true"\n'
                 '[[services]]\nname = "b"\ncommand = "/bin/true"\ndepends_on = "a"\n'
                 '[[services]]\nname = "a"\ncommand = "/bin/true"\ndepends_on = "b"\n')
    assert errors(path) == ['services[2] "a": name: duplicate name "a" (services[0] already uses it; '
                            "names must be unique)"]


def test_directory_must_exist(write, tmp_path):
    (tmp_path / "file").write_text("")
    assert errors(write(service('directory = "/nonexistent-dir"\n') +
                        '[[services]]\nname = "t"\ncommand = "/bin/true"\ndirectory = "file"\n')) == [
        'services[0] "s": directory: "/nonexistent-dir" does not exist (create it in the image or fix the path)',
        'services[1] "t": directory: "file" is not a directory (create it in the image or fix the path)',
    ]


# ---------------------------------------------------------------- users and groups

def test_users_and_groups_must_exist_numeric_ids_are_accepted(write):
    cfg, _ = load(write(service('user = "root"\ngroup = "root"\n') +
                        '[[services]]\nname = "t"\ncommand = "/bin/true"\nuser = 54321\ngroup = "54321"\n'))
    assert (cfg.services[0].user, cfg.services[0].group) == ("root", "root")
    assert (cfg.services[1].user, cfg.services[1].group) == ("54321", "54321")
    assert errors(write(service('user = "no-such-user-x"\ngroup = "no-such-group-x"\n'))) == [
        'services[0] "s": user: no user "no-such-user-x" on this system '
        "(create it in the image with useradd no-such-user-x, or use a numeric id)",
        'services[0] "s": group: no group "no-such-group-x" on this system '
        "(create it in the image with groupadd no-such-group-x, or use a numeric id)",
    ]


def test_non_root_cannot_switch_user(write, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getegid", lambda: 1000)
    path = write(service('user = "root"\ngroup = 0\n') + '[[services]]\nname = "t"\ncommand = "/bin/true"\n'
                 'user = 1000\ngroup = "1000"\n')
    assert errors(path) == [
        'services[0] "s": user: entrypoint runs as uid 1000 and cannot switch to user root '
        "(run it as root or remove `user`)",
        'services[0] "s": group: entrypoint runs as uid 1000 and cannot switch to group 0 '
        "(run it as root or remove `group`)",
    ]


# ---------------------------------------------------------------- dependencies

def test_depends_on_forms_and_default_conditions(write):
    cfg, _ = load(write("""\
        [[services]]
        name = "migrate"
        command = "/bin/true"
        oneshot = true

        [[services]]
        name = "db"
        command = "/bin/sleep"
        healthcheck = { exec = "true --flag 'a b'" }

        [[services]]
        name = "cache"
        command = "/bin/sleep"

        [[services]]
        name = "app"
        command = "/bin/sleep"
        depends_on = ["migrate", "db", "cache", "db"]

        [[services]]
        name = "web"
        command = "/bin/sleep"
        depends_on = { app = "started", db = "started", migrate = "completed" }

        [[services]]
        name = "cron"
        command = "/bin/sleep"
        depends_on = "db"
        """))
    by_name = {s.name: s for s in cfg.services}
    assert by_name["app"].depends_on == (("migrate", "completed"), ("db", "healthy"), ("cache", "started"))
    assert by_name["web"].depends_on == (("app", "started"), ("db", "started"), ("migrate", "completed"))
    assert by_name["cron"].depends_on == (("db", "healthy"),)
    assert by_name["db"].healthcheck == HealthSpec(kind="exec", target=("/usr/bin/true", "--flag", "a b"))
    assert by_name["migrate"].restart == "no"


def test_dependency_problems_all_at_once(write):
    path = write("""\
        [[services]]
        name = "nginx"
        command = "/bin/sleep"

        [[services]]
        name = "off"
        command = "/bin/sleep"
        enabled = false

        [[services]]
        name = "app"
        command = "/bin/sleep"
        depends_on = { ngnix = "started", nginx = "healthy", off = "started" }

        [[services]]
        name = "job"
        command = "/bin/sleep"
        depends_on = { nginx = "completed" }

        [[services]]
        name = "also-off"
        command = "/bin/sleep"
        enabled = false
        depends_on = "off"
        """)
    assert errors(path) == [
        'services[2] "app": depends_on: unknown service "ngnix" (did you mean "nginx"?)',
        'services[2] "app": depends_on: "nginx" has no healthcheck, so it never becomes "healthy" '
        '(add a healthcheck to "nginx" or use "started")',
        'services[2] "app": depends_on: "off" is disabled (enable "off", remove it from depends_on, '
        'or disable "app" too)',
        'services[3] "job": depends_on: "nginx" is not a oneshot, so it never becomes "completed" '
        '(set oneshot = true on "nginx" or use "started")',
    ]


def test_cycles_are_printed_as_paths(write):
    path = write("""\
        [[services]]
        name = "a"
        command = "/bin/sleep"
        depends_on = "b"

        [[services]]
        name = "b"
        command = "/bin/sleep"
        depends_on = ["c"]

        [[services]]
        name = "c"
        command = "/bin/sleep"
        depends_on = { a = "started" }

        [[services]]
        name = "d"
        command = "/bin/sleep"
        depends_on = "d"
        """)
    assert errors(path) == [   # grouped by service, in config order
        'services[0] "a": depends_on: dependency cycle: a -> b -> c -> a (remove one of these dependencies)',
        'services[3] "d": depends_on: "d" depends on itself (remove it from depends_on)',
    ]


def test_services_that_fail_shape_still_take_part_in_relations(write):
    path = write("""\
        [[services]]
        name = "web"
        command = "/bin/sleep"
        restat = "always"
        depends_on = "ngnix"

        [[services]]
        name = "nginx"
        command = "/nonexistent/nginx"
        depends_on = "web"
        wait_after = "x"

        [[services]]
        name = "app"
        command = "/bin/sleep"
        depends_on = "nginx"
        """)
    found = errors(path)
    assert found == [
        'services[0] "web": restat: unknown key (did you mean "restart"?)',
        'services[0] "web": depends_on: unknown service "ngnix" (did you mean "nginx"?)',
        "services[1] \"nginx\": wait_after: expected a number of seconds, got 'x'",
        'services[1] "nginx": command: "/nonexistent/nginx" does not exist '
        '(install it in the image or fix the path)',
    ]   # "app" depends on a known (if broken) service: no spurious problem for it


def test_cycles_through_services_that_fail_shape_are_found(write):
    path = write("""\
        [[services]]
        name = "a"
        command = "/bin/sleep"
        depends_on = "b"
        bogus = 1

        [[services]]
        name = "b"
        command = "/bin/sleep"
        depends_on = ["a"]
        """)
    assert errors(path) == [
        'services[0] "a": bogus: unknown key',
        'services[0] "a": depends_on: dependency cycle: a -> b -> a (remove one of these dependencies)',
    ]


def test_oneshot_restart_policies(write):
    cfg, _ = load(write(service("oneshot = true\nrestart = \"on-failure\"\n")))
    assert cfg.services[0].restart == "on-failure"
    cfg, _ = load(write(service("oneshot = true\n")))
    assert cfg.services[0].restart == "no"
    assert errors(write(service('oneshot = true\nrestart = "always"\n'))) == [
        'services[0] "s": restart: a oneshot cannot use restart = "always" '
        '(use "on-failure" to retry a failed run, or set oneshot = false)']


# ---------------------------------------------------------------- healthchecks

def test_healthcheck_kinds_and_defaults(write):
    cfg, _ = load(write(service('healthcheck = { http = "http://127.0.0.1:8080/health" }\n') +
                        '[[services]]\nname = "t"\ncommand = "/bin/true"\n'
                        'healthcheck = { tcp = "[::1]:6379", interval = 0.5, timeout = 0.2, retries = 1, '
                        'start_period = 5, on_unhealthy = "restart" }\n'
                        '[[services]]\nname = "u"\ncommand = "/bin/true"\n'
                        'healthcheck = { exec = ["/bin/true", "-q"] }\n'))
    s, t, u = cfg.services
    assert s.healthcheck == HealthSpec(kind="http", target="http://127.0.0.1:8080/health", interval=2.0,
                                       timeout=1.0, retries=3, start_period=0.0, on_unhealthy="ignore")
    assert t.healthcheck == HealthSpec(kind="tcp", target="[::1]:6379", interval=0.5, timeout=0.2, retries=1,
                                       start_period=5.0, on_unhealthy="restart")
    assert u.healthcheck.target == ("/bin/true", "-q")


@pytest.mark.parametrize("table, message", [
    ("{}", "healthcheck: needs exactly one of http, tcp or exec"),
    ('{ http = "http://x/", tcp = "x:1" }', "healthcheck: needs exactly one of http, tcp or exec"),
    ('{ http = "ftp://x/" }', "healthcheck.http: expected an http:// or https:// URL, got 'ftp://x/'"),
    ('{ http = "localhost:80" }', "healthcheck.http: expected an http:// or https:// URL, got 'localhost:80'"),
    ('{ http = "http://x:99999/" }', "healthcheck.http: 'http://x:99999/' is not a valid URL"),
    ('{ tcp = "6379" }', "healthcheck.tcp: expected \"host:port\", got '6379'"),
    ('{ tcp = "h:0" }', "healthcheck.tcp: expected \"host:port\", got 'h:0'"),
    ('{ tcp = "h:http" }', "healthcheck.tcp: expected \"host:port\", got 'h:http'"),
    ("{ exec = [] }", "healthcheck.exec: expected a command line"),
    ("{ exec = \"a 'b\" }", "healthcheck.exec: cannot split"),
    ('{ exec = "no-such-check-prog" }', 'healthcheck.exec: "no-such-check-prog" not found in PATH'),
    ('{ tcp = "h:1", on_unhealthy = "kill" }', "healthcheck.on_unhealthy: expected 'ignore' or 'restart'"),
    ('{ tcp = "h:1", interval = -1 }', "healthcheck.interval: must be more than 0 seconds"),
])
def test_healthcheck_problems(write, table, message):
    p = one_error(write(service(f"healthcheck = {table}\n")))
    assert p.render().startswith(f'services[0] "s": {message}')


# ---------------------------------------------------------------- timeout warnings

def test_short_timeouts_give_no_docker_warning(write):
    cfg, warnings = load(write('[timeouts]\nservice_shutdown_timeout = 4\nglobal_shutdown_timeout = 9\n' +
                               service("")))
    assert warnings == []


def test_deep_stop_chains_add_up_but_the_global_deadline_caps_them(write):
    chain = ('[[services]]\nname = "a"\ncommand = "/bin/sleep"\n'
             '[[services]]\nname = "b"\ncommand = "/bin/sleep"\ndepends_on = "a"\n')
    _, warnings = load(write('[timeouts]\nservice_shutdown_timeout = 6\nglobal_shutdown_timeout = 40\n' + chain))
    [w] = warnings
    assert w.where == "timeouts" and "up to 12 s" in w.message
    _, warnings = load(write('[timeouts]\nservice_shutdown_timeout = 6\nglobal_shutdown_timeout = 8\n' + chain))
    assert warnings == []


def test_no_docker_warning_without_services(write):
    assert load(write(""))[1] == []


def test_service_timeout_longer_than_global(write):
    _, warnings = load(write("[timeouts]\nservice_shutdown_timeout = 9\nglobal_shutdown_timeout = 5\n"))
    assert warnings == [Problem("timeouts: service_shutdown_timeout", "is longer than global_shutdown_timeout (5 s)",
                                "the global deadline will SIGKILL services first", warning=True)]


def test_restart_delay_max_below_restart_delay_is_a_warning(write):
    _, warnings = load(write(service("restart_delay = 5\nrestart_delay_max = 2\n")))
    assert any(p.where == 'services[0] "s": restart_delay_max' for p in warnings)


# ---------------------------------------------------------------- all at once

def test_a_bad_field_hides_no_other_problem_of_its_service(write):
    path = write("""\
        [[services]]
        name = "app"
        command = "no-such-program-q"
        restart = "sometimes"
        user = "no-such-user-q"
        directory = "/nonexistent-dir-q"
        pre_script = "/nonexistent/pre.sh"
        """)
    assert errors(path, ENV) == [
        "services[0] \"app\": restart: expected 'no', 'on-failure' or 'always', got 'sometimes'",
        'services[0] "app": directory: "/nonexistent-dir-q" does not exist (create it in the image or fix the path)',
        'services[0] "app": command: "no-such-program-q" not found in PATH (use an absolute path or add its '
        'directory to PATH)',
        'services[0] "app": pre_script: "/nonexistent/pre.sh" does not exist (install it in the image or fix the path)',
        'services[0] "app": user: no user "no-such-user-q" on this system (create it in the image with useradd '
        'no-such-user-q, or use a numeric id)',
    ]


def test_a_bad_name_or_unknown_key_hides_no_other_problem(write):
    path = write('[[services]]\nname = "my app"\ncommand = "/nonexistent/app"\nrestat = "no"\n')
    assert errors(path) == [
        "services[0]: name: 'my app' is not a valid name (use only letters, digits, - and _)",
        'services[0]: restat: unknown key (did you mean "restart"?)',
        'services[0]: command: "/nonexistent/app" does not exist (install it in the image or fix the path)',
    ]


def test_a_bad_command_hides_no_other_problem(write):
    path = write('[[services]]\nname = "app"\ncommand = 5\nuser = "no-such-user-q"\n')
    assert errors(path) == [
        'services[0] "app": command: expected a string, got 5',
        'services[0] "app": user: no user "no-such-user-q" on this system (create it in the image '
        'with useradd no-such-user-q, or use a numeric id)',
    ]


@pytest.mark.parametrize("key", ["user", "group"])
def test_a_numeric_id_out_of_range_is_a_problem(write, key):
    [p] = errors(write(service(f'{key} = "99999999999999999999"\n')))
    assert p == f'services[0] "s": {key}: {key} id 99999999999999999999 is out of range (ids go up to 4294967294)'


@pytest.mark.parametrize("key,value", [("command", '"/bin/sl\\u0000eep"'),
                                       ("args", '["a\\u0000b"]'),
                                       ("directory", '"/tm\\u0000p"'),
                                       ("user", '"ro\\u0000ot"'),
                                       ("group", '"ro\\u0000ot"'),
                                       ("pre_script", '"/bin/tr\\u0000ue"'),
                                       ("log_file", '"/tmp/a\\u0000.log"'),
                                       ("env_file", '"a\\u0000.env"'),
                                       ("env", '{ A = "x\\u0000y" }'),
                                       ("healthcheck", '{ exec = ["/bin/tr\\u0000ue"] }')])
def test_a_nul_character_is_a_located_problem(write, key, value):
    body = '[[services]]\nname = "s"\n' + ("" if key == "command" else 'command = "/bin/sleep"\n')
    found = errors(write(body + f"{key} = {value}\n"))
    assert len(found) == 1 and found[0].startswith(f'services[0] "s": {key}'), found
    assert found[0].endswith("contains a NUL character (remove it)"), found


def test_all_problems_are_reported_at_once(write):
    path = write("""\
        [timeouts]
        global_shutdown_timeout = "abc"

        [[services]]
        name = "web"
        command = "/nonexistent/web"
        depends_on = "ngnix"
        stop_signal = "FOO"

        [[services]]
        name = "web"
        command = "/bin/sleep"
        user = "no-such-user-x"
        directory = "/nonexistent-dir"
        env = { A = "${BAD" }
        """)
    with pytest.raises(ConfigError) as info:
        load(path)
    rendered = [p.render() for p in info.value.problems if not p.warning]
    assert len(rendered) == 8, rendered
    # The bad stop_signal does not hide the missing command of the same service.
    assert any(r.startswith('services[0] "web": command: "/nonexistent/web" does not exist')
               for r in rendered), rendered
    text = info.value.render()
    assert text.startswith(f"entrypoint: {path}: 8 problems, nothing was started:")
    assert info.value.exit_status == 2


# ---------------------------------------------------------------- Procfile

def test_procfile(write, tmp_path):
    write("SECRET=s3cret\nPORT=5000\n", name=".env")
    path = write("""\
        # comment
        web: python3 -m http.server $PORT
        worker:   echo "a: b"  

        clock:sleep 1
        """, name="Procfile")
    cfg, warnings = config.load(path, "procfile", ENV)
    assert cfg.procfile and warnings == [] and cfg.source == path
    assert cfg.names == ["web", "worker", "clock"]
    web, worker, clock = cfg.services
    assert web.argv == ("/bin/sh", "-c", "python3 -m http.server $PORT")
    assert worker.argv == ("/bin/sh", "-c", 'echo "a: b"')
    assert clock.argv == ("/bin/sh", "-c", "sleep 1")
    assert web.environment() == {"SECRET": "s3cret", "PORT": "5000"}
    assert all(s.restart == "no" for s in cfg.services)
    assert cfg.timeouts == Timeouts()


def test_procfile_problems_are_line_numbered(write):
    path = write("""\
        web: run
        just some text
        my app: run
        web: again
        empty:
        """, name="Procfile")
    assert errors(path, kind="procfile") == [
        "Procfile:2: expected \"name: command\", got 'just some text'",
        "Procfile:3: 'my app' is not a valid name (use only letters, digits, - and _)",
        'Procfile:4: duplicate name "web" (first defined on line 1)',
        'Procfile:5: "empty" has no command (write the command after the colon)',
    ]


def test_empty_procfile_is_a_warning(write):
    cfg, warnings = config.load(write("# nothing\n", name="Procfile"), "procfile", ENV)
    assert cfg.services == () and warnings[0].message == "no processes defined"


def test_procfile_unreadable_dotenv(write, tmp_path):
    (tmp_path / ".env").mkdir()   # a directory where .env should be: ignored (not a file)
    cfg, _ = config.load(write("a: true\n", name="Procfile"), "procfile", ENV)
    assert cfg.services[0].env == ()
