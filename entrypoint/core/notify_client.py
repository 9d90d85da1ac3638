"""entrypoint as a notify client itself: systemd `Type=notify`, `podman run --sdnotify=container`.

When the runner's own environment has `NOTIFY_SOCKET` (CONTRACT §12) it sends `READY=1`
once every enabled service is ready, `STATUS=` with a summary as states change,
`RELOADING=1` then `READY=1` around a reload, `STOPPING=1` when the shutdown begins, and
`WATCHDOG=1` every `WATCHDOG_USEC`/2 when asked. Sends never block the loop: a full or
missing socket loses that datagram (systemd's own clients do the same), with one warning.
Services never see this socket: the supervisor takes it out of their environment.
"""

from __future__ import annotations

import os
import socket
import time


class SelfNotifier:
    def __init__(self, supervisor, path: str, watchdog_usec: str | None, watchdog_pid: str | None):
        self.sup = supervisor
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)
        self.ready_sent = False
        self.reloading = False
        self._status = ""
        self._status_soon = False
        self._warned = False
        self._watchdog = None
        interval = _watchdog_interval(watchdog_usec, watchdog_pid)
        if interval is not None:
            self._watchdog = interval
        supervisor.change_listeners.append(self._on_change)
        supervisor.phase_listeners.append(self._on_phase)

    def start(self) -> None:
        """The loop runs: say where we are, and start the watchdog pings."""
        self._update()
        if self._watchdog is not None:
            self.sup._loop.call_soon(self._ping)

    def close(self) -> None:
        self.sock.close()

    def send(self, text: str) -> None:
        try:
            self.sock.sendto(text.encode(), socket.MSG_DONTWAIT, self.address)
        except BlockingIOError:
            pass        # its reader is behind: this datagram is lost, as with sd_notify
        except OSError as exc:
            if not self._warned:
                self._warned = True
                self.sup.printer.system(f"NOTIFY_SOCKET {self.address.lstrip(chr(0))}: cannot "
                                        f"send ({exc.strerror or exc}); readiness is not reported",
                                        "warning")

    def _ping(self) -> None:
        if self.sock.fileno() < 0:
            return
        self.send("WATCHDOG=1")
        self.sup._loop.call_later(self._watchdog, self._ping)

    def _on_change(self, service) -> None:
        if not self._status_soon:   # once per loop iteration: N services start together
            self._status_soon = True
            self.sup._loop.call_soon(self._update)

    def _on_phase(self, phase: str) -> None:
        if phase == "stopping":
            self.send(f"STOPPING=1\nSTATUS=stopping ({self.sup.end_reason})")
        elif phase == "reloading":
            self.reloading = True
            self.send(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
                      f"\nSTATUS=reloading the config")
        elif phase == "reloaded":
            self.reloading = False
            self.ready_sent = False     # READY=1 again ends the reload, as systemd expects
            self._update()

    def _update(self) -> None:
        self._status_soon = False
        sup = self.sup
        if sup.shutting_down or self.reloading or self.sock.fileno() < 0:
            return
        enabled = [s for s in sup.services.values() if s.spec.enabled]
        waiting = sup.not_ready()
        status = (f"{len(enabled) - len(waiting)} of {len(enabled)} services ready"
                  + (f"; waiting for {', '.join(s.name for s in waiting[:5])}" if waiting else ""))
        lines = []
        if not waiting and not self.ready_sent:
            self.ready_sent = True
            lines.append("READY=1")
        if status != self._status or lines:
            self._status = status
            lines.append(f"STATUS={status}")
            self.send("\n".join(lines))


def _watchdog_interval(usec: str | None, pid: str | None) -> float | None:
    """Half the period systemd asked for, or None (not asked, or asked of another pid)."""
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


def attach(supervisor) -> SelfNotifier | None:
    if not supervisor.own_notify_socket:
        return None
    return SelfNotifier(supervisor, supervisor.own_notify_socket, *supervisor.own_watchdog)
