"""The migrations create exactly the models' schema, on SQLite and PostgreSQL, with its constraints."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from kbsync.errors import IllegalTransitionError, SchemaOutOfDateError
from kbsync.store import db as store_db
from kbsync.store.models import Base, EditRequestRow, RequestTransition
from kbsync.store.states import RequestState
from kbsync.store.transitions import enqueue, move_request
from kbsync.store.views import VIEWS


def _request(**over: object) -> EditRequestRow:
    fields = dict(
        subject="Q142", relation="P36", subject_label="France", prompt="The capital of {} is",
        target_new="Paris", target_new_id="Q90", target_old="Lyon", acceptable=["Paris"],
        paraphrases=["{}'s capital is"], content_hash="h1",
    )
    fields.update(over)
    return EditRequestRow(**fields)


@pytest.fixture
def migrated(db_url: str) -> store_db.Database:
    store_db.upgrade(db_url)
    database = store_db.open_database(db_url)
    yield database
    database.dispose()


def test_migrated_schema_matches_models(migrated: store_db.Database) -> None:
    with migrated.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    names = set(inspect(migrated.engine).get_view_names())
    assert set(VIEWS) <= names


def test_upgrade_is_idempotent(db_url: str) -> None:
    assert store_db.upgrade(db_url) == (None, store_db.head_revision())
    assert store_db.upgrade(db_url) == (store_db.head_revision(), store_db.head_revision())


def test_unknown_state_rejected_by_check_constraint(migrated: store_db.Database) -> None:
    with pytest.raises(IntegrityError), migrated.session() as s:
        s.add(_request(state="half-done"))


def test_second_open_request_for_same_fact_rejected(migrated: store_db.Database) -> None:
    with migrated.session() as s:
        enqueue(s, _request(), "model said Lyon")
    with pytest.raises(IntegrityError), migrated.session() as s:
        enqueue(s, _request(), "again")
    # A closed one does not block a new open one.
    with migrated.session() as s:
        row = s.scalars(select(EditRequestRow)).one()
        move_request(s, row, RequestState.SUPERSEDED, "newer KB value")
    with migrated.session() as s:
        enqueue(s, _request(), "queued again after supersede")
        assert s.scalar(select(text("count(*)")).select_from(EditRequestRow)) == 2


def test_illegal_transition_rejected_and_legal_one_recorded(migrated: store_db.Database) -> None:
    with migrated.session() as s:
        row = enqueue(s, _request(), "disagreement")
        with pytest.raises(IllegalTransitionError, match="cannot go from pending to verified"):
            move_request(s, row, RequestState.VERIFIED, "skip ahead")
        move_request(s, row, RequestState.CLAIMED, "worker w1")
    with migrated.session() as s:
        moves = s.execute(select(RequestTransition.from_state, RequestTransition.to_state)).all()
        assert [tuple(m) for m in moves] == [(None, "pending"), ("pending", "claimed")]
        history = s.execute(text("SELECT to_state, reason FROM v_fact_history ORDER BY at, transition_id")).all()
        assert [tuple(h) for h in history] == [("pending", "disagreement"), ("claimed", "worker w1")]


def test_database_behind_migrations_refused(sqlite_url: str) -> None:
    with pytest.raises(SchemaOutOfDateError, match="kbsync db upgrade"):
        store_db.open_database(sqlite_url)
    store_db.upgrade(sqlite_url, "head")
    with store_db.make_engine(sqlite_url).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    with pytest.raises(SchemaOutOfDateError, match="run `kbsync db upgrade`"):
        store_db.open_database(sqlite_url)


def test_reaper_returns_expired_leases_and_fails_their_batch(migrated: store_db.Database) -> None:
    from datetime import timedelta

    from kbsync.store.models import Batch, utcnow
    from kbsync.store.queue import claim, reap

    with migrated.session() as s:
        enqueue(s, _request(), "disagreement")
        enqueue(s, _request(subject="Q183", subject_label="Germany", target_new="Berlin"), "disagreement")
    with migrated.session() as s:
        rows = claim(s, 1, "w1", lease_s=60)
        batch = Batch(model_key="m", algorithm="memit", hparams={}, n_edits=1, worker="w1")
        s.add(batch)
        s.flush()
        rows[0].batch_id = batch.id
        claimed_id = rows[0].id
    with migrated.session() as s:
        assert reap(s, now=utcnow() + timedelta(seconds=30)) == 0   # lease still valid
        assert reap(s, now=utcnow() + timedelta(seconds=61)) == 1
    with migrated.session() as s:
        row = s.get(EditRequestRow, claimed_id)
        assert row.state == "pending" and "lease expired (worker w1" in row.state_reason
        assert s.scalars(select(Batch)).one().state == "failed"
        # the other request was never claimed
        assert {r.state for r in s.scalars(select(EditRequestRow))} == {"pending"}
