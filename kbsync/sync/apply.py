"""`kbsync apply`: the work loop that turns queued requests into verified model versions.

    lock the model, recover what a dead worker left (sync/writer.py)
    nothing pending? done, without loading the model
    key statistics C_l → materialise the current version (versions/registry.py)
    loop: stop asked? → claim a batch → compute the delta (pure) → apply in memory →
          checks (sync/checks.py) → pass: commit   delta file, version directory, one SQL
                                                  transaction (`registry.promote`), `current`
                                       fail: revert, mark failed (or retry in halves)
    log longer than [editing] compact_after? compact it (sync/compact.py)
    prune old version directories

A half-applied batch is never visible: files are written (atomically) before the one
transaction that names them, and `registry.reconcile` removes files no row names. A worker
that dies holds no lock (flock / advisory locks die with the process), so whoever takes the
lock next returns its claimed requests to the queue (`store/recovery.py`).

Stopping: the first signal ends the loop after the current batch; the second aborts the batch
at its next check (during the delta's computation, or before its commit), giving its
requests back to the queue. See `kbsync.runtime.Stop`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from kbsync.editing.delta import Delta
from kbsync.editing.memit import compute_delta
from kbsync.editing.nullspace import PreservedKeys
from kbsync.editing.request import EditRequest
from kbsync.errors import EditError, RollbackError, TokenizationError
from kbsync.logs import get_logger
from kbsync.sources.factory import open_catalogue
from kbsync.store.events import record_event
from kbsync.store.models import Batch, EditRequestRow
from kbsync.store.queue import claim, count_pending, reap
from kbsync.store.states import BatchState, RequestState
from kbsync.store.transitions import move_batch, move_request
from kbsync.sync.rollback import plan, undo
from kbsync.verification import damage
from kbsync.verification.checks import (
    Check,
    EditUnderTest,
    edits_under_test,
    failing_requests,
    judge,
    retry_parts,
    run_checks,
    save_checks,
    shares,
    split_in_halves,
)
from kbsync.verification.damage import Harm, neighbour_harm
from kbsync.verification.gate import RegressionGate, Verdict
from kbsync.verification.neighbours import key_similarity
from kbsync.versions import registry
from kbsync.versions.writer import ModelWriter

log = get_logger(__name__)

CRASH_ENV = "KBSYNC_CRASH_AT"  # fault injection for the crash-safety tests (tests/sync/test_processes.py)
CRASH_POINTS = ("targets", "delta_written", "version_written", "before_commit")


def crash_point(name: str) -> None:
    """Die here (SIGKILL, no clean-up) when KBSYNC_CRASH_AT names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def crashing_in(name: str, check_stop: Callable[[], None]) -> Callable[[], None]:
    """`check_stop`, dying at its first call when KBSYNC_CRASH_AT names `name`: a kill mid-computation,
    at a step compute_delta really reaches (a timer could fire after the batch committed)."""
    if os.environ.get(CRASH_ENV) != name:
        return check_stop

    def check() -> None:
        crash_point(name)
        check_stop()
    return check


@dataclass
class BatchOutcome:
    batch_id: int
    n_edits: int
    state: str
    reason: str
    shares: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    version_id: int | None = None
    n_failed: int = 0          # requests this attempt left failed (0 when they went back to the queue)
    damaged: int = 0           # facts right before the batch and wrong after it (flagged against it)


@dataclass
class ApplyReport:
    batches: list[BatchOutcome] = field(default_factory=list)
    recovered: int = 0         # a dead worker's claims given back to the queue
    poisoned: int = 0          # ... failed as poison instead ([editing] max_attempts)
    compaction: Any = None     # sync/compact.CompactReport when [editing] compact_after ran one
    rolled_back: list[int] = field(default_factory=list)  # damaging batches undone ([verify] on_damage)

    @property
    def applied(self) -> int:
        return sum(b.n_edits for b in self.batches if b.state == BatchState.VERIFIED.value)

    @property
    def failed(self) -> int:
        """Requests that ended failed; a batch attempt retried in halves counts none of its own."""
        return sum(b.n_failed for b in self.batches)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def as_dict(self) -> dict[str, object]:
        return {"applied": self.applied, "failed": self.failed, "recovered": self.recovered,
                "poisoned": self.poisoned, "rolled_back": self.rolled_back,
                "batches": [asdict(b) for b in self.batches],
                "compaction": asdict(self.compaction) if self.compaction is not None else None}


def apply_pending(writer: ModelWriter, *, batch_size: int | None = None, max_edits: int | None = None,
                  lock_wait_s: float = 0.0, on_batch: Callable[[BatchOutcome], None] | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  report: ApplyReport | None = None) -> ApplyReport:
    """Apply pending requests in batches under the model's lock (see the module docstring).

    `report` (given, or a new one) is filled as batches end, so a caller that is interrupted
    still knows what was done."""
    report = report if report is not None else ApplyReport()
    with writer.locked(lock_wait_s) as recovered:
        report.recovered, report.poisoned = recovered.returned, recovered.poisoned
        with writer.db.session() as s:
            pending = count_pending(s)
            damaging = list(damage.flagged(s, writer.model_key)) \
                if writer.settings.verify.on_damage == "rollback" else []
            if not pending and not damaging:
                return report             # nothing to edit: no model, no key statistics
        writer.stop.check_outside_batch()
        ctx = writer.context()
        ctx.moments(progress, check_stop=writer.stop.check_outside_batch)  # C_l of the base weights
        writer.open_current()
        for batch_id in reversed(damaging):  # [verify] on_damage = "rollback": damage a diff found
            plan_ = plan(writer, batch_id, dry_run=False)
            plan_.why = "damage flagged against it; [verify] on_damage = rollback"
            report.rolled_back.append(undo(writer, plan_).batch_id)
        ApplyWorker(writer, on_batch).run(report, batch_size or writer.settings.editing.batch_size, max_edits)
        limit = writer.settings.editing.compact_after
        if limit and len(ctx.store.active) > limit and not writer.stop.requested:
            from kbsync.sync.compact import compact_open

            try:  # a failed compaction leaves the log as it was (its batch row and event say why)
                report.compaction = compact_open(writer)
            except (EditError, RollbackError, TokenizationError) as exc:
                log.warning("compaction_skipped", reason=str(exc))
        registry.prune(writer.db, ctx.store, writer.settings.state.keep_versions)
    return report


class ApplyWorker:
    """The loop and the fate of one batch: commit or fail. The writer's model is open."""

    def __init__(self, writer: ModelWriter, on_batch: Callable[[BatchOutcome], None] | None = None) -> None:
        self.writer, self.on_batch = writer, on_batch
        self.db, self.ctx, self.stop = writer.db, writer.context(), writer.stop
        self.settings, self.run_id, self.worker = writer.settings, writer.run_id, writer.worker
        self.gate = RegressionGate(writer) if self.settings.gate.enabled else None

    @property
    def active(self) -> list[tuple[int, Delta]]:
        """(batch id, delta) in the live model, in order: the model store's log."""
        return self.ctx.store.active

    def run(self, report: ApplyReport, batch_size: int, max_edits: int | None = None) -> ApplyReport:
        done = 0
        while not self.stop.requested and (max_edits is None or done < max_edits):
            limit = batch_size if max_edits is None else min(batch_size, max_edits - done)
            with self.db.session() as s:
                reap(s, run_id=self.run_id, max_attempts=self.settings.editing.max_attempts)
                rows = claim(s, limit, self.worker, self.settings.editing.lease_s, self.run_id,
                             subjects_together=self.settings.editing.merge_same_subject)
                if not rows:
                    break
                ids = [r.id for r in rows]
            for outcome in self.process(ids):
                report.batches.append(outcome)
                if self.on_batch:
                    self.on_batch(outcome)
            done += len(ids)
        return report

    # --- one batch ---------------------------------------------------------------------
    def process(self, request_ids: list[int]) -> list[BatchOutcome]:
        """Apply claimed requests as one batch; on failure retry in halves when configured."""
        t0 = time.perf_counter()
        batch_id, edits, tests = self.start_batch(request_ids)
        timings: dict[str, float] = {}
        hp = self.ctx.hparams
        try:
            if self.gate is not None:
                self.gate.prepare()  # the base's and the current version's figures, before the edit
            preserved = PreservedKeys.kept_by(hp, [d for _, d in self.active])  # AlphaEdit; MEMIT's edit_memory
            delta = compute_delta(self.ctx.loaded, self.ctx.loaded.tokenizer, self.ctx.loaded.adapter, edits, hp,
                                  self.ctx.moments(), preserved=preserved, timings=timings,
                                  check_stop=crashing_in("targets", self.stop.check_in_batch))
        except (EditError, TokenizationError) as exc:  # the requests themselves cannot be edited
            return [self.fail(batch_id, request_ids, str(exc), [], {}, t0)]
        except BaseException as exc:  # out of memory, interrupted, a bug: give the requests back
            self.fail(batch_id, request_ids, f"not applied: {type(exc).__name__}: {exc}", [], {}, t0, requeue=True)
            raise
        timings["delta_s"] = timings.pop("total_s", 0.0)  # compute_delta's own total
        applied = delta.apply(self.ctx.loaded.model, self.ctx.loaded.adapter)
        loaded = self.ctx.loaded
        try:
            t_checks = time.perf_counter()
            checks = run_checks(self.ctx.loaded.model, self.ctx.loaded.tokenizer, tests,
                                self.settings.probe.max_new_tokens)
            timings["verify_s"] = time.perf_counter() - t_checks
            self.stop.check_in_batch()  # a second signal during the checks: abort before the commit
        except BaseException as exc:  # the checks never ran to the end: undo and give the requests back
            applied.revert()
            self.fail(batch_id, request_ids, f"not applied: {type(exc).__name__}: {exc}", [], {}, t0, requeue=True)
            raise
        summary = shares(checks)
        ok, reason = judge(summary, self.settings.verify)
        if not ok:
            applied.revert()
            parts = retry_parts(checks, request_ids, self.settings.verify, halves=self.settings.editing.retry_smaller,
                                subjects=self.merged_subjects(edits))
            if parts:  # hard edits alone and the rest without them (else halves): one hard edit fails alone
                return self.retry_in_parts(batch_id, request_ids, parts, reason, checks, summary, t0)
            per_edit = failing_requests(checks)
            return [self.fail(batch_id, request_ids, reason, checks, summary, t0, per_edit=per_edit)]
        try:  # what the batch did beyond its edits: damaged neighbours, the regression gate
            t_gate = time.perf_counter()
            harms = neighbour_harm(loaded.model, loaded.tokenizer, tests, checks, self.settings.probe.max_new_tokens)
            verdict = self.gate.check(request_ids) if self.gate is not None else None
            harms += verdict.harms if verdict is not None else []
            timings["gate_s"] = time.perf_counter() - t_gate
            self.stop.check_in_batch()
        except BaseException as exc:
            applied.revert()
            self.fail(batch_id, request_ids, f"not applied: {type(exc).__name__}: {exc}", [], {}, t0, requeue=True)
            raise
        if verdict is not None and not verdict.ok:
            applied.revert()
            return self.fail_gate(batch_id, request_ids, verdict, checks, summary, t0, self.merged_subjects(edits))
        if harms and self.settings.verify.on_damage == "rollback":
            applied.revert()
            why = (f"damage: {len(harms)} fact(s) answered right before the batch are wrong after it "
                   f"({', '.join(sorted({h.subject + ' ' + h.relation for h in harms})[:5])}); [verify] on_damage = rollback")
            return [self.fail(batch_id, request_ids, why, checks, summary, t0)]
        reason = reason + (f"; {verdict.reason}" if verdict is not None else "")
        try:
            return [self.commit(batch_id, request_ids, delta, checks, summary, reason, timings, t0, verdict, harms)]
        except BaseException as exc:
            if self.active and self.active[-1][0] == batch_id:
                raise  # committed in SQL; only the pointer failed: reconcile fixes it
            applied.revert()
            self.fail(batch_id, request_ids, f"not applied: {type(exc).__name__}: {exc}", [], {}, t0, requeue=True)
            raise

    def merged_subjects(self, edits: list[EditRequest]) -> list[str] | None:
        """Each edit's subject when the editor merges a subject's edits (retries keep them together)."""
        return [e.subject for e in edits] if self.ctx.hparams.merge_same_subject else None

    def start_batch(self, request_ids: list[int]) -> tuple[int, list[EditRequest], list[EditUnderTest]]:
        """The batch row for claimed requests, their edits, and what each is checked on."""
        hp = self.ctx.hparams
        with self.db.session() as s:
            rows = [s.get(EditRequestRow, i) for i in request_ids]
            batch = Batch(model_key=self.ctx.model_key, algorithm=hp.algorithm, hparams=hp.to_dict(),
                          n_edits=len(rows), version_before_id=self.writer.version_id, worker=self.worker,
                          run_id=self.run_id)
            s.add(batch)
            s.flush()
            present = []
            for row in rows:
                assert row is not None and row.state == RequestState.CLAIMED.value
                row.batch_id = batch.id
                present.append(row)
            edits = [EditRequest(prompt=r.prompt, subject=r.subject_label, target_new=r.target_new,
                                 target_old=r.target_old, request_id=r.id, paraphrases=tuple(r.paraphrases))
                     for r in present]
            v = self.settings.verify
            tests = edits_under_test(s, present, v.neighbours, key_similarity(self.ctx), v.at_risk_share,
                                     v.at_risk_pool)  # keys on the model before the edit
            batch_id = batch.id
        log.info("batch_started", batch=batch_id, n_edits=len(edits))
        return batch_id, edits, tests

    def retry_in_parts(self, batch_id: int, request_ids: list[int], parts: list[list[int]], reason: str,
                       checks: list[Check], summary: dict[str, float], t0: float) -> list[BatchOutcome]:
        why = reason + "; retrying as " + " + ".join(str(len(p)) for p in parts)
        outcomes = [self.fail(batch_id, request_ids, why, checks, summary, t0, requeue=True)]
        for part in parts:
            if self.stop.requested:
                break  # stopping: the rest stay queued for the next run
            self.reclaim(part)
            outcomes += self.process(part)
        return outcomes

    def fail_gate(self, batch_id: int, request_ids: list[int], verdict: Verdict, checks: list[Check],
                  summary: dict[str, float], t0: float, subjects: list[str] | None = None) -> list[BatchOutcome]:
        """The regression gate refused the batch: keep its figures, then fail it (or retry in halves)."""
        assert self.gate is not None
        with self.db.session() as s:
            self.gate.save(s, batch_id, verdict, None)
        if self.settings.editing.retry_smaller and len(request_ids) > 1:
            return self.retry_in_parts(batch_id, request_ids, split_in_halves(request_ids, subjects),
                                       verdict.reason, checks, summary, t0)
        return [self.fail(batch_id, request_ids, verdict.reason, checks, summary, t0)]

    def commit(self, batch_id: int, request_ids: list[int], delta: Delta, checks: list[Check],
               summary: dict[str, float], reason: str, timings: dict[str, float], t0: float,
               verdict: Verdict | None = None, harms: list[Harm] | None = None) -> BatchOutcome:
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
            version = registry.promote(s, self.ctx.model_key, batch_ids=active_ids, weights_sha256=weights_sha,
                                       path=version_path, reason=f"batch {batch_id} applied")
            batch = s.get(Batch, batch_id)
            assert batch is not None
            batch.version_after_id = version.id
            registry.record_delta(batch, delta, delta_path, delta_sha)
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
            if verdict is not None and self.gate is not None:
                self.gate.save(s, batch_id, verdict, version.id)
            damaged = damage.record(s, batch_id, harms or [], version_id=version.id, run_id=self.run_id)
            if damaged and self.settings.verify.on_damage == "requeue":
                damage.requeue(s, damaged, open_catalogue(self.settings), self.run_id)
            record_event(s, "batch_applied", run_id=self.run_id, config_hash=self.writer.config_hash,
                         batch_id=batch_id, n_edits=len(request_ids), weights_sha256=weights_sha,
                         delta_sha256=delta_sha, shares=summary, damaged=len(damaged),
                         gate=verdict.reason if verdict is not None else "off")
            version_id = version.id
        self.active.append((batch_id, delta))
        self.writer.version_id = version_id
        store.set_current(version_path)
        log.info("batch_verified", batch=batch_id, n_edits=len(request_ids), damaged=len(damaged), **summary)
        return BatchOutcome(batch_id, len(request_ids), BatchState.VERIFIED.value, reason, summary,
                            time.perf_counter() - t0, version_id, damaged=len(damaged))

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
            save_checks(s, batch_id, checks, "apply", self.writer.version_id)
            record_event(s, "batch_failed", run_id=self.run_id, config_hash=self.writer.config_hash,
                         batch_id=batch_id, ok=False, reason=reason, shares=summary, requeued=requeue)
        log.warning("batch_failed", batch=batch_id, reason=reason, requeued=requeue)
        return BatchOutcome(batch_id, len(request_ids), BatchState.FAILED.value, reason, summary,
                            time.perf_counter() - t0, n_failed=0 if requeue else len(request_ids))

    def reclaim(self, request_ids: list[int]) -> None:
        with self.db.session() as s:
            for rid in request_ids:
                row = s.get(EditRequestRow, rid)
                assert row is not None
                move_request(s, row, RequestState.CLAIMED, f"retry by {self.worker} in a smaller batch",
                             run_id=self.run_id)
                row.claimed_by = self.worker


__all__ = ["ApplyReport", "ApplyWorker", "BatchOutcome", "apply_pending"]
