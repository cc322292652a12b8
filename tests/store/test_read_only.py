"""status, audit and the read-only dashboard on a state directory that cannot be written (a
mounted backup), creating nothing there: no write test file, no SQLite -wal/-shm (issue 25).

The tests run as root in CI, where chmod blocks nothing; a read-only mount is what access(2)
and open(2) report, so those two are made to say EROFS for the directory, as the kernel would.
SQLite's own opens are C calls this cannot reach: that the database was opened read-only shows
in the files it leaves (a read-write WAL open makes -wal and -shm)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from kbsync.store import db as store_db
from kbsync.store.events import record_event


@pytest.fixture
def backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state directory with a database in it, then mounted read-only."""
    state = tmp_path / "state"
    state.mkdir()
    url = f"sqlite:///{state / 'kbsync.db'}"
    store_db.upgrade(url)
    db = store_db.open_database(url)
    with db.session() as s:
        record_event(s, "diff", run_id="before-the-backup")
    db.dispose()
    assert sorted(p.name for p in state.iterdir()) == ["kbsync.db"]   # a clean close leaves no -wal/-shm
    inside = str(state)

    real_open, real_access = os.open, os.access

    def ro_open(path, flags, *args, **kw):  # type: ignore[no-untyped-def]
        if str(path).startswith(inside) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kw)

    def ro_access(path, mode, *args, **kw):  # type: ignore[no-untyped-def]
        if str(path).startswith(inside) and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kw)

    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "access", ro_access)
    return state


def test_status_and_audit_read_a_mounted_backup(run_cli, backup: Path) -> None:
    env = {"KBSYNC_STATE__DIR": str(backup)}
    r = run_cli("status", env=env)
    assert r.exit_code == 0 and "last run    diff" in r.out, r.err
    r = run_cli("audit", "--json", env=env)
    assert r.exit_code == 0, r.err
    assert sorted(p.name for p in backup.iterdir()) == ["kbsync.db"]   # nothing made beside it
    r = run_cli("apply", env=env)                                       # a writer is still refused, clearly
    assert r.exit_code == 3 and "not writable" in r.err


def test_the_read_only_dashboard_serves_a_backup_and_makes_no_wal(backup: Path, make_settings) -> None:
    from starlette.testclient import TestClient

    from kbsync.dashboard.app import app_from_settings
    from kbsync.runtime import App

    settings = make_settings(db_url=f"sqlite:///{backup / 'kbsync.db'}", state={"dir": str(backup)})
    app = App(settings=settings, run_id="ro", read_only=True)
    web = app_from_settings(settings, app.database(), settings.state.dir, "ro", allow_actions=False)
    with TestClient(web) as client:
        assert client.get("/").status_code == 200
        assert client.get("/timeline").status_code == 200
    app.close()
    assert sorted(p.name for p in backup.iterdir()) == ["kbsync.db"]


def test_a_reader_beside_a_running_writer_uses_its_wal(tmp_path: Path) -> None:
    """While a writer has the database open (its -wal exists), a reader sees what it committed."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    store_db.upgrade(url)
    writer = store_db.open_database(url)
    with writer.session() as s:
        record_event(s, "diff", run_id="live")
    assert (tmp_path / "k.db-wal").exists()
    assert "immutable" not in store_db.read_only_uri(tmp_path / "k.db")
    reader = store_db.open_database(url, read_only=True)
    from sqlalchemy import select

    from kbsync.store.models import Event

    with reader.session() as s:
        assert s.scalars(select(Event.run_id)).all() == ["live"]
    reader.dispose()
    writer.dispose()
