"""`kbsync rollback BATCH` and `kbsync verify`: undo a batch; re-check applied edits for drift.

Rollback removes the batch's delta from the log and rematerialises base ⊕ the rest (the same
arithmetic as always, so undoing the latest batch restores the previous weights bit for bit),
re-verifies the remaining edits, and records both weight hashes in the event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from kbsync.errors import KbsyncError
from kbsync.store.db import Database
from kbsync.store.events import record_event
from kbsync.store.locks import held_lock
from kbsync.store.models import Batch, EditCheck, EditRequestRow, ModelVersion
from kbsync.store.states import BatchState, RequestState
from kbsync.store.transitions import move_batch, move_request
from kbsync.sync.apply import ApplyWorker, model_lock_name
from kbsync.sync.checks import Check, edits_under_test, run_checks, save_checks


class RollbackError(KbsyncError):
    exit_code = 2


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


@dataclass
class VerifyReport:
    checked: int
    still_hold: int
    failed: list[int]


class ModelJob(ApplyWorker):
    """Jobs that rewrite the current version without computing new edits."""

    def locked(self, lock_wait_s: float = 0.0):  # type: ignore[no-untyped-def]
        return held_lock(self.db, model_lock_name(self.ctx.model_key), self.state_dir / "locks",
                         wait_s=lock_wait_s, what="the model's writer lock (another `kbsync apply` or daemon)")

    def recheck(self, batch_ids: list[int]) -> tuple[list[Check], dict[int, int]]:
        """Checks of the verified edits of these batches on the live model; request -> batch."""
        with self.db.session() as s:
            rows = list(s.scalars(select(EditRequestRow).where(
                EditRequestRow.batch_id.in_(batch_ids), EditRequestRow.state == RequestState.VERIFIED.value)
                .order_by(EditRequestRow.id)))
            tests = edits_under_test(s, rows, self.settings.verify.neighbours)
            owner = {r.id: r.batch_id for r in rows if r.batch_id is not None}
        return run_checks(self.ctx.loaded.model, self.ctx.loaded.tokenizer, tests,
                          self.settings.probe.max_new_tokens), owner

    def record_rechecks(self, s, checks: list[Check], owner: dict[int, int], phase: str,  # type: ignore[no-untyped-def]
                        version_id: int | None, why: str) -> list[int]:
        # Only an edit that held at its last check can drift; one admitted below its own efficacy
        # (the batch passed as a whole) is not failed again for the same reason.
        held_before = {rid for rid, passed in s.execute(
            select(EditCheck.request_id, EditCheck.passed).where(EditCheck.request_id.in_(list(owner)),
                                                                 EditCheck.kind == "efficacy")
            .order_by(EditCheck.id)) if passed} if owner else set()
        failed = sorted({c.request_id for c in checks
                         if c.kind == "efficacy" and not c.passed and c.request_id in held_before})
        for rid, batch_id in owner.items():
            save_checks(s, batch_id, [c for c in checks if c.request_id == rid], phase, version_id)
        for rid in failed:
            row = s.get(EditRequestRow, rid)
            move_request(s, row, RequestState.FAILED, why, run_id=self.run_id)
        return failed


def rollback(job: ModelJob, batch_id: int, *, dry_run: bool = False, lock_wait_s: float = 0.0) -> RollbackReport:
    with job.locked(lock_wait_s):
        job.recover()
        job.load_current()
        with job.db.session() as s:
            batch = s.get(Batch, batch_id)
            if batch is None or batch.model_key != job.ctx.model_key:
                raise RollbackError(f"there is no batch {batch_id} of this model; list batches with `kbsync audit`")
            if batch_id not in [b for b, _ in job.active]:
                raise RollbackError(f"batch {batch_id} is {batch.state}, not part of the current model; "
                                    "only applied batches can be rolled back")
            requests = list(s.scalars(select(EditRequestRow.id).where(EditRequestRow.batch_id == batch_id)))
            before = job.current_row(s)
            assert before is not None
            weights_before, version_before = before.weights_sha256, before.id
        remaining = [(b, d) for b, d in job.active if b != batch_id]
        report = RollbackReport(batch_id, dry_run, requests, [b for b, _ in remaining], weights_before)
        if dry_run:
            return report
        store = job.ctx.store
        store.materialise(remaining)
        report.weights_after = weights_after = store.weights_sha256()
        path = store.write_version(f"r{batch_id:06d}-{weights_after[:12]}") if remaining else None
        checks, owner = job.recheck(report.remaining_batches)
        with job.db.session() as s:
            before_row = job.current_row(s)
            assert before_row is not None
            before_row.is_current = False
            version = ModelVersion(model_key=job.ctx.model_key, parent_id=version_before,
                                   batch_ids=report.remaining_batches, weights_sha256=weights_after,
                                   path=str(path) if path else None, is_current=True,
                                   reason=f"rollback of batch {batch_id}")
            s.add(version)
            s.flush()
            same = s.scalars(select(ModelVersion.id).where(ModelVersion.weights_sha256 == weights_after,
                                                           ModelVersion.id != version.id)
                             .order_by(ModelVersion.id.desc())).first()
            report.restores_version = same
            batch = s.get(Batch, batch_id)
            assert batch is not None
            move_batch(s, batch, BatchState.ROLLED_BACK, f"rolled back by {job.worker}")
            for rid in requests:
                row = s.get(EditRequestRow, rid)
                assert row is not None
                if row.state in (RequestState.APPLIED.value, RequestState.VERIFIED.value):
                    move_request(s, row, RequestState.ROLLED_BACK, f"batch {batch_id} rolled back", run_id=job.run_id)
            report.no_longer_hold = job.record_rechecks(s, checks, owner, "rollback", version.id,
                                                        f"no longer holds after rollback of batch {batch_id}")
            record_event(s, "rollback", run_id=job.run_id, config_hash=job.config_hash, batch_id=batch_id,
                         weights_before=weights_before, weights_after=weights_after,
                         restores_version=same, no_longer_hold=report.no_longer_hold)
        store.set_current(path)
        job.current_version_id = version.id  # store.materialise(remaining) set the live log
        return report


def verify(job: ModelJob, batch_id: int | None = None, *, lock_wait_s: float = 0.0) -> VerifyReport:
    """Re-run the checks of verified edits (one batch or all) on the current model; drift fails them."""
    with job.locked(lock_wait_s):
        job.recover()
        job.load_current()
        ids = [b for b, _ in job.active]
        if batch_id is not None:
            if batch_id not in ids:
                raise RollbackError(f"batch {batch_id} is not part of the current model; see `kbsync audit`")
            ids = [batch_id]
        checks, owner = job.recheck(ids)
        with job.db.session() as s:
            failed = job.record_rechecks(s, checks, owner, "verify", job.current_version_id,
                                         "drift: the edit no longer wins on its prompt")
            record_event(s, "verify", run_id=job.run_id, config_hash=job.config_hash, batches=ids,
                         checked=len(owner), failed=failed, ok=not failed)
    return VerifyReport(len(owner), len(owner) - len(failed), failed)


def version_path(db: Database, model_key: str, version_id: int | None) -> Path:
    """The directory of a model version (default: the current one of this model); SQL only."""
    with db.session() as s:
        row = s.get(ModelVersion, version_id) if version_id else s.scalars(
            select(ModelVersion).where(ModelVersion.is_current, ModelVersion.model_key == model_key)).first()
        if row is None or row.model_key != model_key:
            raise RollbackError(f"there is no model version {version_id} of this model; `kbsync status` shows the "
                                "current one" if version_id else "no model version yet (nothing applied); `kbsync apply` first")
        if not row.path or not Path(row.path).is_dir():
            raise RollbackError(f"model version {row.id} was pruned from disk; export a kept version")
        return Path(row.path)
