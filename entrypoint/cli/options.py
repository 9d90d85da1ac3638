"""The options of `entrypoint run` and `check`, each with its ENTRYPOINT_* variable.

One table (`OPTIONS`) drives parsing, validation and help, so a flag and its variable
always accept the same values and reject bad ones with the same message. The result of
parsing is a frozen `RunOptions`: the argparse namespace never leaves this module.

Not imported by the control commands (`entrypoint list` ...): `dataclasses` alone would
double their start-up time.
"""

from __future__ import annotations

import argparse
import math
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from entrypoint.errors import EXIT_USAGE, EntrypointError, UsageError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


# ---------------------------------------------------------------- value converters
# Each takes the text of a flag or a variable and returns the value, or raises ValueError
# with a message that fits after "argument --log-lines: " and after its variable's name.

def text(value: str) -> str:
    if not value:
        raise ValueError("expected a non-empty value")
    return value


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"expected more than 0 seconds, got {value!r}")
    return number


def count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise ValueError(f"expected 1 or more, got {value!r}")
    return number


def choice(*values: str) -> Callable[[str], str]:
    def convert(value: str) -> str:
        if value not in values:
            raise ValueError(f"expected {', '.join(values[:-1])} or {values[-1]}, got {value!r}")
        return value
    convert.choices = values
    return convert


def boolean(value: str) -> bool:
    """A switch's variable: 1/true/yes/on or 0/false/no/off (any case)."""
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS or not word:
        return False
    raise ValueError(f"expected {', '.join(TRUE_WORDS)} or {', '.join(FALSE_WORDS)}, got {value!r}")


# ---------------------------------------------------------------- the table

@dataclass(frozen=True)
class Option:
    env: str                       # the environment variable
    flags: tuple[str, ...]         # the command-line spellings; () when there is none
    dest: str                      # the RunOptions field (or the subcommand's)
    convert: Callable[[str], Any]  # `boolean` for a switch (a flag without a value)
    metavar: str | None
    help: str
    commands: tuple[str, ...]      # where it applies: run, check, control commands, install
    # The config lookup reads ENTRYPOINT_CONFIG itself, in its documented order, so that
    # its messages say which of -c and the variable named a missing file.
    read_by_lookup: bool = False

    @property
    def switch(self) -> bool:
        return self.convert is boolean

    def describe(self) -> str:
        values = getattr(self.convert, "choices", None)
        shape = "|".join(values) if values else "1|0" if self.switch else self.metavar or "VALUE"
        return f"{self.env}={shape}"


RUN, CHECK, CONTROL, INSTALL = "run", "check", "control commands", "install"

OPTIONS: tuple[Option, ...] = (
    Option("ENTRYPOINT_CONFIG", ("-c", "--config"), "config", text, "FILE",
           "the services.toml to use (default: $ENTRYPOINT_CONFIG, ./services.toml, "
           "/etc/entrypoint/services.toml, ./Procfile)", (RUN, CHECK), read_by_lookup=True),
    Option("ENTRYPOINT_PROCFILE", ("--procfile",), "procfile", text, "FILE",
           "run a Procfile instead (foreman/honcho semantics: the first exit stops all)",
           (RUN, CHECK)),
    Option("ENTRYPOINT_STRICT", ("--strict",), "strict", boolean, None,
           "also check every service as its own user would see it: commands executable, "
           "directories usable, env files readable (the image-build preflight)", (CHECK,)),
    Option("ENTRYPOINT_NO_KEEP", ("--no-keep",), "no_keep", boolean, None,
           "do not keep the validated config beside it (.NAME.validated.json) for a faster "
           "`entrypoint run`", (CHECK,)),
    Option("ENTRYPOINT_READY_TIMEOUT", ("--ready-timeout",), "ready_timeout", seconds, "SECONDS",
           "how long the CMD waits for the services to be ready "
           "(default: the config's dependency_wait_timeout)", (RUN,)),
    Option("ENTRYPOINT_TIMESTAMPS", ("--timestamps",), "timestamps", boolean, None,
           "prefix every line with an ISO-8601 time", (RUN,)),
    Option("ENTRYPOINT_LOG_FORMAT", ("--log-format",), "log_format", choice("text", "json"),
           None, "text: 'name | line'; json: one object per line "
           "(ts, service, stream, line)", (RUN,)),
    Option("ENTRYPOINT_COLOR", ("--color",), "color", choice("auto", "always", "never"), None,
           "colour the names; auto: FORCE_COLOR, then NO_COLOR, then whether stdout "
           "is a terminal", (RUN,)),
    Option("ENTRYPOINT_LOG_LINES", ("--log-lines",), "log_lines", count, "N",
           "lines kept in memory per service for `entrypoint logs` (default 1000)", (RUN,)),
    Option("ENTRYPOINT_QUIET", ("--quiet",), "quiet", boolean, None,
           "print only the services' lines and the runner's warnings and errors", (RUN,)),
    Option("ENTRYPOINT_SOCKET", ("--socket",), "socket", text, "PATH",
           "the control socket (default: /run/entrypoint.sock, else "
           "$XDG_RUNTIME_DIR/entrypoint.sock or /tmp/entrypoint-$UID.sock)", (RUN, CONTROL)),
    Option("ENTRYPOINT_REPORT", ("--report",), "report", text, "FILE",
           "write a JSON summary of the run to FILE at exit", (RUN,)),
    Option("ENTRYPOINT_NO_INSTALL", ("--no-install",), "no_install", boolean, None,
           "do not put `entrypoint` on PATH when started as root from elsewhere", (RUN,)),
    # No flag: a reload is asked for later, by SIGHUP or `entrypoint reload`; checked at
    # start like the others so that a bad value fails at once, not at the first reload.
    Option("ENTRYPOINT_RELOAD_TIMEOUT", (), "reload_timeout", seconds, "SECONDS",
           "how long a reload's validation of the new config may take before the reload "
           "is rejected (default 30)", (RUN,)),
    Option("ENTRYPOINT_INSTALL_DIR", ("--dir",), "dir", text, "DIR",
           "where `entrypoint install` (and the automatic install) puts the link "
           "(default: /usr/local/bin)", (INSTALL,)),
)

# Read by entrypoint, but not ours to name; listed in the help beside the table.
OTHER_VARIABLES = (
    ("NO_COLOR", "non-empty: no colour (under --color auto)"),
    ("FORCE_COLOR", "non-empty: colour even when stdout is not a terminal (under --color auto)"),
    ("NOTIFY_SOCKET", "entrypoint's own (systemd Type=notify, podman --sdnotify): it reports "
                      "READY=1, STATUS=, RELOADING=1, STOPPING=1 there; services never inherit it"),
    ("WATCHDOG_USEC", "with NOTIFY_SOCKET: entrypoint sends WATCHDOG=1 every half of it"),
)

# Set by entrypoint in a service's environment; listed in the help too.
SERVICE_VARIABLES = (
    ("NOTIFY_SOCKET", 'its own notify socket, with ready = "notify" or a watchdog'),
    ("WATCHDOG_USEC", "with watchdog: the period within which it must send WATCHDOG=1"),
    ("ENTRYPOINT_REPLICA", "with replicas: its number, from 1"),
    ("PORT", "with port: the port it should listen on (port + replica - 1 for replicas)"),
)


# Set by entrypoint for the [alerts] command (CONTRACT §11), not read by it.
ALERT_VARIABLES = (
    ("ENTRYPOINT_EVENT", "given to the [alerts] command: failed, gave_up, unhealthy, "
                         "job_failed or watchdog"),
    ("ENTRYPOINT_SERVICE", "given to the [alerts] command: the service's name"),
    ("ENTRYPOINT_EXIT", "given to the [alerts] command: its last exit status (128+N for "
                        "signal N), empty if none"),
    ("ENTRYPOINT_LAST_LINES", "given to the [alerts] command: its last 10 lines of output"),
)


# The HTTP face's (`pip install 'entrypoint[web]'`): read by config/web.py in the runner
# and by `entrypoint web`; the values of a [web] table reach the face through them too.
WEB_VARIABLES = (
    ("ENTRYPOINT_WEB_LISTEN", "HOST:PORT: serve the API and dashboard there (turns the HTTP "
                              "face on even without a [web] table)"),
    ("ENTRYPOINT_WEB_TOKEN", "the bearer token of the operate role (wins over [web] token)"),
    ("ENTRYPOINT_WEB_TOKEN_FILE", "a file holding that token"),
    ("ENTRYPOINT_WEB_READ_TOKEN", "a bearer token that may only read"),
    ("ENTRYPOINT_WEB_PAM", "1: log in with system accounts through PAM"),
    ("ENTRYPOINT_WEB_PAM_GROUP", "with PAM: only members of this group may log in"),
)


def option(env: str) -> Option:
    return next(o for o in OPTIONS if o.env == env)


# ---------------------------------------------------------------- parsed options

@dataclass(frozen=True)
class RunOptions:
    """What `entrypoint run` was asked to do, typed and validated."""

    config: str | None = None          # -c only: the lookup reads ENTRYPOINT_CONFIG itself
    procfile: str | None = None
    ready_timeout: float | None = None  # None: the config's dependency_wait_timeout
    timestamps: bool = False
    log_format: str = "text"
    color: str = "auto"
    log_lines: int = 1000
    quiet: bool = False
    socket: str | None = None          # None: the default place (control.protocol)
    report: str | None = None
    no_install: bool = False
    reload_timeout: float | None = None  # None: 30 s (read again by config.isolate at reload)
    cmd: tuple[str, ...] = ()


def _flag_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def flag_type(value: str) -> Any:
        try:
            return convert(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return flag_type


def add_options(parser: argparse.ArgumentParser, command: str) -> list[Option]:
    """Add the table's options for `command` to `parser`; every default is None (unset)."""
    chosen = [o for o in OPTIONS if command in o.commands and o.flags]
    for o in chosen:
        help_text = f"{o.help} [{o.env}]"
        if o.switch:
            parser.add_argument(*o.flags, dest=o.dest, action="store_true", default=None,
                                help=help_text)
        else:
            choices = getattr(o.convert, "choices", None)
            parser.add_argument(*o.flags, dest=o.dest, default=None,
                                metavar="|".join(choices) if choices else o.metavar,
                                type=_flag_type(o.convert), help=help_text)
    return chosen


def from_environment(namespace: argparse.Namespace, chosen: list[Option],
                     environ: Mapping[str, str]) -> dict[str, Any]:
    """Each option's value: the flag, else its variable (checked), else unset (absent).

    An empty variable counts as unset, as `docker run -e NAME=` means "no value". Every
    bad variable is reported at once, in one UsageError.
    """
    values, bad = {}, []
    for o in chosen:
        value = getattr(namespace, o.dest, None)   # a flagless option is not in it
        raw = environ.get(o.env, "")
        if value is None and raw and not o.read_by_lookup:
            try:
                value = o.convert(raw)
            except ValueError as exc:
                bad.append(f"{o.env} ({o.flags[0]}): {exc}" if o.flags else f"{o.env}: {exc}")
        if value is not None:
            values[o.dest] = value
    if bad:
        raise UsageError("\nentrypoint: ".join(bad))
    return values


def check_environment(environ: Mapping[str, str], command: str = RUN) -> None:
    """UsageError for the variables of `command` whose values their flags would refuse."""
    from_environment(argparse.Namespace(**{o.dest: None for o in OPTIONS}),
                     [o for o in OPTIONS if command in o.commands], environ)


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entrypoint [run]",
        usage="entrypoint [run] [-c FILE | --procfile FILE] [OPTIONS] [--] [CMD [ARGS...]]",
        description="Start the services of services.toml (or a Procfile), supervise them, and "
                    "with a CMD run it once they are ready; its exit status becomes ours. "
                    "Every option can also be set by the environment variable in brackets; "
                    "the flag wins. `entrypoint --help` lists them all.")
    add_options(parser, RUN)
    return parser


def value_flags() -> set[str]:
    """The run flags that take a value (the word after them is not the CMD)."""
    return {f for o in OPTIONS if RUN in o.commands and not o.switch for f in o.flags}


def split_run_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split `run`'s words into its options and the CMD: the first plain word starts the CMD."""
    takes_value = value_flags()
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return argv[:i], argv[i + 1:]
        if not word.startswith("-") or word == "-":
            return argv[:i], argv[i:]
        i += 2 if word in takes_value else 1
    return argv, []


def parse_run(argv: list[str], environ: Mapping[str, str]) -> RunOptions:
    """`entrypoint run`'s words and environment as RunOptions; UsageError when bad."""
    words, cmd = split_run_args(argv)
    parser = run_parser()
    namespace = parse(parser, words)
    values = from_environment(namespace, [o for o in OPTIONS if RUN in o.commands], environ)
    return RunOptions(cmd=tuple(cmd), **values)


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, with argparse's exit turned into an error that owns its status."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:   # argparse printed the message (or the help) already
        if exc.code in (0, None):
            raise
        raise AlreadyReported(EXIT_USAGE) from None


class AlreadyReported(EntrypointError):
    def __init__(self, status: int):
        super().__init__("", status)

    def render(self) -> str:
        return ""


def environment_help() -> str:
    """The variables section of `entrypoint --help`, from the table."""
    lines = ["environment (the flag wins over its variable; an empty value counts as unset):"]
    indent = " " * 6
    for o in OPTIONS:
        where = f"{', '.join(o.flags)} of " if o.flags else "for "
        about = f"{where}{', '.join(o.commands)}: {o.help}"
        lines.append(f"  {o.describe()}")
        lines.append(textwrap.fill(about, 88, initial_indent=indent, subsequent_indent=indent))
    for name, meaning in (*WEB_VARIABLES, *ALERT_VARIABLES, *OTHER_VARIABLES):
        lines.append(f"  {name}")
        lines.append(textwrap.fill(meaning, 88, initial_indent=indent, subsequent_indent=indent))
    lines.append("set in each service's environment:")
    for name, meaning in SERVICE_VARIABLES:
        lines.append(f"  {name}")
        lines.append(textwrap.fill(meaning, 88, initial_indent=indent, subsequent_indent=indent))
    return "\n".join(lines) + "\n"
