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

from .conftest import request as _request


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
