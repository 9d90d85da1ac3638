"""`${VAR}` interpolation of config strings from entrypoint's own environment.

`${VAR}` is the value of VAR; `${VAR:-default}` the default when VAR is unset or empty,
`${VAR-default}` only when unset; `${VAR:?message}` makes an unset or empty VAR an error;
`$$` is a literal `$`. A `$` not followed by `{` or `$` is kept as it is, so `$HOME` in a
`shell = true` command is left for the shell. Defaults may themselves use `${...}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from entrypoint.errors import Problem

_EXPR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:-|-|:\?)(.*))?", re.S)
_HINT = "write ${NAME}, ${NAME:-default}, or $$ for a literal $"


class InterpolationError(ValueError):
    def __init__(self, message: str, hint: str = _HINT):
        super().__init__(message)
        self.message, self.hint = message, hint


def expand(text: str, environ: Mapping[str, str], missing: list[str]) -> str:
    """`text` with every `${...}` replaced; names of unset variables are appended to `missing`."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        after = text[j + 1:j + 2]
        if after == "$":
            out.append("$")
            i = j + 2
        elif after == "{":
            end = _closing(text, j + 2)
            if end < 0:
                raise InterpolationError(f"unterminated ${{ in {text!r}")
            out.append(_substitute(text[j + 2:end], environ, missing))
            i = end + 1
        else:
            out.append("$")
            i = j + 1
    return "".join(out)


def _closing(text: str, i: int) -> int:
    """Index of the `}` closing a `${` whose body starts at `i`, or -1."""
    depth = 0
    while i < len(text):
        if text.startswith("$$", i) or text.startswith("${", i):
            depth += text[i + 1] == "{"
            i += 2
            continue
        if text[i] == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return -1


def _substitute(body: str, environ: Mapping[str, str], missing: list[str]) -> str:
    m = _EXPR.fullmatch(body)
    if not m:
        raise InterpolationError(f"malformed ${{{body}}}")
    name, op, rest = m.groups()
    value = environ.get(name)
    if op == ":?":
        if not value:
            raise InterpolationError(f"${{{name}}} is not set" + (f": {rest}" if rest else ""),
                                     f"set {name} in entrypoint's environment")
        return value
    if (op == ":-" and not value) or (op == "-" and value is None):
        return expand(rest, environ, missing)
    if value is None:
        missing.append(name)
        return ""
    return value


def interpolate_tree(value: object, environ: Mapping[str, str], where: str, path: str,
                     problems: list[Problem]) -> object:
    """Interpolate every string inside `value` (tables' keys are left alone).

    Problems are located as `{where}: {path}` (e.g. `services[1] "web": env.HOME`).
    A malformed `${` is an error; an unset `${VAR}` becomes "" with a warning.
    """
    if isinstance(value, dict):
        return {k: interpolate_tree(v, environ, where, f"{path}.{k}" if path else str(k), problems)
                for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_tree(v, environ, where, f"{path}[{i}]", problems)
                for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    at = f"{where}: {path}" if path else where
    missing: list[str] = []
    try:
        result = expand(value, environ, missing)
    except InterpolationError as e:
        problems.append(Problem(at, e.message, e.hint))
        return value
    for name in dict.fromkeys(missing):
        problems.append(Problem(at, f"${{{name}}} is not set; using \"\"",
                                f"set {name} in entrypoint's environment or write ${{{name}:-default}}",
                                warning=True))
    return result     # a NUL in the result is the schema's to report, with its place
