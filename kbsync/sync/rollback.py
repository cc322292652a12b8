"""`kbsync rollback BATCH`: undo one batch of the current model.

    plan      SQL alone, before the model loads: the batch, the log without it
    compute   the live model = base ⊕ the rest of the log (the arithmetic of every load, so
              undoing the latest batch gives the previous weights bit for bit); a batch that a
              compaction holds: the log re-solved from the base without it (sync/resolve.py)
    verdict   the remaining edits re-checked (verification/recheck.py)
    publish   versions/transition.py; the batch and its requests rolled back, its damage closed,
              one `rollback` event with both weight hashes

A compaction is undone by putting back the log it replaced: its batches' delta files were
kept, so undoing the latest compaction restores the weights it replaced bit for bit.

`rollback_damaged` is the tick's step for [verify] on_damage = "rollback": every live batch
with open damage flagged against it (by `kbsync diff`) is undone, newest first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from kbsync.editing.delta import Delta
from kbsync.errors import RollbackError
from kbsync.store import holds
from kbsync.store.events import record_event
from kbsync.store.log import compacted, expand_compactions
from kbsync.store.models import Batch, EditRequestRow, ModelVersion, utcnow
from kbsync.store.states import BatchState, RequestState
from kbsync.store.transitions import move_batch, move_request
from kbsync.sync.resolve import plan_resolve, resolve
from kbsync.verification import damage
from kbsync.verification.recheck import recheck, record_rechecks
from kbsync.versions import registry
from kbsync.versions.transition import BatchTransition
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
        compacted_in = [c for c in log if batch_id in expand_compactions(s, [c])]
        if batch_id not in log and not compacted_in:
            raise RollbackError(f"batch {batch_id} is {batch.state}, not part of the current model; "
                                "only applied batches can be rolled back")
        requests = list(s.scalars(select(EditRequestRow.id).where(EditRequestRow.batch_id == batch_id)))
        if (batch.hparams or {}).get("excluded"):
            raise RollbackError(f"batch {batch_id} is the compaction that rolled back batches "
                                f"{batch.hparams['excluded']}; undoing it would bring their edits back")
        restored = (compacted(batch) or []) if batch_id in log else []
        # a batch held by a compaction: that compaction is replaced by a new one (its id known after)
        remaining = [r for b in log for r in (restored if b == batch_id else [b])]
        assert current is not None
        return RollbackReport(batch_id, dry_run, requests, remaining, current.weights_sha256, restored=restored)


def rollback(writer: ModelWriter, batch_id: int, *, dry_run: bool = False, lock_wait_s: float = 0.0) -> RollbackReport:
    with writer.locked(lock_wait_s):
        report = plan(writer, batch_id, dry_run)
        if dry_run:
            return report
        writer.open_current()
        return undo(writer, report)


def rollback_damaged(writer: ModelWriter, *, lock_wait_s: float = 0.0) -> list[RollbackReport]:
    """Undo every live batch with open damage flagged against it, newest first (the tick's step for
    [verify] on_damage = "rollback"); nothing is loaded when no batch is flagged."""
    with writer.locked(lock_wait_s):
        with writer.db.session() as s:
            flagged = list(damage.flagged(s, writer.model_key))
        if not flagged:
            return []
        writer.open_current()
        done = []
        for batch_id in reversed(flagged):
            report = plan(writer, batch_id, dry_run=False)
            report.why = "damage flagged against it; [verify] on_damage = rollback"
            done.append(undo(writer, report))
        return done


def undo(writer: ModelWriter, report: RollbackReport) -> RollbackReport:
    """Carry out a planned rollback; the caller holds the writer lock and the model is open."""
    store = writer.context().store
    batch_id = report.batch_id
    held_by_compaction = batch_id not in [b for b, _ in store.active]
    resolved = plan_resolve(writer, exclude_batches=(batch_id,)) if held_by_compaction else None
    if resolved is not None:
        writer.context().moments(check_stop=writer.stop.check_outside_batch)
    with BatchTransition(writer, resolved.batch_id if resolved else None) as t:
        delta: Delta | None = None
        if resolved is not None:  # re-solve the log from the base without it
            delta = resolve(writer, resolved)
            store.materialise([(resolved.batch_id, delta)])
            report.recompacted_by = resolved.batch_id
        else:
            store.materialise(restored_log(writer, report))
        report.remaining_batches = t.log_ids
        checks, owner = recheck(writer, report.remaining_batches)

        def record(s: Session, version: ModelVersion) -> None:
            report.weights_after = t.weights_sha256
            if resolved is not None:
                batch = s.get(Batch, resolved.batch_id)
                assert batch is not None
                move_batch(s, batch, BatchState.APPLIED, "compacted delta in the log, version written")
                move_batch(s, batch, BatchState.VERIFIED, f"the log re-solved without batch {batch_id}")
            report.restores_version = s.scalars(
                select(ModelVersion.id).where(ModelVersion.weights_sha256 == t.weights_sha256,
                                              ModelVersion.id != version.id)
                .order_by(ModelVersion.id.desc())).first()
            why = report.why or f"rolled back by {writer.worker}"
            if resolved is not None:
                why += f": recompacted without it (batch {resolved.batch_id})"
            undone = mark_rolled_back(s, writer, report, why)
            report.no_longer_hold = record_rechecks(s, checks, owner, "rollback", version.id,
                                                    f"no longer holds after rollback of batch {batch_id}",
                                                    writer.run_id, writer.settings.verify)
            record_event(s, "rollback", run_id=writer.run_id, config_hash=writer.config_hash, batch_id=batch_id,
                         weights_before=report.weights_before, weights_after=t.weights_sha256,
                         restores_version=report.restores_version, no_longer_hold=report.no_longer_hold,
                         restored=report.restored, recompacted_by=report.recompacted_by,
                         damage_undone=undone, why=report.why)

        tag = f"c{resolved.batch_id:06d}" if resolved is not None else f"r{batch_id:06d}"
        t.publish(tag, f"rollback of batch {batch_id}", delta=delta, record=record)
    return report


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


def mark_rolled_back(s: Session, writer: ModelWriter, report: RollbackReport, why: str) -> int:
    """The batch and its applied requests move to rolled_back, each fact held (store/holds.py); its open
    damage is closed (returned)."""
    batch = s.get(Batch, report.batch_id)
    assert batch is not None
    move_batch(s, batch, BatchState.ROLLED_BACK, why)
    undone = damage.close_batch(s, report.batch_id, writer.run_id)
    now = holds.Now(writer.model_key, writer.version_id, writer.config_hash, utcnow())
    for rid in report.requests:
        row = s.get(EditRequestRow, rid)
        assert row is not None
        if row.state in (RequestState.APPLIED.value, RequestState.VERIFIED.value):
            move_request(s, row, RequestState.ROLLED_BACK, f"batch {report.batch_id} rolled back",
                         run_id=writer.run_id)
            # an operator undid it: the fact is not queued again until the KB value changes or a release
            holds.hold(s, subject=row.subject, relation=row.relation, content_hash=row.content_hash or "",
                       kind="rolled_back", reason=why, now=now, request_id=rid, batch_id=report.batch_id,
                       run_id=writer.run_id)
    return undone


__all__ = ["RollbackReport", "plan", "rollback", "rollback_damaged", "undo"]
