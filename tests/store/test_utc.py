"""Times read back carry UTC on SQLite and PostgreSQL alike (issue 15 #11)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select

from kbsync.store import db as store_db
from kbsync.store.events import record_event
from kbsync.store.models import Event
from kbsync.store.status import status


def test_times_read_back_in_utc_with_a_zone(db_url: str) -> None:
    store_db.upgrade(db_url)
    db = store_db.open_database(db_url)
    paris = timezone(timedelta(hours=1))
    with db.session() as s:
        record_event(s, "diff", run_id="r1")
        s.add(Event(kind="x", actor="a", host="h", pid=1, kbsync_version="v", config_hash="", run_id="r2",
                    ok=True, details={}, at=datetime(2024, 3, 1, 13, 0, tzinfo=paris)))
        s.add(Event(kind="y", actor="a", host="h", pid=1, kbsync_version="v", config_hash="", run_id="r3",
                    ok=True, details={}, at=datetime(2024, 3, 1, 12, 0)))  # naive: UTC by convention
    with db.session() as s:
        events = list(s.scalars(select(Event).order_by(Event.id)))
    assert all(e.at.tzinfo is not None and e.at.utcoffset() == timedelta(0) for e in events)
    assert events[1].at == events[2].at == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    last = status(db)["last_run"]
    assert last is not None and last["at"].endswith("+00:00")
    db.dispose()


def test_audit_prints_utc_times(run_cli) -> None:
    assert run_cli("db", "upgrade").exit_code == 0
    from kbsync.store.views import _utc

    assert _utc("started_at", "2024-03-01 12:00:00.000001") == "2024-03-01T12:00:00.000001+00:00"
    assert _utc("at", datetime(2024, 3, 1, 13, tzinfo=timezone(timedelta(hours=1)))) == "2024-03-01T12:00:00+00:00"
    assert _utc("subject", "2024-03-01") == "2024-03-01"
