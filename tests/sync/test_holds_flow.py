"""A rollback stays rolled back and a failed edit waits (issue 25), end to end on a tiny model:
diff -> apply -> rollback -> diff again must not queue the fact again until the KB value
changes or an operator releases it; a fact whose edit failed is not queued again each tick."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from kbsync.store import db as store_db
from kbsync.store.models import Event, FactHold
from kbsync.store.status import status
from kbsync.sync.apply import apply_pending
from kbsync.sync.from_settings import diff_from_settings
from kbsync.sync.retry import release_holds
from kbsync.sync.rollback import rollback

TTL = """@prefix wd: <http://www.wikidata.org/entity/> .
@prefix wdt: <http://www.wikidata.org/prop/direct/> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
wd:Q1000 rdfs:label "Atlantis"@en ; wdt:P36 wd:Q5000 .
wd:Q5000 rdfs:label "{capital}"@en .
"""


def flow(make_settings, tmp_path: Path, sqlite_url: str, capital: str, **sections):  # type: ignore[no-untyped-def]
    kb = tmp_path / "kb.ttl"
    kb.write_text(TTL.format(capital=capital), encoding="utf-8")
    settings = make_settings(kb={"source": "rdf", "mode": "truthy", "files": [str(kb)]},
                             relations={"enabled": ["P36"]}, probe={"max_new_tokens": 3, "sample_unchanged": 0},
                             **sections)
    settings.state.dir.mkdir(parents=True, exist_ok=True)
    store_db.upgrade(sqlite_url)
    return settings, store_db.open_database(sqlite_url), kb


def diff(settings, db, run_id: str, dry_run: bool = False):  # type: ignore[no-untyped-def]
    return diff_from_settings(settings, db, settings.state.dir, run_id=run_id, full=True, dry_run=dry_run)


def test_a_rolled_back_fact_is_held_until_the_kb_changes_or_an_operator_releases_it(make_settings, make_writer,
                                                                                     tmp_path, sqlite_url) -> None:
    settings, db, kb = flow(make_settings, tmp_path, sqlite_url, "Poseidonia")
    assert diff(settings, db, "d1").queued == 1
    (batch,) = apply_pending(make_writer(settings, db, "a1")).batches
    assert batch.state == "verified"          # the tiny settings' thresholds are 0: the edit is published
    rollback(make_writer(settings, db, "rb"), batch.batch_id)
    # the KB still says Poseidonia and the model (rolled back) disagrees: it was queued again before
    again = diff(settings, db, "d2", dry_run=True)
    (row,) = again.rows
    assert row.action == "held" and "kbsync release" in row.held and again.held == 1
    assert diff(settings, db, "d3").queued == 0
    assert status(db)["holds"]["rolled_back"] == 1
    # an operator releases it: the next diff queues it (audited)
    released = release_holds(db, facts=[("Q1000", "P36")], run_id="rel", asked_by="ops")
    assert [r["kind"] for r in released.released] == ["rolled_back"]
    assert diff(settings, db, "d4").queued == 1
    with db.session() as s:
        event = s.scalars(select(Event).where(Event.kind == "release")).one()
        assert event.details["asked_by"] == "ops" and s.scalars(select(FactHold)).one().state == "released"
    db.dispose()


def test_a_new_kb_value_lifts_the_hold(make_settings, make_writer, tmp_path, sqlite_url) -> None:
    settings, db, kb = flow(make_settings, tmp_path, sqlite_url, "Poseidonia")
    diff(settings, db, "d1")
    (batch,) = apply_pending(make_writer(settings, db, "a1")).batches
    rollback(make_writer(settings, db, "rb"), batch.batch_id)
    kb.write_text(TTL.format(capital="Thera"), encoding="utf-8")     # the KB moved on
    assert diff(settings, db, "d2").queued == 1
    with db.session() as s:
        hold = s.scalars(select(FactHold)).one()
        assert (hold.state, hold.resolved_reason) == ("lapsed", "the KB value changed")
    db.dispose()


def test_a_failed_edit_is_not_queued_again_every_tick(make_settings, make_writer, tmp_path, sqlite_url) -> None:
    # an edit that cannot pass its own check: its rival is its own new value
    settings, db, _ = flow(make_settings, tmp_path, sqlite_url, "Poseidonia",
                           verify={"min_efficacy": 0.9}, editing={"retry_backoff_s": 3600})
    diff(settings, db, "d1")
    from kbsync.store.models import EditRequestRow

    with db.session() as s:
        s.scalars(select(EditRequestRow)).one().target_old = "Poseidonia"
    report = apply_pending(make_writer(settings, db, "a1"))
    assert report.failed == 1
    second = diff(settings, db, "d2")       # the next tick: nothing changed, so it waits
    (row,) = second.rows
    assert second.queued == 0 and row.action == "held" and row.held.startswith("failed 1x: waits for")
    assert status(db)["holds"]["failed"] == 1
    db.dispose()


def test_kbsync_release_on_the_command_line(make_settings, make_writer, tmp_path, sqlite_url, run_cli) -> None:
    """The operator's command: one line per released fact, audited, and the next diff queues it."""
    settings, db, kb = flow(make_settings, tmp_path, sqlite_url, "Poseidonia")
    diff(settings, db, "d1")
    (batch,) = apply_pending(make_writer(settings, db, "a1")).batches
    rollback(make_writer(settings, db, "rb"), batch.batch_id)
    env = {"KBSYNC_STATE__DIR": str(settings.state.dir), "KBSYNC_DATABASE__URL": sqlite_url}
    odd = run_cli("release", "Q1000", env=env)
    assert odd.exit_code == 2 and "SUBJECT RELATION pairs" in odd.err
    r = run_cli("release", "Q1000", "P36", env=env)
    assert r.exit_code == 0, r.err
    assert r.out.splitlines()[:2] == ["released 1 held fact(s)", f"  Q1000 P36 (rolled_back, batch {batch.batch_id})"]
    assert run_cli("release", "--all", "--json", env=env).out.strip() == "[]"   # nothing left held
    assert diff(settings, db, "d2").queued == 1
    with db.session() as s:
        assert s.scalars(select(FactHold)).one().state == "released"
        events = list(s.scalars(select(Event).where(Event.kind == "release").order_by(Event.id)))
        assert len(events) == 2   # each operator action is audited, the one that released nothing too
    db.dispose()
