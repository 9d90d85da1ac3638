"""Health probes: http, tcp and exec, each one attempt bounded by its timeout.

An `exec` probe is a child like any other: it is spawned through `spawn.py` and its exit
comes from the reaper (DESIGN §2, one reaper), through the `run_exec` callable the
service passes in.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from entrypoint.config.spec import HealthSpec

# run_exec(argv, timeout) -> (exit code or None on timeout, output)
ExecRunner = Callable[[tuple[str, ...], float], Awaitable[tuple[int | None, str]]]


async def probe(spec: HealthSpec, run_exec: ExecRunner) -> tuple[bool, str]:
    """One health check attempt: (healthy?, what it said)."""
    try:
        if spec.kind == "exec":
            code, output = await run_exec(tuple(spec.target), spec.timeout)
            if code is None:
                return False, f"timed out after {spec.timeout:g}s"
            return code == 0, (output.strip()[-500:] or f"exit status {code}")
        if spec.kind == "tcp":
            return await asyncio.wait_for(_tcp(str(spec.target)), spec.timeout)
        return await asyncio.wait_for(_http(str(spec.target)), spec.timeout)
    except asyncio.TimeoutError:
        return False, f"timed out after {spec.timeout:g}s"
    except (OSError, ValueError) as exc:
        return False, str(exc) or exc.__class__.__name__


async def monitor(service, child) -> None:
    """Probe `service` every interval while `child` runs: health, and RUNNING once healthy.

    With `on_unhealthy = "restart"`, `retries` failures in a row stop the child (the one
    stop of the child handle); the run loop then restarts it by its policy."""
    from entrypoint.core.state import State

    check = service.spec.healthcheck
    clock = service.rt.clock
    began = clock()
    failures = 0
    passed = False      # a success ends this run's start period early, as in Docker
    while True:
        ok, said = await probe(check, service._run_exec_probe)
        service.last_check = (time.time(), ok, said)
        if ok:
            failures, passed = 0, True
            if service.health != "healthy":
                service.say("healthy")
                service._set_health("healthy")
            if service.state == State.STARTING and service.protocol_ready:
                service._set_state(State.RUNNING, "healthy")
        elif passed or clock() - began >= check.start_period:
            failures += 1
            if failures >= check.retries and service.health != "unhealthy":
                restart = check.on_unhealthy == "restart"   # say why the stop comes
                service.say(f"unhealthy after {failures} failed checks: {said}"
                            + ('; restarting it (on_unhealthy = "restart")' if restart else ""),
                            "warning")
                service._set_health("unhealthy")
                if service.state == State.STARTING:
                    service._set_state(State.RUNNING, "unhealthy")
                if check.on_unhealthy == "restart":
                    service._health_restart = True
                    service.rt.loop.create_task(service._terminate(child, "unhealthy: restarting"))
                    return
        await asyncio.sleep(check.interval)


async def _tcp(target: str) -> tuple[bool, str]:
    host, _, port = target.rpartition(":")
    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    writer.close()
    await _closed(writer)
    return True, f"connected to {target}"


async def _http(url: str) -> tuple[bool, str]:
    """GET `url`; healthy on a 2xx or 3xx status, as Docker's curl-style checks treat it."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    host = parts.hostname or "127.0.0.1"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    reader, writer = await asyncio.open_connection(host, port, ssl=_tls_context() if secure else None)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\n"
                     f"User-Agent: entrypoint-healthcheck\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = (await reader.readline()).decode("latin-1").strip()
    finally:
        writer.close()
        await _closed(writer)
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[1].isdigit():
        return False, f"not an HTTP response: {status_line[:80]!r}"
    status = int(fields[1])
    return 200 <= status < 400, f"HTTP {status_line[len(fields[0]) + 1:]}"


def _tls_context():
    """The TLS context of an https probe; imports ssl here, on first use.

    The runner imports asyncio with ssl blocked (`config/isolate.import_asyncio_without_ssl`):
    measured 16.0 MB PSS against 20.4 MB with ssl (python 3.11, `import asyncio` alone), for
    TLS that only an https probe needs. asyncio then holds `ssl = None` in two modules and
    defines its TLS classes only when ssl imported, so this hands ssl back to them (and
    reloads sslproto) before the first https connection. A plain lazy import cannot do
    this: asyncio bound the name at its own import. Checked by the https probe test and
    the runner-memory test (tests/integration/test_daemons.py).
    """
    import importlib
    import ssl
    import sys

    for name in ("asyncio.base_events", "asyncio.selector_events"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "ssl", ssl) is None:
            module.ssl = ssl
    sslproto = sys.modules.get("asyncio.sslproto")
    if sslproto is not None and getattr(sslproto, "ssl", ssl) is None:
        importlib.reload(sslproto)   # callers look its classes up as sslproto.X at each use
    # A health probe asks "does it answer?", like `curl -k`: local services often use
    # self-signed certificates, so the certificate is not verified.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _closed(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.wait_closed()
    except OSError:
        pass
