"""A migrated database (SQLite and PostgreSQL) and an edit request to put in it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kbsync.store import db as store_db
from kbsync.store.models import EditRequestRow


def request(**over: object) -> EditRequestRow:
    fields = dict(
        subject="Q142", relation="P36", subject_label="France", prompt="The capital of {} is",
        target_new="Paris", target_new_id="Q90", target_old="Lyon", acceptable=["Paris"],
        paraphrases=["{}'s capital is"], content_hash="h1",
    )
    fields.update(over)
    return EditRequestRow(**fields)


@pytest.fixture
def migrated(db_url: str) -> Iterator[store_db.Database]:
    store_db.upgrade(db_url)
    database = store_db.open_database(db_url)
    yield database
    database.dispose()
