"""claim and a subject's requests (issue 10: several facts of one subject in one MEMIT batch fail far
more often unless their targets are merged): whole subjects in one batch when the editor merges
them, else at most one per subject per batch; on SQLite and PostgreSQL."""

from __future__ import annotations

from kbsync.store import db as store_db
from kbsync.store.models import EditRequestRow
from kbsync.store.queue import claim
from kbsync.store.transitions import enqueue

REQUESTS = [("Q30", "P35", "A"), ("Q30", "P6", "B"), ("Q183", "P35", "C"), ("Q30", "P36", "D"), ("Q142", "P6", "E"),
            ("Q183", "P6", "F")]


def _batches(db_url: str, limit: int, together: bool) -> list[list[str]]:
    store_db.upgrade(db_url)
    database = store_db.open_database(db_url)
    try:
        with database.session() as s:
            for subject, relation, new in REQUESTS:
                enqueue(s, EditRequestRow(subject=subject, relation=relation, subject_label=subject, prompt="{} is",
                                          target_new=new, target_new_id=new, target_old="x", acceptable=[new],
                                          paraphrases=[], content_hash=new), "test")
        batches = []
        for _ in range(4):
            with database.session() as s:
                batches.append([r.target_new for r in claim(s, limit, "w", lease_s=60, subjects_together=together)])
        return batches
    finally:
        database.dispose()


def test_requests_of_one_subject_are_spread_over_batches_without_merging(db_url: str) -> None:
    assert _batches(db_url, 3, together=False) == [["A", "C", "E"], ["B", "F"], ["D"], []]


def test_requests_of_one_subject_go_in_one_batch_when_merged(db_url: str) -> None:
    # Q30's three fill the first batch; Q183's two and Q142's one the second, oldest subject first
    assert _batches(db_url, 3, together=True) == [["A", "B", "D"], ["C", "F", "E"], [], []]


def test_a_subject_larger_than_the_batch_fills_it_with_its_oldest(db_url: str) -> None:
    assert _batches(db_url, 2, together=True) == [["A", "B"], ["C", "F"], ["D", "E"], []]
