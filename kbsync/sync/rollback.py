"""`kbsync rollback BATCH`: undo one batch of the current model.

The batch's delta leaves the log and the model is rematerialised as base ⊕ the rest (the
same arithmetic as always, so undoing the latest batch restores the previous weights bit for
bit); the remaining edits are re-checked (`sync/verify.py`) and the new version is promoted
(`versions/registry.py`). Both weight hashes go into the event. The batch is validated in
SQL before the model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from kbsync.errors import RollbackError
from kbsync.store.events import record_event
from kbsync.store.models import Batch, EditRequestRow, ModelVersion
from kbsync.store.states import BatchState, RequestState
from kbsync.store.transitions import move_batch, move_request
from kbsync.sync import damage
from kbsync.sync.verify import recheck, record_rechecks
from kbsync.sync.writer import ModelWriter
from kbsync.versions import registry


@dataclass
class RollbackReport:
    batch_id: int
    dry_run: bool
    requests: list[int]
    remaining_batches: list[int]
    weights_before: str = ""
    weights_after: str = ""
    restores_version: int | None = None    # an earlier version with identical weights, if any
    no_longer_hold: list[int] = field(default_factory=list)
    why: str = ""                          # set by a policy ([verify] on_damage); else the operator's


def plan(writer: ModelWriter, batch_id: int, dry_run: bool) -> RollbackReport:
    """What undoing `batch_id` means, from SQL alone; RollbackError when it cannot be undone."""
    with writer.db.session() as s:
        batch = s.get(Batch, batch_id)
        if batch is None or batch.model_key != writer.model_key:
            raise RollbackError(f"there is no batch {batch_id} of this model; list batches with `kbsync audit`")
        current = registry.current_version(s, writer.model_key)
        if current is None or batch_id not in current.batch_ids:
            raise RollbackError(f"batch {batch_id} is {batch.state}, not part of the current model; "
                                "only applied batches can be rolled back")
        requests = list(s.scalars(select(EditRequestRow.id).where(EditRequestRow.batch_id == batch_id)))
        remaining = [b for b in current.batch_ids if b != batch_id]
        return RollbackReport(batch_id, dry_run, requests, remaining, current.weights_sha256)


def rollback(writer: ModelWriter, batch_id: int, *, dry_run: bool = False, lock_wait_s: float = 0.0) -> RollbackReport:
    with writer.locked(lock_wait_s):
        report = plan(writer, batch_id, dry_run)
        if dry_run:
            return report
        writer.open_current()
        return undo(writer, report)


def undo(writer: ModelWriter, report: RollbackReport) -> RollbackReport:
    """Carry out a planned rollback; the caller holds the writer lock and the model is open."""
    batch_id = report.batch_id
    store = writer.context().store
    store.materialise([(b, d) for b, d in store.active if b != batch_id])
    report.weights_after = weights_after = store.weights_sha256()
    path = store.write_version(f"r{batch_id:06d}-{weights_after[:12]}") if report.remaining_batches else None
    checks, owner = recheck(writer, report.remaining_batches)
    with writer.db.session() as s:
        version = registry.promote(s, writer.model_key, batch_ids=report.remaining_batches,
                                   weights_sha256=weights_after, path=path,
                                   reason=f"rollback of batch {batch_id}")
        report.restores_version = s.scalars(
            select(ModelVersion.id).where(ModelVersion.weights_sha256 == weights_after,
                                          ModelVersion.id != version.id)
            .order_by(ModelVersion.id.desc())).first()
        batch = s.get(Batch, batch_id)
        assert batch is not None
        move_batch(s, batch, BatchState.ROLLED_BACK, report.why or f"rolled back by {writer.worker}")
        undone = damage.close_batch(s, batch_id, writer.run_id)
        for rid in report.requests:
            row = s.get(EditRequestRow, rid)
            assert row is not None
            if row.state in (RequestState.APPLIED.value, RequestState.VERIFIED.value):
                move_request(s, row, RequestState.ROLLED_BACK, f"batch {batch_id} rolled back",
                             run_id=writer.run_id)
        report.no_longer_hold = record_rechecks(s, checks, owner, "rollback", version.id,
                                                f"no longer holds after rollback of batch {batch_id}",
                                                writer.run_id)
        record_event(s, "rollback", run_id=writer.run_id, config_hash=writer.config_hash, batch_id=batch_id,
                     weights_before=report.weights_before, weights_after=weights_after,
                     restores_version=report.restores_version, no_longer_hold=report.no_longer_hold,
                     damage_undone=undone, why=report.why)
        writer.version_id = version.id
    store.set_current(path)
    return report
