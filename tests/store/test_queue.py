"""The queue: supersede rules of enqueue_edit, claiming, and the reaper (with the poison cap)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from kbsync.store import db as store_db
from kbsync.store.models import Batch, EditRequestRow, utcnow
from kbsync.store.queue import claim, count_pending, enqueue_edit, reap
from kbsync.store.transitions import enqueue

from .conftest import request


def test_enqueue_edit_supersede_rules(migrated: store_db.Database) -> None:
    with migrated.session() as s:
        first = enqueue_edit(s, request(), "disagreement")
        assert first.action == "queued"
        # the same fact, value and KB content again: never queued twice
        assert enqueue_edit(s, request(), "again").action == "unchanged"
        # same answer, newer KB revision: the queued request is refreshed, not duplicated
        same = enqueue_edit(s, request(content_hash="h2"), "revised")
        assert same.action == "unchanged" and same.request.content_hash == "h2"
        # a new KB value supersedes the pending one
        newer = enqueue_edit(s, request(target_new="Marseille", target_new_id="Q23482", content_hash="h3"), "new")
        assert newer.action == "superseded" and newer.superseded is first.request
        assert first.request.state == "superseded" and first.request.superseded_by == newer.request.id
        assert count_pending(s) == 1


def test_a_claimed_request_is_not_superseded(migrated: store_db.Database) -> None:
    with migrated.session() as s:
        enqueue_edit(s, request(), "disagreement")
        claimed = claim(s, 1, "w1", lease_s=60)[0]
        # the worker is applying Paris right now: the same answer is in flight ...
        assert enqueue_edit(s, request(content_hash="h2"), "again").action == "in_flight"
        # ... a different one is queued beside it
        other = enqueue_edit(s, request(target_new="Nice", target_new_id="Q33959", content_hash="h3"), "new")
        assert other.action == "queued" and claimed.state == "claimed"


def test_reaper_returns_expired_leases_and_fails_their_batch(migrated: store_db.Database) -> None:
    with migrated.session() as s:
        enqueue(s, request(), "disagreement")
        enqueue(s, request(subject="Q183", subject_label="Germany", target_new="Berlin"), "disagreement")
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


def test_reaper_fails_a_request_as_poison_after_max_attempts(migrated: store_db.Database) -> None:
    with migrated.session() as s:
        rid = enqueue(s, request(), "disagreement").id
    for attempt in (1, 2):
        with migrated.session() as s:
            assert [r.id for r in claim(s, 1, f"w{attempt}", lease_s=60)] == [rid]
        with migrated.session() as s:
            assert reap(s, now=utcnow() + timedelta(seconds=61), max_attempts=2) == 1
            state = s.get(EditRequestRow, rid).state
            assert state == ("pending" if attempt == 1 else "failed")
    with migrated.session() as s:
        row = s.get(EditRequestRow, rid)
        assert row.state_reason.startswith("poison: lease expired (worker w2 stopped)")
        assert "died 2 times" in row.state_reason and "max_attempts 2" in row.state_reason
        assert claim(s, 1, "w3", lease_s=60) == []
