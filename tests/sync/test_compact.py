"""Compaction of the delta log on a tiny model: one audited event, edits still hold, exact rollback."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from test_apply_tiny import FACTS, make_writer  # tests/sync is on sys.path (no __init__.py)

from kbsync.errors import RollbackError
from kbsync.store import db as store_db
from kbsync.store.log import expand_compactions
from kbsync.store.models import Batch, EditCheck, EditRequestRow, Event, ModelVersion
from kbsync.store.transitions import enqueue
from kbsync.sync.apply import apply_pending
from kbsync.sync.compact import compact, compact_if_long
from kbsync.sync.drift import verify
from kbsync.sync.rollback import rollback
from kbsync.versions import registry


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: a second thread only adds synchronisation (and fights other jobs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def seed(db: store_db.Database, facts=FACTS) -> list[int]:
    """Requests whose subject ends the prompt: a tiny random model carries an edit at the subject's
    last token to the next prediction only there (tests/editing/test_memit.py)."""
    ids = []
    with db.session() as s:
        for qid, label, new, old in facts:
            row = enqueue(s, EditRequestRow(
                subject=qid, relation="P36", subject_label=label, prompt="The capital of {}",
                target_new=new, target_new_id=f"X{new}", target_old=old, acceptable=[new],
                paraphrases=["The capital city of {}"], content_hash=qid), "test")
            ids.append(row.id)
    return ids


def _efficacy_wins(db, version_id: int) -> dict[int, bool]:
    with db.session() as s:
        return {c.request_id: c.passed for c in s.scalars(select(EditCheck).where(
            EditCheck.kind == "efficacy", EditCheck.model_version_id == version_id))}


def test_compaction_holds_every_edit_is_one_event_and_rolls_back_bit_for_bit(make_settings, database) -> None:
    # plain MEMIT: on the tiny random model the four "The capital of X" keys are nearly parallel, and
    # edit memory (which keeps each chained chunk's keys) makes the later chunk settle for a compromise
    # no retention sample: which edits of a random model still name their value after later batches
    # is noise, and one that no longer does would fail as drift before the compaction counts it
    settings = make_settings(editing={"v_steps": 40, "v_lr": 1.0, "edit_memory": 0.0}, gate={"retention_sample": 0})
    seed(database)
    report = apply_pending(make_writer(settings, database), batch_size=1)  # a log of four batches
    assert [b.state for b in report.batches] == ["verified"] * 4
    with database.session() as s:
        before = registry.current_version(s, registry_key(database))
        log, weights_log, version_log = list(before.batch_ids), before.weights_sha256, before.id
        n_events = len(list(s.scalars(select(Event))))

    result = compact(make_writer(settings, database, run_id="c1"))
    assert result.ok, result.reason
    assert result.replaced == log and result.n_edits == len(FACTS)
    assert result.efficacy_after >= result.efficacy_before
    with database.session() as s:
        events = list(s.scalars(select(Event).order_by(Event.id)))[n_events:]
        assert [e.kind for e in events] == ["compact"]  # one audited event
        assert events[0].batch_id == result.batch_id and events[0].details["compacts"] == log
        batch = s.get(Batch, result.batch_id)
        assert batch.state == "verified" and batch.hparams["compacts"] == log and Path(batch.delta_path).is_file()
        current = registry.current_version(s, batch.model_key)
        assert current.batch_ids == [result.batch_id] and current.weights_sha256 == result.weights_after
        assert {r.state for r in s.scalars(select(EditRequestRow))} == {"verified"}
        for bid in log:  # the replaced batches and their deltas are kept
            old = s.get(Batch, bid)
            assert old.state == "verified" and Path(old.delta_path).is_file()
        compacted_version = current.id
    held = _efficacy_wins(database, version_log)  # the sequential log's last checks (apply)
    with database.session() as s:
        held = {c.request_id: c.passed for c in s.scalars(select(EditCheck).where(
            EditCheck.kind == "efficacy", EditCheck.phase == "apply").order_by(EditCheck.id))}
    wins = _efficacy_wins(database, compacted_version)
    assert len(wins) == len(FACTS) and sum(wins.values()) >= 3
    assert all(wins[r] for r, ok in held.items() if ok)  # every edit that held still holds
    # a fresh process loads base ⊕ the one compacted delta; kbsync verify finds the edits through it
    fresh = make_writer(settings, database, run_id="c2")
    assert verify(fresh).failed == [] and verify(fresh).checked == len(FACTS)

    undone = rollback(make_writer(settings, database, run_id="c3"), result.batch_id)
    assert undone.restored == log and undone.remaining_batches == log
    assert undone.weights_after == weights_log and undone.restores_version == version_log  # bit for bit
    with database.session() as s:
        current = registry.current_version(s, registry_key(database))
        assert current.batch_ids == log and current.weights_sha256 == weights_log
        assert s.get(Batch, result.batch_id).state == "rolled_back"
        assert {r.state for r in s.scalars(select(EditRequestRow))} == {"verified"}
    again = make_writer(settings, database, run_id="c4")
    registry.load_current(database, again.context().store)
    assert again.context().store.weights_sha256() == weights_log


def test_rolling_back_a_compacted_batch_recompacts_without_it(make_settings, database) -> None:
    settings = make_settings(editing={"v_steps": 40, "v_lr": 1.0}, gate={"retention_sample": 0})   # as above
    seed(database, FACTS[:3])
    apply_pending(make_writer(settings, database), batch_size=1)
    with database.session() as s:
        first, middle, last = registry.current_version(s, registry_key(database)).batch_ids
    done = compact(make_writer(settings, database, run_id="c1"))
    assert done.ok
    undone = rollback(make_writer(settings, database, run_id="c2"), middle)
    assert undone.recompacted_by is not None and undone.remaining_batches == [undone.recompacted_by]
    with database.session() as s:
        assert s.get(Batch, middle).state == "rolled_back"
        states = {r.batch_id: r.state for r in s.scalars(select(EditRequestRow))}
        assert states == {first: "verified", middle: "rolled_back", last: "verified"}
        recompaction = s.get(Batch, undone.recompacted_by)
        assert recompaction.n_edits == 2 and recompaction.hparams["excluded"] == [middle]
        assert expand_compactions(s, [undone.recompacted_by]) == [first, last]
    with pytest.raises(RollbackError, match="bring their edits back"):
        rollback(make_writer(settings, database, run_id="c3"), undone.recompacted_by)


def test_compact_after_compacts_a_log_longer_than_it_and_nothing_to_compact_is_an_error(make_settings, database) -> None:
    settings = make_settings(editing={"v_steps": 40, "v_lr": 1.0, "compact_after": 2})
    with pytest.raises(RollbackError, match="nothing to compact"):
        compact(make_writer(settings, database))
    seed(database, FACTS[:3])
    writer = make_writer(settings, database, run_id="a1")
    report = apply_pending(writer, batch_size=1)
    compaction = compact_if_long(writer)       # the tick's (and `kbsync apply`'s) step after apply
    assert compaction is not None and compaction.ok
    assert compaction.replaced == [b.batch_id for b in report.batches]
    with database.session() as s:
        assert registry.current_version(s, registry_key(database)).batch_ids == [compaction.batch_id]
        assert len(list(s.scalars(select(ModelVersion)))) == 4


def registry_key(db) -> str:
    with db.session() as s:
        return s.scalars(select(Batch.model_key)).first()
