"""What a dead worker left: its running batches fail, its claims return, a poison request is failed."""

from __future__ import annotations

from sqlalchemy import select

from kbsync.store import db as store_db
from kbsync.store.models import Batch, EditRequestRow
from kbsync.store.queue import claim
from kbsync.store.recovery import recover_dead_worker, recoveries
from kbsync.store.transitions import enqueue

from .conftest import request


def _die_holding(db: store_db.Database, model_key: str, worker: str) -> None:
    """A worker claims everything pending, opens a batch, and dies (no clean-up)."""
    with db.session() as s:
        rows = claim(s, 10, worker, lease_s=3600)
        batch = Batch(model_key=model_key, algorithm="memit", hparams={}, n_edits=len(rows), worker=worker)
        s.add(batch)
        s.flush()
        for row in rows:
            row.batch_id = batch.id


def test_a_request_that_kills_its_worker_is_poison_after_max_attempts(migrated: store_db.Database) -> None:
    with migrated.session() as s:
        rid = enqueue(s, request(), "disagreement").id
    for attempt in (1, 2, 3):
        _die_holding(migrated, "m", f"host:{attempt}")
        with migrated.session() as s:
            returned, poisoned = recover_dead_worker(s, "m", max_attempts=3)
            assert (returned, poisoned) == ((1, 0) if attempt < 3 else (0, 1))
    with migrated.session() as s:
        row = s.get(EditRequestRow, rid)
        assert row.state == "failed" and row.state_reason.startswith("poison: worker host:3 stopped")
        assert recoveries(s, rid) == 2     # the third recovery failed it instead of returning it
        assert [b.state for b in s.scalars(select(Batch))] == ["failed"] * 3


def test_recovery_only_fails_the_models_own_running_batches(migrated: store_db.Database) -> None:
    with migrated.session() as s:
        enqueue(s, request(), "disagreement")
    _die_holding(migrated, "other-model", "host:1")
    with migrated.session() as s:
        assert recover_dead_worker(s, "m", max_attempts=3) == (1, 0)
        assert s.scalars(select(Batch.state)).one() == "running"   # another model's writer may live
