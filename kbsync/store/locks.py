"""Named locks that live as long as a process holds them: one writer per model, one daemon
per database.

PostgreSQL: a session-level advisory lock on a dedicated connection (released by the server
when the process dies). SQLite: `flock` on a file in the state directory (released by the
kernel when the process dies). Either way a kill -9 never leaves a stale lock behind.

The holder says who it is (pid, host, since): in the lock file, or as the lock connection's
`application_name`; `LockedError` names it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from kbsync.errors import LockedError
from kbsync.store.db import Database


def _key(name: str) -> int:
    """A signed 64-bit advisory-lock key for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def holder_label() -> str:
    """Who holds a lock: `pid 123 on host since 2026-01-01T00:00:00Z`."""
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"pid {os.getpid()} on {socket.gethostname()} since {since}"


def _refused(what: str, holder: str) -> LockedError:
    who = f" ({holder})" if holder else ""
    return LockedError(f"{what} is held by another kbsync process{who}; wait for it to finish, or stop it")


def _pg_holder(conn, key: int) -> str:  # type: ignore[no-untyped-def]
    """The application_name of the session holding advisory lock `key` (a bigint: classid, objid)."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(text(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = :hi AND l.objid::bigint = :lo "
        "AND l.objsubid = 1"), {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}).first()
    name = row[0] if row else ""
    return name.removeprefix("kbsync ") if name and name.startswith("kbsync ") else ""


def _file_holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    first = os.read(fd, 512).decode(errors="replace").splitlines()
    return first[0].strip() if first else ""


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock on a connection of its own."""

    def __init__(self, db: Database, name: str, what: str) -> None:
        self.db, self.key, self.what = db, _key(name), what
        self.conn: Connection | None = None

    def take(self, deadline: float) -> None:
        conn = self.db.engine.connect()
        try:
            # application_name is at most 63 bytes; the label fits unless the host name is long
            conn.execute(text("SELECT set_config('application_name', :n, false)"),
                         {"n": f"kbsync {holder_label()}"[:63]})
            while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar():
                if time.monotonic() >= deadline:
                    raise _refused(self.what, _pg_holder(conn, self.key))
                time.sleep(0.5)
            conn.commit()
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def keep(self) -> None:
        """After the database was out of reach: still ours, or taken again on a new connection (the
        server released it with the old one), or LockedError when another process took it meanwhile."""
        unsigned = self.key & 0xFFFFFFFFFFFFFFFF
        try:
            assert self.conn is not None
            if self.conn.execute(text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid() "
                    "AND classid::bigint = :hi AND objid::bigint = :lo AND objsubid = 1"),
                    {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}).scalar():
                self.conn.commit()
                return
        except SQLAlchemyError:
            pass   # the lock's connection died with the outage: so did the lock
        self.release()
        self.take(time.monotonic())

    def release(self) -> None:
        if self.conn is None:
            return
        try:
            self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self.conn.commit()
        except SQLAlchemyError:
            pass   # a dead connection: the server released the lock with it
        finally:
            self.conn.close()
            self.conn = None


class Held:
    """What `held_lock` yields: `keep()` re-checks a lock the database may have dropped (PostgreSQL)."""

    def __init__(self, advisory: AdvisoryLock | None = None) -> None:
        self.advisory = advisory

    def keep(self) -> None:
        if self.advisory is not None:
            self.advisory.keep()


@contextlib.contextmanager
def held_lock(db: Database, name: str, lock_dir: Path, *, wait_s: float = 0.0, what: str = "") -> Iterator[Held]:
    """Hold lock `name` for the duration, or raise LockedError after waiting `wait_s` seconds."""
    what = what or f"lock {name}"
    deadline = time.monotonic() + wait_s
    if db.dialect == "postgresql":
        advisory = AdvisoryLock(db, name, what)
        advisory.take(deadline)
        try:
            yield Held(advisory)
        finally:
            advisory.release()
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / (hashlib.sha256(name.encode()).hexdigest()[:16] + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _refused(what, _file_holder(fd)) from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{holder_label()}\n{name}\n".encode())
        try:
            yield Held()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
