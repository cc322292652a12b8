"""The daemon's health: healthy, or unhealthy since a moment for a reason (its database out of reach).

A database error that reaches the daemon's loop (a lost connection, a revoked login, a full disk)
does not stop it. The daemon marks itself unhealthy, skips its ticks and asks the database again
with back-off (5 s, doubling, at most 5 minutes); when the database answers it records the
outage as a `database_outage` event and goes on. Meanwhile the state is told everywhere an
operator looks:

    state_dir/daemon-health.json   {"healthy": false, "since": ..., "reason": ..., "pid": ...}
                                   (read by `kbsync status`, which may not reach the database)
    metrics                        kbsync_healthy 0 and kbsync_unhealthy{reason="..."} 1
    systemd                        STATUS=UNHEALTHY since ...: reason; next try in N s

The watchdog is still fed while the loop is alive: a restart cannot bring a database back, and
the loop that retries is the one that notices when it is back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from kbsync.durable import write_text_durably
from kbsync.logs import get_logger
from kbsync.store.db import Database

log = get_logger(__name__)

HEALTH_FILE = "daemon-health.json"
FIRST_WAIT_S, MOST_WAIT_S = 5.0, 300.0


@dataclass(frozen=True)
class Outage:
    since: datetime
    until: datetime
    reason: str
    ticks_skipped: int

    @property
    def seconds(self) -> float:
        return (self.until - self.since).total_seconds()

    def details(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "seconds": round(self.seconds, 1),
                "reason": self.reason, "ticks_skipped": self.ticks_skipped}


def database_answers(db: Database) -> str:
    """'' when the database answers a query; else the one-line reason it does not."""
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return ""
    except Exception as exc:  # noqa: BLE001 - any driver error is the reason, in one line
        return one_line(exc)


def one_line(exc: BaseException) -> str:
    one = getattr(exc, "one_line", None)
    if callable(one):
        return str(one())
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0]}" if lines else type(orig).__name__


@dataclass
class Health:
    """Healthy, or unhealthy since `since` for `reason`; `wait_s` is the back-off before the next try."""

    state_dir: Path
    since: datetime | None = None
    reason: str = ""
    wait_s: float = FIRST_WAIT_S
    ticks_skipped: int = 0
    listeners: list[Any] = field(default_factory=list)   # called with (healthy, reason) on each change

    @property
    def healthy(self) -> bool:
        return self.since is None

    @property
    def path(self) -> Path:
        return self.state_dir / HEALTH_FILE

    def unhealthy(self, reason: str) -> None:
        """The database failed: the first failure starts the period, later ones back off further."""
        if self.since is None:
            self.since, self.wait_s = datetime.now(UTC), FIRST_WAIT_S
            log.error("daemon_unhealthy", reason=reason, next_try_s=self.wait_s)
        else:
            self.wait_s = min(self.wait_s * 2, MOST_WAIT_S)
            log.warning("database_still_unreachable", reason=reason, unhealthy_since=self.since.isoformat(),
                        next_try_s=self.wait_s)
        self.reason = reason
        self._write()
        self._tell()

    def recovered(self) -> Outage | None:
        """The database answers again: the period that ended (None when it was healthy)."""
        if self.since is None:
            self._write()
            return None
        outage = Outage(self.since, datetime.now(UTC), self.reason, self.ticks_skipped)
        self.since, self.reason, self.wait_s, self.ticks_skipped = None, "", FIRST_WAIT_S, 0
        log.info("daemon_healthy_again", **outage.details())
        self._write()
        self._tell()
        return outage

    def describe(self) -> str:
        return "healthy" if self.since is None else \
            f"UNHEALTHY since {self.since:%Y-%m-%d %H:%M:%S %Z}: {self.reason}; next try in {self.wait_s:.0f} s"

    def _tell(self) -> None:
        for listener in self.listeners:
            listener(self.healthy, self.reason)

    def _write(self) -> None:
        data = {"healthy": self.healthy, "since": self.since.isoformat() if self.since else None,
                "reason": self.reason, "pid": os.getpid(), "at": datetime.now(UTC).isoformat()}
        try:
            write_text_durably(self.path, json.dumps(data) + "\n")
        except OSError as exc:   # a full or read-only state disk: the log, metrics and systemd still say it
            log.warning("health_file_not_written", path=str(self.path), error=exc.strerror)


def read_health(state_dir: Path) -> dict[str, Any] | None:
    """What the daemon last wrote of its health (None: no daemon has run here, or unreadable)."""
    try:
        data = json.loads((state_dir / HEALTH_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
