"""Exceptions that carry their exit status and render themselves for people.

The CLI's top level catches `EntrypointError`, prints `render()` to stderr and exits
with `exit_status`. Nothing below the CLI prints tracebacks for bad input.
"""

from __future__ import annotations


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2          # invalid config or usage: nothing was started
EXIT_UNREACHABLE = 3    # a control command could not reach a running entrypoint


class Problem:
    """One located problem in a config: `where` is e.g. `services[2] "app": depends_on`.

    A plain class, not a dataclass: the control client imports this module, and
    `dataclasses` (with `inspect`) would double that client's start-up time.
    """

    __slots__ = ("where", "message", "hint", "warning", "check_only")

    def __init__(self, where: str, message: str, hint: str = "", warning: bool = False,
                 check_only: bool = False):
        self.where = where
        self.message = message
        self.hint = hint
        self.warning = warning
        self.check_only = check_only     # advice for `entrypoint check`, not repeated at start

    def _key(self) -> tuple:
        return (self.where, self.message, self.hint, self.warning, self.check_only)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Problem(" + ", ".join(f"{k}={v!r}" for k, v in zip(self.__slots__, self._key())) + ")"

    def __reduce__(self):
        return (Problem, self._key())      # picklable: validation runs in a child process

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class EntrypointError(Exception):
    """An error meant for a person, with the exit status it implies."""

    exit_status = EXIT_FAILURE

    def __init__(self, message: str, exit_status: int | None = None):
        super().__init__(message)
        self.message = message
        if exit_status is not None:
            self.exit_status = exit_status

    def render(self) -> str:
        return f"entrypoint: {self.message}"


class UsageError(EntrypointError):
    exit_status = EXIT_USAGE


class ConfigError(EntrypointError):
    """Every problem of a config at once; rendered one per line under the file name."""

    exit_status = EXIT_USAGE

    def __init__(self, source: str, problems: list[Problem]):
        errors = [p for p in problems if not p.warning]
        super().__init__(f"{source}: {len(errors)} problem(s)")
        self.source = source
        self.problems = problems

    def render(self) -> str:
        errors = [p for p in self.problems if not p.warning]
        warnings = [p for p in self.problems if p.warning]
        noun = "problem" if len(errors) == 1 else "problems"
        lines = [f"entrypoint: {self.source}: {len(errors)} {noun}, nothing was started:"]
        lines += [f"  error: {p.render()}" for p in errors]
        lines += [f"  warning: {p.render()}" for p in warnings]
        return "\n".join(lines)


class Unreachable(EntrypointError):
    exit_status = EXIT_UNREACHABLE
