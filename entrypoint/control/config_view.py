"""`config` over the control socket (and `GET /api/v1/config`): the running config with
every environment value redacted, and the web face's credentials never shown."""

from __future__ import annotations

import dataclasses

REDACTED = "***"


def config_view(config) -> dict:
    services = []
    for spec in config.services:
        entry = dataclasses.asdict(spec)
        entry["argv"] = list(spec.argv)
        entry["env"] = {key: REDACTED for key, _ in spec.env}   # names only: values may be secrets
        entry["depends_on"] = {dep: cond for dep, cond in spec.depends_on}
        services.append(entry)
    return {"source": config.source, "procfile": config.procfile,
            "timeouts": dataclasses.asdict(config.timeouts), "services": services}
