"""`[schedule] steps` may hold "verify": a tick re-checks every applied edit for drift, as
`kbsync verify --all` does (issue 25: the docs said to keep it in the schedule, which the steps
could not express)."""

from __future__ import annotations

from sqlalchemy import select

from kbsync.daemon.loop import Daemon
from kbsync.runtime import App
from kbsync.store.models import Event
from kbsync.sync.apply import apply_pending


def test_a_tick_can_run_verify(make_settings, make_writer, database, seed_capitals, sqlite_url) -> None:
    settings = make_settings(schedule={"steps": ["verify"]})
    seed_capitals(database, [("Q142", "France", "Paris", "Lyon"), ("Q183", "Germany", "Berlin", "Bonn")])
    (batch,) = apply_pending(make_writer(settings, database, "a1")).batches
    assert batch.state == "verified"
    app = App(settings, "tick-verify")
    try:
        assert Daemon(app, lambda: settings).run(once=True) == 0
    finally:
        app.close()
    with database.session() as s:
        verify = s.scalars(select(Event).where(Event.kind == "verify")).one()
        tick = s.scalars(select(Event).where(Event.kind == "tick")).one()
    assert verify.details["checked"] == 2 and verify.details["failed"] == []
    assert tick.ok and tick.details["checked"] == 2 and list(tick.details["steps"]) == ["verify"]
