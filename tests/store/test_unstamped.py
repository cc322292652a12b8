"""A database with kbsync's tables but no alembic_version (issue 15 #4): detected, and `kbsync db
stamp` recovers it, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from kbsync.errors import DatabaseError, SchemaOutOfDateError
from kbsync.store import db as store_db


@pytest.fixture
def unstamped_url(db_url: str) -> str:
    store_db.upgrade(db_url)
    engine = store_db.make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    return db_url


def test_unstamped_database_is_named_and_upgrade_says_how_to_recover(unstamped_url: str) -> None:
    with pytest.raises(SchemaOutOfDateError, match="no schema revision.*kbsync db stamp"):
        store_db.open_database(unstamped_url)
    with pytest.raises(SchemaOutOfDateError, match="kbsync db stamp"):  # not "table kb_facts already exists"
        store_db.upgrade(unstamped_url)


def test_stamp_checks_the_tables_then_records_head(unstamped_url: str) -> None:
    engine = store_db.make_engine(unstamped_url)
    with engine.begin() as conn:
        conn.execute(text("DROP VIEW IF EXISTS v_fact_history"))
        conn.execute(text("DROP VIEW IF EXISTS v_failed_edits"))
        conn.execute(text("DROP VIEW IF EXISTS v_batch_changes"))
        conn.execute(text("ALTER TABLE probes DROP COLUMN content_hash"))
    engine.dispose()
    with pytest.raises(DatabaseError, match=r"missing probes\.content_hash"):
        store_db.stamp(unstamped_url)


def test_stamp_then_the_database_opens(unstamped_url: str) -> None:
    assert store_db.stamp(unstamped_url) == store_db.head_revision()
    store_db.open_database(unstamped_url).dispose()
    with pytest.raises(DatabaseError, match="already at revision"):
        store_db.stamp(unstamped_url)


def test_cli_status_upgrade_stamp(run_cli, tmp_path) -> None:
    assert run_cli("db", "upgrade").exit_code == 0
    engine = store_db.make_engine(f"sqlite:///{tmp_path / '.kbsync' / 'kbsync.db'}")
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    for args in (("status",), ("db", "upgrade")):
        r = run_cli(*args)
        assert r.exit_code == 4 and r.err.count("\n") == 1 and "kbsync db stamp" in r.err, r.err
    r = run_cli("db", "stamp")
    assert r.exit_code == 0 and store_db.head_revision() in r.out
    assert run_cli("status").exit_code == 0
