"""Arguments and the lock are checked in SQL before the model is loaded (issue 15 #8): these
writers' model loader fails the test if it is ever called."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kbsync.config import Settings
from kbsync.errors import LockedError, RollbackError
from kbsync.store import db as store_db
from kbsync.store.locks import held_lock
from kbsync.store.models import Batch
from kbsync.sync.apply import apply_pending
from kbsync.sync.drift import verify
from kbsync.sync.rollback import rollback
from kbsync.versions import registry
from kbsync.versions.writer import ModelWriter


def never_loaded():  # type: ignore[no-untyped-def]
    raise AssertionError("the model was loaded")


@pytest.fixture
def writer(sqlite_url: str, tmp_path: Path) -> Iterator[ModelWriter]:
    store_db.upgrade(sqlite_url)
    db = store_db.open_database(sqlite_url)
    settings = Settings.model_validate({"database": {"url": sqlite_url}, "state": {"dir": str(tmp_path)}})
    yield ModelWriter(settings, db, tmp_path, "model-a", never_loaded, run_id="r", worker="test:1")
    db.dispose()


def test_rollback_and_verify_of_a_missing_batch_fail_before_the_model_loads(writer: ModelWriter) -> None:
    with pytest.raises(RollbackError, match="there is no batch 99 of this model"):
        rollback(writer, 99)
    with pytest.raises(RollbackError, match="batch 99 is not part of the current model"):
        verify(writer, 99)
    with writer.db.session() as s:           # a batch of another model is not this model's
        s.add(Batch(model_key="model-b", algorithm="memit", hparams={}, n_edits=1, worker="w"))
    with pytest.raises(RollbackError, match="no batch 1 of this model"):
        rollback(writer, 1, dry_run=True)
    assert verify(writer).checked == 0       # the base model: nothing to check, nothing loaded


def test_nothing_pending_and_a_held_lock_need_no_model(writer: ModelWriter) -> None:
    assert apply_pending(writer).batches == []
    with held_lock(writer.db, registry.writer_lock_name("model-a"), writer.state_dir / "locks"):
        with pytest.raises(LockedError, match=r"writer lock .* is held by another kbsync process \(pid \d+ on "):
            apply_pending(writer)
