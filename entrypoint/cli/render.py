"""Rendering of the runner's replies for people: the `list` table and `status` details.

Also used by the runner for its SIGUSR1 report. Standard library only (the client path).
"""

from __future__ import annotations

import time

from entrypoint.cli.table import format_table


def human_duration(seconds: float | None) -> str:
    """`3s`, `2m05s`, `1h02m`, `3d04h`; `-` for None."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def exit_text(exit: dict | None) -> str:
    """The EXIT column: the code, `SIGKILL` for a signal, `-` when it never exited."""
    if not exit:
        return "-"
    if exit.get("signal"):
        text = exit.get("text", "")
        return text.removeprefix("killed by ") if text.startswith("killed by ") else f"signal {exit['signal']}"
    return str(exit.get("code"))


def next_run_text(at: float | None, now: float | None = None) -> str:
    """`12:05:00 (in 42s)`; the date too when it is not within a day; `-` for None."""
    if at is None:
        return "-"
    now = time.time() if now is None else now
    shown = time.strftime("%H:%M:%S" if abs(at - now) < 86400 else "%Y-%m-%d %H:%M",
                          time.localtime(at))
    return f"{shown} (in {human_duration(max(0.0, at - now))})"



def progress_text(s: dict) -> str:
    """`40% cleaning /tmp`: the percent and status text a service sent (notify socket)."""
    said = s.get("notify") or {}
    progress = said.get("progress") or {}
    percent = progress.get("percent")
    parts = [f"{percent:g}%" if percent is not None else
             (f"{progress['done']} done" if progress.get("done") is not None else ""),
             said.get("status") or ""]
    return " ".join(p for p in parts if p)


def human_bytes(n: int | None) -> str:
    """`512K`, `12.3M`, `1.1G`; `-` for None."""
    if n is None:
        return "-"
    for unit, size in (("G", 1 << 30), ("M", 1 << 20)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n >> 10}K"


def cpu_text(s: dict) -> str:
    return "-" if s.get("cpu_percent") is None else f"{s['cpu_percent']:.1f}%"


def render_list(services: list[dict], wide: bool = False) -> str:
    header = ["NAME", "STATE", "HEALTH", "PID", "UPTIME", "RESTARTS", "EXIT"]
    rows = [[s["name"], s["state"], s["health"], s["pid"] if s["pid"] is not None else "-",
             human_duration(s.get("uptime")), s.get("restarts", 0), exit_text(s.get("exit"))]
            for s in services]
    if wide:    # CPU and memory, summed over each service's process group
        header += ["CPU", "CPU TIME", "MEM"]
        for row, s in zip(rows, services):
            cpu_time = s.get("cpu_seconds")
            row += [cpu_text(s), "-" if cpu_time is None else f"{cpu_time:.2f}s",
                    human_bytes(s.get("rss_bytes"))]
    if any(s.get("job") for s in services):      # jobs: when each runs next
        header.append("NEXT RUN")
        for row, s in zip(rows, services):
            row.append(next_run_text(s.get("next_run")) if s.get("job") else "")
    if any(progress_text(s) for s in services):  # what services say of their progress
        header.append("STATUS")
        for row, s in zip(rows, services):
            row.append(progress_text(s))
    return format_table(header, rows)


def render_event(e: dict) -> str:
    """One `events` line: `12:00:01  web  RUNNING  healthy  pid 42  (reason)`."""
    parts = [time.strftime("%H:%M:%S", time.localtime(e["time"])), e["service"], e["state"]]
    if e.get("health") not in (None, "-"):
        parts.append(e["health"])
    if e.get("pid") is not None:
        parts.append(f"pid {e['pid']}")
    if e.get("exit") and e["state"] not in ("RUNNING", "STARTING"):
        parts.append(f"exit: {e['exit']}")
    if e.get("reason") and e["reason"] != f"pid {e.get('pid')}":
        parts.append(f"({e['reason']})")
    return "  ".join(parts)


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def render_status(s: dict) -> str:
    head = f"{s['name']}: {s['state']}"
    if s.get("health") not in (None, "-"):
        head += f" ({s['health']})"
    if s.get("pid") is not None:
        head += f", pid {s['pid']}, up {human_duration(s.get('uptime'))}"
    if not s.get("enabled", True):
        head += " (enabled = false)"
    lines = [head]

    def field(label: str, value) -> None:
        lines.append(f"  {label + ':':<13}{value}")

    field("command", " ".join(s.get("command", [])))
    who = s.get("user") or "(the runner's)"
    if s.get("group"):
        who += f", group {s['group']}"
    field("user", who)
    if s.get("directory"):
        field("directory", s["directory"])
    if s.get("depends_on"):
        field("depends on", ", ".join(f"{d} ({c})" for d, c in s["depends_on"]))
    kind = "oneshot" if s.get("oneshot") else f"restart = {s.get('restart', '?')}"
    field("policy", kind + (", required" if s.get("required") else ""))
    job = s.get("job")
    if job:
        field("schedule", f"{job['schedule']}, overlap = {job['overlap']}"
                          + (", paused (disabled)" if job.get("paused") else ""))
        field("next run", next_run_text(s.get("next_run")))
        field("runs", f"{job['runs']} since the runner started, {job['skipped']} skipped")
        last = s.get("last_run")
        if last:
            field("last run", f"{_clock(last['started'])}, {last['trigger']}, "
                              f"{'ok' if last['ok'] else 'failed'} ({last['why']}), "
                              f"{last['ended'] - last['started']:.1f}s")
    field("restarts", s.get("restarts", 0))
    if s.get("cpu_seconds") is not None:
        field("resources", f"CPU {cpu_text(s)} ({s['cpu_seconds']:.2f}s in all), "
                           f"memory {human_bytes(s.get('rss_bytes'))} (process group)")
    exit = s.get("exit")
    field("last exit", exit["text"] if exit else "-")
    if s.get("error"):
        field("last error", s["error"])
    check = s.get("healthcheck")
    if check:
        target = check["target"] if isinstance(check["target"], str) else " ".join(check["target"])
        field("healthcheck", f"{check['kind']} {target}, every {check['interval']:g}s, "
                             f"{check['retries']} retries")
        last = s.get("last_check")
        if last:
            result = "ok" if last["ok"] else "failed"
            output = (last.get("output") or "").strip().replace("\n", " | ")
            field("last check", f"{result} {human_duration(time.time() - last['at'])} ago"
                                + (f": {output[:200]}" if output else ""))
    _readiness(s, field)
    lines.append("  history:")
    for h in s.get("history", []):
        reason = f"  {h['reason']}" if h.get("reason") else ""
        lines.append(f"    {_clock(h['at'])}  {h['state']:<9}{reason}".rstrip())
    return "\n".join(lines)


def _readiness(s: dict, field) -> None:
    """The ready protocol, port, and what the service said on its notify socket."""
    if s.get("ready"):
        said = s.get("notify") or {}
        field("ready", f"{s['ready']}" + (" (ready)" if said.get("ready") else " (not yet)"))
    if s.get("port") is not None:
        field("port", s["port"])
    said = s.get("notify") or {}
    if said.get("status"):
        field("status text", said["status"])
    progress = said.get("progress")
    if progress:
        text = f"{progress['done']}" + (f"/{progress['total']}" if progress.get("total") else "")
        if progress.get("percent") is not None:
            text += f" ({progress['percent']:g}%)"
        if progress.get("failed"):
            text += f", {progress['failed']} failed"
        if progress.get("rate"):
            text += f", {progress['rate']:.3g}/s"
        if progress.get("eta") is not None:
            text += f", ETA {human_duration(progress['eta'])}"
        field("progress", text)


def render_history(runs: list[dict]) -> str:
    """The `history` table: one run a line, oldest first; WHY explains a crash loop."""
    rows = []
    for r in runs:
        exit = ("-" if r.get("exit_code") is None and not r.get("signal") else
                exit_text({"code": r.get("exit_code"), "signal": r.get("signal"),
                           "text": r.get("why", "")}))
        why = r.get("why") or ""
        progress = r.get("progress")
        if progress and progress.get("total"):
            why += f" [{progress.get('done', 0)}/{progress['total']}]"
        if r.get("status"):
            why += f" {r['status']!r}"
        duration = "-" if r.get("duration") is None else f"{r['duration']:.1f}s"
        rows.append([_clock(r["start"]), r["service"], r["trigger"], duration, exit,
                     r["outcome"], why])
    return format_table(["START", "SERVICE", "TRIGGER", "DURATION", "EXIT", "OUTCOME", "WHY"],
                        rows)
