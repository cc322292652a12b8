"""A batch that fails while its delta is put into the weights (issue 25): nothing stays `running`
or `claimed`, the weights are the ones before it, the requests are back in the queue at once,
and the reason is recorded (the batch row, each request's transition, a `batch_failed` event)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from kbsync.editing.delta import Delta
from kbsync.store.models import Batch, EditRequestRow, Event, RequestTransition
from kbsync.sync.apply import apply_pending


def test_a_delta_that_fails_to_apply_is_reverted_requeued_and_recorded(tiny_settings, database, make_writer,
                                                                      seed_capitals, monkeypatch) -> None:
    ids = seed_capitals(database, [("Q142", "France", "Berlin", "Paris"), ("Q183", "Germany", "Rome", "Berlin")])
    writer = make_writer(tiny_settings, database)
    writer.open_current()
    before = writer.context().store.weights_sha256()
    real_apply = Delta.apply

    def half_then_fail(self, model, adapter):  # type: ignore[no-untyped-def]
        real_apply(self, model, adapter)          # the weights are already changed when it fails
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(Delta, "apply", half_then_fail)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        apply_pending(writer, batch_size=2)

    assert writer.context().store.weights_sha256() == before     # reverted
    assert writer.context().store.active == []
    with database.session() as s:
        batch = s.scalars(select(Batch)).one()
        assert batch.state == "failed" and "RuntimeError" in batch.state_reason
        rows = [s.get(EditRequestRow, i) for i in ids]
        assert {r.state for r in rows} == {"pending"}             # requeued at once, no lease to wait out
        assert all(r.claimed_by is None and r.lease_expires_at is None for r in rows)
        last = s.scalars(select(RequestTransition).where(RequestTransition.request_id == ids[0])
                         .order_by(RequestTransition.id.desc())).first()
        assert last is not None and "illegal memory access" in last.reason
        event = s.scalars(select(Event).where(Event.kind == "batch_failed")).one()
        assert event.batch_id == batch.id and "illegal memory access" in event.details["reason"]

    monkeypatch.setattr(Delta, "apply", real_apply)
    report = apply_pending(make_writer(tiny_settings, database, run_id="r2"), batch_size=2)
    assert [b.state for b in report.batches] == ["verified"]       # nothing left stuck: the next run applies


def test_a_batch_that_fails_before_its_row_exists_gives_its_claims_back_at_once(tiny_settings, database, make_writer,
                                                                                 seed_capitals, monkeypatch) -> None:
    from kbsync.verification.verifier import Verifier

    ids = seed_capitals(database, [("Q142", "France", "Berlin", "Paris")])

    def broken(self, s, rows):  # type: ignore[no-untyped-def]
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Verifier, "tests_for", broken)
    with pytest.raises(OSError):
        apply_pending(make_writer(tiny_settings, database), batch_size=2)
    with database.session() as s:
        row = s.get(EditRequestRow, ids[0])
        assert row is not None and row.state == "pending" and "Input/output error" in row.state_reason
        assert s.scalars(select(Batch)).first() is None
        assert s.scalars(select(Event).where(Event.kind == "batch_failed")).one().ok is False


def test_the_rows_move_even_when_the_weights_cannot_be_put_back(tiny_settings, database, make_writer, seed_capitals,
                                                               monkeypatch) -> None:
    from kbsync.versions.store import ModelStore

    ids = seed_capitals(database, [("Q142", "France", "Berlin", "Paris")])
    failing = {"on": False}
    real_materialise = ModelStore.materialise

    def fail_apply(self, model, adapter):  # type: ignore[no-untyped-def]
        failing["on"] = True
        raise RuntimeError("apply failed")

    def materialise(self, deltas):  # type: ignore[no-untyped-def]
        if failing["on"]:
            raise RuntimeError("revert failed too")
        real_materialise(self, deltas)

    monkeypatch.setattr(Delta, "apply", fail_apply)
    monkeypatch.setattr(ModelStore, "materialise", materialise)
    with pytest.raises(RuntimeError, match="revert failed too"):
        apply_pending(make_writer(tiny_settings, database), batch_size=2)
    with database.session() as s:
        assert s.scalars(select(Batch)).one().state == "failed"
        row = s.get(EditRequestRow, ids[0])
        assert row is not None and row.state == "pending" and "apply failed" in row.state_reason
