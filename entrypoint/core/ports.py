"""Who holds a TCP port: for a service's declared `port` (CONTRACT §13).

Read from /proc/net/tcp and /proc/net/tcp6 (the listening sockets of this network
namespace, with their inode), then /proc/*/fd (which process has that socket open). Only
done before starting a service that declares a port; the fd scan runs only when the port
is taken, to name the holder.
"""

from __future__ import annotations

import os

LISTEN = "0A"


def listening_inodes(table: str, port: int) -> set[int]:
    """Inodes of sockets in LISTEN state on `port` in a /proc/net/tcp{,6} text."""
    found = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        try:
            if int(fields[1].rpartition(":")[2], 16) == port:
                found.add(int(fields[9]))
        except ValueError:
            continue
    return found


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def holders(inodes: set[int]) -> list[tuple[int, str]]:
    """(pid, command name) of each process with one of `inodes` open."""
    wanted = {f"socket:[{i}]" for i in inodes}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in wanted:
                    found.append((int(entry), _read(f"/proc/{entry}/comm").strip() or "?"))
                    break
            except OSError:
                continue
    return found


def taken_by(port: int) -> str | None:
    """None when nothing listens on `port`; else who does, for a message."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        inodes |= listening_inodes(_read(table), port)
    if not inodes:
        return None
    found = holders(inodes)
    if not found:
        return "a process we cannot see (another user's, or outside this PID namespace)"
    return ", ".join(f"pid {pid} ({name})" for pid, name in found[:3])
