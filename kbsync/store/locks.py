"""Named locks that live as long as a process holds them: one writer per model, one daemon
per database.

PostgreSQL: a session-level advisory lock on a dedicated connection (released by the server
when the process dies). SQLite: `flock` on a file in the state directory (released by the
kernel when the process dies). Either way a kill -9 never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import text

from kbsync.errors import LockedError
from kbsync.store.db import Database


def _key(name: str) -> int:
    """A signed 64-bit advisory-lock key for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def held_lock(db: Database, name: str, lock_dir: Path, *, wait_s: float = 0.0, what: str = "") -> Iterator[None]:
    """Hold lock `name` for the duration, or raise LockedError after waiting `wait_s` seconds."""
    what = what or f"lock {name}"
    deadline = time.monotonic() + wait_s
    if db.dialect == "postgresql":
        conn = db.engine.connect()
        try:
            key = _key(name)
            while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                if time.monotonic() >= deadline:
                    raise LockedError(f"{what} is held by another kbsync process; wait for it to finish")
                time.sleep(0.5)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        finally:
            conn.close()
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
                    raise LockedError(f"{what} is held by another kbsync process; wait for it to finish") from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {name}\n".encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
