"""systemd's notify protocol, spoken to $NOTIFY_SOCKET directly (no libsystemd).

    READY=1      start-up done (lock held, scheduler running)       Type=notify
    STATUS=...   one line for `systemctl status`
    WATCHDOG=1   every WATCHDOG_USEC / 2, only while the loop's heartbeat is fresh
    STOPPING=1   shutdown begun

The socket is an AF_UNIX datagram socket; a name starting with '@' is in the abstract
namespace (a leading NUL byte). Without NOTIFY_SOCKET every call does nothing, so the same
code runs under systemd, cron, docker and tests. The watchdog pings only while the work
loop proves it is alive (`Heartbeat.beat`): a loop stuck longer than the watchdog interval
stops the pings, and systemd restarts the service.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping

from kbsync.logs import get_logger

log = get_logger(__name__)


class Heartbeat:
    """The work loop's proof of life: `beat()` at every safe point, `age()` seconds since."""

    def __init__(self) -> None:
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self._last


def socket_address(name: str) -> str | bytes:
    """'@name' -> the abstract address b'\\0name'; a path stays a path."""
    return b"\0" + name[1:].encode() if name.startswith("@") else name


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = socket_address(env["NOTIFY_SOCKET"]) if env.get("NOTIFY_SOCKET") else None
        usec = int(env.get("WATCHDOG_USEC", "0") or 0)
        pid = env.get("WATCHDOG_PID")
        for_us = not pid or pid == str(os.getpid())      # the watchdog may be meant for a parent
        self.watchdog_s = usec / 1e6 if usec > 0 and for_us else 0.0
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` lines as one datagram; False (logged once per error) when it cannot."""
        if self.address is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError as exc:
            log.warning("sd_notify_failed", error=str(exc), fields=list(fields))
            return False

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    # --- watchdog ----------------------------------------------------------------------
    def start_watchdog(self, heartbeat: Heartbeat) -> None:
        """Ping every watchdog interval / 2 while `heartbeat` is younger than the interval."""
        if not self.enabled or not self.watchdog_s or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, args=(heartbeat,), name="kbsync-watchdog", daemon=True)
        self._thread.start()

    def _watch(self, heartbeat: Heartbeat) -> None:
        every = self.watchdog_s / 2
        warned = False
        while not self._stop.wait(every):
            if heartbeat.age() < self.watchdog_s:
                self.send("WATCHDOG=1")
                warned = False
            elif not warned:
                log.error("watchdog_withheld", heartbeat_age_s=round(heartbeat.age(), 1), limit_s=self.watchdog_s)
                warned = True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
