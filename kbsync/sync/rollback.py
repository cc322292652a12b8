"""`kbsync rollback BATCH`: undo one batch of the current model.

The batch's delta leaves the log and the model is rematerialised as base ⊕ the rest (the
same arithmetic as always, so undoing the latest batch restores the previous weights bit for
bit); the remaining edits are re-checked (`sync/verify.py`) and the new version is promoted
(`versions/registry.py`). Both weight hashes go into the event. The batch is validated in
SQL before the model is loaded.

A compaction (sync/compact.py) is undone by putting back the log it replaced: its batches'
delta files were kept, so undoing the latest compaction restores the weights it replaced bit
for bit. A batch that a compaction holds is undone exactly by compacting again without it
(`compact_open(exclude_batches=...)`), then its requests are rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from kbsync.editing.delta import Delta
from kbsync.errors import RollbackError
from kbsync.store.events import record_event
from kbsync.store.models import Batch, EditRequestRow, ModelVersion
from kbsync.store.states import BatchState, RequestState
from kbsync.store.transitions import move_batch, move_request
from kbsync.sync.drift import recheck, record_rechecks
from kbsync.verification import damage
from kbsync.versions import registry
from kbsync.versions.writer import ModelWriter


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
    restored: list[int] = field(default_factory=list)      # a compaction's replaced batches, back in the log
    recompacted_by: int | None = None      # the new compaction that left this batch out (a compacted batch)
    why: str = ""                          # set by a policy ([verify] on_damage); else the operator's


def plan(writer: ModelWriter, batch_id: int, dry_run: bool) -> RollbackReport:
    """What undoing `batch_id` means, from SQL alone; RollbackError when it cannot be undone."""
    with writer.db.session() as s:
        batch = s.get(Batch, batch_id)
        if batch is None or batch.model_key != writer.model_key:
            raise RollbackError(f"there is no batch {batch_id} of this model; list batches with `kbsync audit`")
        current = registry.current_version(s, writer.model_key)
        log = list(current.batch_ids) if current is not None else []
        compacted_in = [c for c in log if batch_id in registry.expand_compactions(s, [c])]
        if batch_id not in log and not compacted_in:
            raise RollbackError(f"batch {batch_id} is {batch.state}, not part of the current model; "
                                "only applied batches can be rolled back")
        requests = list(s.scalars(select(EditRequestRow.id).where(EditRequestRow.batch_id == batch_id)))
        if (batch.hparams or {}).get("excluded"):
            raise RollbackError(f"batch {batch_id} is the compaction that rolled back batches "
                                f"{batch.hparams['excluded']}; undoing it would bring their edits back")
        restored = (registry.compacted(batch) or []) if batch_id in log else []
        # a batch held by a compaction: that compaction is replaced by a new one (its id known after)
        remaining = [r for b in log for r in (restored if b == batch_id else [b])]
        assert current is not None
        return RollbackReport(batch_id, dry_run, requests, remaining, current.weights_sha256, restored=restored)


def restored_log(writer: ModelWriter, report: RollbackReport) -> list[tuple[int, Delta]]:
    """The live log without the batch; a compaction replaced by the deltas it compacted (sha256-checked)."""
    store = writer.context().store
    with writer.db.session() as s:
        digests = dict(s.execute(select(Batch.id, Batch.delta_sha256).where(Batch.id.in_(report.restored))).all())
    out: list[tuple[int, Delta]] = []
    for b, d in store.active:
        if b == report.batch_id:
            out += [(r, store.load_delta(r, digests.get(r) or "")) for r in report.restored]
        else:
            out.append((b, d))
    return out


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
    if batch_id not in [b for b, _ in store.active]:  # held by a compaction: re-solve without it
        return _rollback_compacted(writer, report)
    store.materialise(restored_log(writer, report))
    report.weights_after = weights_after = store.weights_sha256()
    path = store.write_version(f"r{batch_id:06d}-{weights_after[:12]}") if report.remaining_batches else None
    report.remaining_batches = [b for b, _ in store.active]
    checks, owner = recheck(writer, report.remaining_batches)
    with writer.db.session() as s:
        version = registry.promote(s, writer.model_key, batch_ids=report.remaining_batches,
                                   weights_sha256=weights_after, path=path,
                                   reason=f"rollback of batch {batch_id}")
        report.restores_version = s.scalars(
            select(ModelVersion.id).where(ModelVersion.weights_sha256 == weights_after,
                                          ModelVersion.id != version.id)
            .order_by(ModelVersion.id.desc())).first()
        undone = _mark_rolled_back(s, writer, report, report.why or f"rolled back by {writer.worker}")
        report.no_longer_hold = record_rechecks(s, checks, owner, "rollback", version.id,
                                                f"no longer holds after rollback of batch {batch_id}",
                                                writer.run_id)
        record_event(s, "rollback", run_id=writer.run_id, config_hash=writer.config_hash, batch_id=batch_id,
                     weights_before=report.weights_before, weights_after=weights_after,
                     restores_version=report.restores_version, no_longer_hold=report.no_longer_hold,
                     restored=report.restored, damage_undone=undone, why=report.why)
        writer.version_id = version.id
    store.set_current(path)
    return report


def _rollback_compacted(writer: ModelWriter, report: RollbackReport) -> RollbackReport:
    """Undo a batch a compaction holds: compact the log again without it, then roll its requests back."""
    from kbsync.sync.compact import compact_open, compaction_error

    writer.context().moments(check_stop=writer.stop.check_outside_batch)
    result = compact_open(writer, exclude_batches=(report.batch_id,))
    if not result.ok:
        raise compaction_error(result)
    report.weights_after, report.recompacted_by = result.weights_after, result.batch_id
    report.remaining_batches = [b for b, _ in writer.context().store.active]
    report.no_longer_hold = result.no_longer_hold
    with writer.db.session() as s:
        undone = _mark_rolled_back(s, writer, report, (report.why or f"rolled back by {writer.worker}")
                                   + f": recompacted without it (batch {result.batch_id})")
        record_event(s, "rollback", run_id=writer.run_id, config_hash=writer.config_hash, batch_id=report.batch_id,
                     weights_before=report.weights_before, weights_after=report.weights_after,
                     recompacted_by=result.batch_id, no_longer_hold=report.no_longer_hold,
                     damage_undone=undone, why=report.why)
    return report


def _mark_rolled_back(s: Session, writer: ModelWriter, report: RollbackReport, why: str) -> int:
    """The batch and its applied requests move to rolled_back; its open damage is closed (returned)."""
    batch = s.get(Batch, report.batch_id)
    assert batch is not None
    move_batch(s, batch, BatchState.ROLLED_BACK, why)
    undone = damage.close_batch(s, report.batch_id, writer.run_id)
    for rid in report.requests:
        row = s.get(EditRequestRow, rid)
        assert row is not None
        if row.state in (RequestState.APPLIED.value, RequestState.VERIFIED.value):
            move_request(s, row, RequestState.ROLLED_BACK, f"batch {report.batch_id} rolled back",
                         run_id=writer.run_id)
    return undone
