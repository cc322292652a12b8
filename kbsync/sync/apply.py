"""`kbsync apply`: the work loop that turns queued requests into verified model versions.

    lock the model → recover what a dead worker left → materialise the current version →
    loop: check stop → claim a batch → compute the delta (pure) → apply in memory → verify →
          pass: delta file, version directory, one SQL commit, `current` pointer
          fail: revert, mark failed (or retry in halves)

A half-applied batch is never visible: files are written (atomically) before the one
transaction that names them, and `recover` removes files no row names. A worker that dies
holds no lock (flock / advisory locks die with the process), so whoever takes the lock next
may return every claimed request to the queue.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kbsync.editing.delta import Delta
from kbsync.editing.memit import compute_delta
from kbsync.editing.nullspace import PreservedKeys
from kbsync.editing.request import EditRequest
from kbsync.errors import EditError, StateError, TokenizationError
from kbsync.logs import get_logger
from kbsync.store.db import Database
from kbsync.store.events import record_event
from kbsync.store.locks import held_lock
from kbsync.store.models import Batch, EditRequestRow, ModelVersion
from kbsync.store.queue import claim, reap
from kbsync.store.states import BatchState, RequestState
from kbsync.store.transitions import move_batch, move_request
from kbsync.sync.checks import (
    Check,
    edits_under_test,
    failing_requests,
    judge,
    retry_parts,
    run_checks,
    save_checks,
    shares,
)
from kbsync.sync.engine import EditingContext

log = get_logger(__name__)

CRASH_ENV = "KBSYNC_CRASH_AT"  # fault injection for the crash-safety tests (see tests/sync/test_crash.py)
CRASH_POINTS = ("targets", "delta_written", "version_written", "before_commit")


def crash_point(name: str) -> None:
    """Die here (SIGKILL, no clean-up) when KBSYNC_CRASH_AT names this point."""
    if os.environ.get(CRASH_ENV) != name:
        return
    if name == "targets":  # mid-computation: a timer kills the process while compute_delta runs
        delay = float(os.environ.get("KBSYNC_CRASH_DELAY", "1.0"))
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
        return
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class BatchOutcome:
    batch_id: int
    n_edits: int
    state: str
    reason: str
    shares: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    version_id: int | None = None


@dataclass
class ApplyReport:
    batches: list[BatchOutcome] = field(default_factory=list)
    recovered: int = 0

    @property
    def applied(self) -> int:
        return sum(b.n_edits for b in self.batches if b.state == BatchState.VERIFIED.value)

    @property
    def failed(self) -> int:
        return sum(b.n_edits for b in self.batches if b.state == BatchState.FAILED.value)

    def as_dict(self) -> dict[str, object]:
        return {"applied": self.applied, "failed": self.failed, "recovered": self.recovered,
                "batches": [asdict(b) for b in self.batches]}


def model_lock_name(model_key: str) -> str:
    return f"kbsync-model-writer:{model_key}"


class ApplyWorker:
    def __init__(self, db: Database, ctx: EditingContext, *, run_id: str, worker: str, state_dir: Path,
                 config_hash: str = "", on_batch: Callable[[BatchOutcome], None] | None = None) -> None:
        self.db, self.ctx, self.run_id, self.worker = db, ctx, run_id, worker
        self.state_dir, self.config_hash, self.on_batch = state_dir, config_hash, on_batch
        self.settings = ctx.settings
        self.stop_requested = False
        self.current_version_id: int | None = None

    @property
    def active(self) -> list[tuple[int, Delta]]:
        """(batch id, delta) in the live model, in order: the model store's log."""
        return self.ctx.store.active

    # --- the loop ----------------------------------------------------------------------
    def run(self, *, batch_size: int | None = None, max_edits: int | None = None, lock_wait_s: float = 0.0) -> ApplyReport:
        report = ApplyReport()
        batch_size = batch_size or self.settings.editing.batch_size
        with held_lock(self.db, model_lock_name(self.ctx.model_key), self.state_dir / "locks", wait_s=lock_wait_s,
                       what="the model's writer lock (another `kbsync apply` or daemon)"):
            report.recovered = self.recover()
            if not self.pending():
                return report             # nothing to edit: no key statistics, no model version to load
            self.ctx.moments()            # C_l of the base model (computed on the base weights)
            self.load_current()
            done = 0
            while not self.stop_requested and (max_edits is None or done < max_edits):
                limit = batch_size if max_edits is None else min(batch_size, max_edits - done)
                with self.db.session() as s:
                    reap(s, run_id=self.run_id)  # leases of workers (of any model) that died
                    rows = claim(s, limit, self.worker, self.settings.editing.lease_s, self.run_id)
                    if not rows:
                        break
                    ids = [r.id for r in rows]
                for outcome in self.process(ids):
                    report.batches.append(outcome)
                    if self.on_batch:
                        self.on_batch(outcome)
                done += len(ids)
            self.prune()
        return report

    # --- one batch ---------------------------------------------------------------------
    def process(self, request_ids: list[int]) -> list[BatchOutcome]:
        """Apply claimed requests as one batch; on failure retry in halves when configured."""
        t0 = time.perf_counter()
        hp = self.ctx.hparams
        with self.db.session() as s:
            rows = [s.get(EditRequestRow, i) for i in request_ids]
            batch = Batch(model_key=self.ctx.model_key, algorithm=hp.algorithm, hparams=hp.to_dict(),
                          n_edits=len(rows), version_before_id=self.current_version_id, worker=self.worker,
                          run_id=self.run_id)
            s.add(batch)
            s.flush()
            batch_id = batch.id
            for row in rows:
                assert row is not None and row.state == RequestState.CLAIMED.value
                row.batch_id = batch_id
            edits = [EditRequest(prompt=r.prompt, subject=r.subject_label, target_new=r.target_new,
                                 target_old=r.target_old, request_id=r.id, paraphrases=tuple(r.paraphrases))
                     for r in rows if r]
            tests = edits_under_test(s, [r for r in rows if r], self.settings.verify.neighbours)
        log.info("batch_started", batch=batch_id, n_edits=len(edits))

        timings: dict[str, float] = {}
        try:
            crash_point("targets")
            preserved = PreservedKeys.from_deltas([d for _, d in self.active]) if hp.algorithm == "alphaedit" else None
            delta = compute_delta(self.ctx.loaded, self.ctx.loaded.tokenizer, self.ctx.loaded.adapter, edits, hp,
                                  self.ctx.moments(), preserved=preserved, timings=timings)
        except (EditError, TokenizationError) as exc:  # the requests themselves cannot be edited
            return [self.fail(batch_id, request_ids, str(exc), [], {}, t0)]
        except BaseException as exc:  # out of memory, interrupted, a bug: give the requests back
            self.fail(batch_id, request_ids, f"not applied: {type(exc).__name__}: {exc}", [], {}, t0, requeue=True)
            raise
        applied = delta.apply(self.ctx.loaded.model, self.ctx.loaded.adapter)
        try:
            checks = run_checks(self.ctx.loaded.model, self.ctx.loaded.tokenizer, tests,
                                self.settings.probe.max_new_tokens)
        except BaseException as exc:  # the checks never ran to the end: undo and give the requests back
            applied.revert()
            self.fail(batch_id, request_ids, f"not applied: {type(exc).__name__}: {exc}", [], {}, t0, requeue=True)
            raise
        summary = shares(checks)
        ok, reason = judge(summary, self.settings.verify)
        if not ok:
            applied.revert()
            parts = retry_parts(checks, request_ids, self.settings.verify, halves=self.settings.editing.retry_smaller)
            if parts:  # hard edits alone and the rest without them (else halves): one hard edit fails alone
                outcome = self.fail(batch_id, request_ids, reason + "; retrying as " + " + ".join(
                    str(len(p)) for p in parts), checks, summary, t0, requeue=True)
                outcomes = [outcome]
                for part in parts:
                    self.reclaim(part)
                    outcomes += self.process(part)
                return outcomes
            per_edit = failing_requests(checks)
            return [self.fail(batch_id, request_ids, reason, checks, summary, t0, per_edit=per_edit)]
        timings["verify_s"] = time.perf_counter() - t0 - sum(timings.values())
        try:
            return [self.commit(batch_id, request_ids, delta, checks, summary, reason, timings, t0)]
        except BaseException as exc:
            if self.active and self.active[-1][0] == batch_id:
                raise  # committed in SQL; only the pointer or pruning failed: recover() fixes those
            applied.revert()
            self.fail(batch_id, request_ids, f"not applied: {type(exc).__name__}: {exc}", [], {}, t0, requeue=True)
            raise

    def commit(self, batch_id: int, request_ids: list[int], delta: Delta, checks: list[Check],
               summary: dict[str, float], reason: str, timings: dict[str, float], t0: float) -> BatchOutcome:
        store = self.ctx.store
        delta_path = store.delta_path(batch_id)
        delta_sha = delta.save(delta_path)
        crash_point("delta_written")
        weights_sha = store.weights_sha256()
        version_path = store.write_version(f"b{batch_id:06d}-{weights_sha[:12]}")
        crash_point("version_written")
        active_ids = [b for b, _ in self.active] + [batch_id]
        crash_point("before_commit")
        with self.db.session() as s:
            for old in s.scalars(select(ModelVersion).where(ModelVersion.is_current,
                                                            ModelVersion.model_key == self.ctx.model_key)):
                old.is_current = False
            version = ModelVersion(model_key=self.ctx.model_key, parent_id=self.current_version_id,
                                   batch_ids=active_ids, weights_sha256=weights_sha, path=str(version_path),
                                   is_current=True, reason=f"batch {batch_id} applied")
            s.add(version)
            s.flush()
            batch = s.get(Batch, batch_id)
            assert batch is not None
            batch.version_after_id = version.id
            batch.delta_path, batch.delta_sha256 = str(delta_path), delta_sha
            batch.delta_bytes = delta_path.stat().st_size
            batch.delta_shapes = {n: [list(u.shape), list(v.shape)] for n, (u, v) in delta.factors.items()} | {
                n: [list(d.shape)] for n, d in delta.dense_updates.items()}
            batch.timings = {k: round(v, 3) for k, v in timings.items()} | {"total_s": round(time.perf_counter() - t0, 3)}
            batch.metrics = summary
            move_batch(s, batch, BatchState.APPLIED, "delta in the log, version written")
            move_batch(s, batch, BatchState.VERIFIED, reason)
            for rid in request_ids:
                row = s.get(EditRequestRow, rid)
                assert row is not None
                move_request(s, row, RequestState.APPLIED, f"batch {batch_id}", batch_id=batch_id, run_id=self.run_id)
                move_request(s, row, RequestState.VERIFIED, reason, batch_id=batch_id, run_id=self.run_id)
            save_checks(s, batch_id, checks, "apply", version.id)
            record_event(s, "batch_applied", run_id=self.run_id, config_hash=self.config_hash, batch_id=batch_id,
                         n_edits=len(request_ids), weights_sha256=weights_sha, delta_sha256=delta_sha, shares=summary)
            version_id = version.id
        self.active.append((batch_id, delta))
        self.current_version_id = version_id
        store.set_current(version_path)
        log.info("batch_verified", batch=batch_id, n_edits=len(request_ids), **summary)
        return BatchOutcome(batch_id, len(request_ids), BatchState.VERIFIED.value, reason, summary,
                            time.perf_counter() - t0, version_id)

    def fail(self, batch_id: int, request_ids: list[int], reason: str, checks: list[Check],
             summary: dict[str, float], t0: float, *, requeue: bool = False,
             per_edit: dict[int, str] | None = None) -> BatchOutcome:
        per_edit = per_edit or {}
        with self.db.session() as s:
            batch = s.get(Batch, batch_id)
            assert batch is not None
            batch.metrics = summary
            move_batch(s, batch, BatchState.FAILED, reason)
            for rid in request_ids:
                row = s.get(EditRequestRow, rid)
                assert row is not None
                if requeue:
                    move_request(s, row, RequestState.PENDING, f"batch {batch_id} {reason}", run_id=self.run_id)
                else:
                    why = f"batch {batch_id} {reason}" + (f"; this edit: {per_edit[rid]}" if rid in per_edit else "")
                    move_request(s, row, RequestState.FAILED, why, batch_id=batch_id, run_id=self.run_id)
            save_checks(s, batch_id, checks, "apply", self.current_version_id)
            record_event(s, "batch_failed", run_id=self.run_id, config_hash=self.config_hash, batch_id=batch_id,
                         ok=False, reason=reason, shares=summary)
        log.warning("batch_failed", batch=batch_id, reason=reason)
        return BatchOutcome(batch_id, len(request_ids), BatchState.FAILED.value, reason, summary,
                            time.perf_counter() - t0)

    def reclaim(self, request_ids: list[int]) -> None:
        with self.db.session() as s:
            for rid in request_ids:
                row = s.get(EditRequestRow, rid)
                assert row is not None
                move_request(s, row, RequestState.CLAIMED, f"retry by {self.worker} in a smaller batch", run_id=self.run_id)
                row.claimed_by = self.worker

    # --- start-up and housekeeping -----------------------------------------------------
    def recover(self) -> int:
        """Under the model lock no other worker lives: return its claims, fail its running batches,
        and remove files that no SQL row names."""
        n = 0
        with self.db.session() as s:
            for batch in s.scalars(select(Batch).where(Batch.state == BatchState.RUNNING.value,
                                                       Batch.model_key == self.ctx.model_key)):
                move_batch(s, batch, BatchState.FAILED, f"worker {batch.worker} stopped mid-batch (recovered)")
                record_event(s, "batch_recovered", run_id=self.run_id, batch_id=batch.id, ok=False)
            for row in s.scalars(select(EditRequestRow).where(EditRequestRow.state == RequestState.CLAIMED.value)):
                move_request(s, row, RequestState.PENDING, f"worker {row.claimed_by} stopped (recovered)",
                             run_id=self.run_id)
                n += 1
            deltas = [Path(p) for p in s.scalars(select(Batch.delta_path)) if p]
            versions = [Path(p) for p in s.scalars(select(ModelVersion.path)) if p]
            current = self.current_row(s)
            removed = self.ctx.store.reconcile(deltas, versions, Path(current.path) if current and current.path else None)
        if n or removed:
            log.warning("recovered", requests=n, removed_files=[str(p) for p in removed])
        return n

    def pending(self) -> int:
        with self.db.session() as s:
            return s.scalar(select(func.count()).select_from(EditRequestRow)
                            .where(EditRequestRow.state == RequestState.PENDING.value)) or 0

    def current_row(self, s: Session) -> ModelVersion | None:
        return s.scalars(select(ModelVersion).where(ModelVersion.is_current,
                                                    ModelVersion.model_key == self.ctx.model_key)).first()

    def load_current(self) -> None:
        """Materialise base ⊕ the current version's deltas (sha256-checked) into the live model."""
        with self.db.session() as s:
            current = self.current_row(s)
            if current is None:
                self.current_version_id = None
                self.ctx.store.materialise([])
                return
            batches = {b.id: b for b in s.scalars(select(Batch).where(Batch.id.in_(current.batch_ids)))}
            log = [(bid, self.ctx.store.load_delta(bid, batches[bid].delta_sha256 or ""))
                   for bid in current.batch_ids]
            expected, self.current_version_id = current.weights_sha256, current.id
        self.ctx.store.materialise(log)
        if self.ctx.store.weights_sha256() != expected:
            raise StateError(f"materialised weights differ from model version {self.current_version_id}'s "
                             "recorded hash; the base model changed: restore it or roll back to the base")

    def prune(self) -> None:
        """Delete version directories beyond [state] keep_versions (never the current one); deltas stay."""
        keep = self.settings.state.keep_versions
        with self.db.session() as s:
            rows = list(s.scalars(select(ModelVersion).where(ModelVersion.model_key == self.ctx.model_key,
                                                             ModelVersion.path.is_not(None))
                                  .order_by(ModelVersion.id.desc())))
            for row in rows[keep:]:
                if row.is_current or row.path is None:
                    continue
                self.ctx.store.remove_version(Path(row.path))
                row.path = None

