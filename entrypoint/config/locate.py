"""Finding the config: stdlib only, so that the plain init (no config) stays light."""

from __future__ import annotations

import os
from collections.abc import Mapping

from entrypoint.errors import UsageError

SEARCHED_PLACES = ["$ENTRYPOINT_CONFIG", "./services.toml", "/etc/entrypoint/services.toml", "./Procfile"]


def locate(explicit: str | None, procfile: str | None, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The config to use as `(path, "toml" | "procfile")`, or None when there is none.

    `-c FILE` wins, then `--procfile FILE`, then `$ENTRYPOINT_CONFIG`, then SEARCHED_PLACES.
    A file named explicitly (by option or variable) that does not exist is a UsageError.
    """
    for path, kind, what in ((explicit, None, "-c"), (procfile, "procfile", "--procfile"),
                             (environ.get("ENTRYPOINT_CONFIG"), None, "$ENTRYPOINT_CONFIG")):
        if path:
            if not os.path.exists(path):
                raise UsageError(f"config file {path} (from {what}) does not exist")
            return path, kind or _kind_of(path)
    for place in SEARCHED_PLACES[1:]:
        path = place.removeprefix("./")
        if os.path.isfile(path):
            return path, _kind_of(path)
    return None


def _kind_of(path: str) -> str:
    name = os.path.basename(path).lower()
    return "procfile" if "procfile" in name and not name.endswith(".toml") else "toml"
