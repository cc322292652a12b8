"""claim takes at most one request per subject per batch (issue 10: several facts of one subject
in one MEMIT batch fail far more often), on SQLite and PostgreSQL."""

from __future__ import annotations

from kbsync.store import db as store_db
from kbsync.store.models import EditRequestRow
from kbsync.store.queue import claim
from kbsync.store.transitions import enqueue


def test_requests_of_one_subject_are_spread_over_batches(db_url: str) -> None:
    store_db.upgrade(db_url)
    database = store_db.open_database(db_url)
    try:
        with database.session() as s:
            for subject, relation, new in [("Q30", "P35", "A"), ("Q30", "P6", "B"), ("Q183", "P35", "C"),
                                           ("Q30", "P36", "D"), ("Q142", "P6", "E")]:
                enqueue(s, EditRequestRow(subject=subject, relation=relation, subject_label=subject, prompt="{} is",
                                          target_new=new, target_new_id=new, target_old="x", acceptable=[new],
                                          paraphrases=[], content_hash=new), "test")
        batches = []
        for _ in range(4):
            with database.session() as s:
                batches.append([r.target_new for r in claim(s, 3, "w", lease_s=60)])
        assert batches == [["A", "C", "E"], ["B"], ["D"], []]
    finally:
        database.dispose()
