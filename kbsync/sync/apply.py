"""`kbsync apply`: queued requests become verified model versions, a batch at a time.

    under the model's writer lock (a dead worker's claims go back to the queue first):
        nothing pending? done, without loading the model
        C_l of the base weights; the current version materialised
        while no stop is asked: claim a batch, then
            plan      its row, its edits, what each is checked on (keys read before the edit)
            compute   the delta (editing/memit.py: a pure function of model and requests)
            verdict   the delta pushed onto the live model, judged (verification/verifier.py)
            publish   versions/transition.py: files, promote and rows in one transaction, pointer
            abandon   or: the live model back, the requests failed or back in the queue, and the
                      retry parts (verification/verdict.py) claimed again, smaller
        prune old version directories

A half-applied batch is never visible: the transition writes files before the one transaction
that names them, and `registry.reconcile` removes files no row names. A worker that dies holds
no lock (flock / advisory locks die with the process), so whoever takes the lock next returns
its claimed requests to the queue (`store/recovery.py`).

Stopping: the first signal ends the loop after the current batch; the second aborts the batch
at its next check (during the delta's computation, or before its publish), giving its requests
back to the queue. See `kbsync.runtime.Stop`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from kbsync.editing.delta import Delta
from kbsync.editing.memit import compute_delta
from kbsync.editing.nullspace import PreservedKeys
from kbsync.editing.request import EditRequest
from kbsync.errors import EditError, TokenizationError
from kbsync.logs import get_logger
from kbsync.sources.factory import open_catalogue
from kbsync.store.events import record_event
from kbsync.store.models import Batch, EditRequestRow, ModelVersion
from kbsync.store.queue import claim, count_pending, reap
from kbsync.store.states import BatchState, RequestState
from kbsync.store.transitions import move_batch, move_request
from kbsync.verification import damage
from kbsync.verification.checks import EditUnderTest
from kbsync.verification.verdict import failing_requests, retry_parts, split_in_halves
from kbsync.verification.verifier import BatchVerdict, Verifier
from kbsync.versions import registry
from kbsync.versions.transition import BatchTransition, crashing_in
from kbsync.versions.writer import ModelWriter

log = get_logger(__name__)


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

    @property
    def applied(self) -> int:
        return sum(b.n_edits for b in self.batches if b.state == BatchState.VERIFIED.value)

    @property
    def failed(self) -> int:
        """Requests that ended failed; a batch attempt retried in parts counts none of its own."""
        return sum(b.n_failed for b in self.batches)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def as_dict(self) -> dict[str, object]:
        return {"applied": self.applied, "failed": self.failed, "recovered": self.recovered,
                "poisoned": self.poisoned, "batches": [asdict(b) for b in self.batches]}


@dataclass
class Plan:
    batch_id: int
    request_ids: list[int]
    edits: list[EditRequest]
    tests: list[EditUnderTest]
    t0: float
    timings: dict[str, float] = field(default_factory=dict)


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
            if not count_pending(s):
                return report             # nothing to edit: no model, no key statistics
        writer.stop.check_outside_batch()
        writer.context().moments(progress, check_stop=writer.stop.check_outside_batch)  # C_l of the base
        writer.open_current()
        Applier(writer, on_batch).run(report, batch_size or writer.settings.editing.batch_size, max_edits)
        registry.prune(writer.db, writer.context().store, writer.settings.state.keep_versions)
    return report


class Applier:
    """The loop, and each batch's plan → compute → verdict → publish or abandon."""

    def __init__(self, writer: ModelWriter, on_batch: Callable[[BatchOutcome], None] | None = None) -> None:
        self.writer, self.on_batch = writer, on_batch
        self.db, self.ctx, self.stop, self.settings = writer.db, writer.context(), writer.stop, writer.settings
        self.verifier = Verifier(writer)

    def run(self, report: ApplyReport, batch_size: int, max_edits: int | None = None) -> ApplyReport:
        done = 0
        while not self.stop.requested and (max_edits is None or done < max_edits):
            limit = batch_size if max_edits is None else min(batch_size, max_edits - done)
            with self.db.session() as s:
                reap(s, run_id=self.writer.run_id, max_attempts=self.settings.editing.max_attempts)
                rows = claim(s, limit, self.writer.worker, self.settings.editing.lease_s, self.writer.run_id,
                             subjects_together=self.settings.editing.merge_same_subject)
                if not rows:
                    break
                ids = [r.id for r in rows]
            for outcome in self.batch(ids):
                report.batches.append(outcome)
                if self.on_batch:
                    self.on_batch(outcome)
            done += len(ids)
        return report

    # --- one batch ---------------------------------------------------------------------
    def batch(self, request_ids: list[int]) -> list[BatchOutcome]:
        plan = self.plan(request_ids)
        with BatchTransition(self.writer, plan.batch_id, request_ids) as t:
            self.verifier.prepare()  # the gate's figures of the base and of the current version, before the edit
            try:
                delta = self.compute(plan)
            except (EditError, TokenizationError) as exc:  # the requests themselves cannot be edited
                self.abandon(t, plan, str(exc), [], {}, per_request={})
                return [self.outcome(plan, BatchState.FAILED, str(exc), n_failed=len(request_ids))]
            self.ctx.store.push(plan.batch_id, delta)
            t_verify = time.perf_counter()
            verdict = self.verifier.judge(plan.tests, request_ids)
            plan.timings["verify_s"] = time.perf_counter() - t_verify
            self.stop.check_in_batch()  # a second signal during the checks: abort before the publish
            if verdict.ok:
                return [self.publish(t, plan, delta, verdict)]
            parts = self.retry_parts(plan, verdict)
            why = verdict.reason + self.retrying(parts)
            self.abandon(t, plan, why, parts, verdict.shares, verdict=verdict,
                         per_request=failing_requests(verdict.checks) if verdict.decided_by == "thresholds" else {})
        failed = [self.outcome(plan, BatchState.FAILED, why, verdict.shares, n_failed=0 if parts else len(request_ids))]
        for part in parts:
            if self.stop.requested:
                break  # stopping: the rest stay queued for the next run
            self.reclaim(part)
            failed += self.batch(part)
        return failed

    def plan(self, request_ids: list[int]) -> Plan:
        """The batch row for claimed requests, their edits, and what each is checked on."""
        hp = self.ctx.hparams
        with self.db.session() as s:
            rows = [s.get(EditRequestRow, i) for i in request_ids]
            batch = Batch(model_key=self.ctx.model_key, algorithm=hp.algorithm, hparams=hp.to_dict(),
                          n_edits=len(rows), version_before_id=self.writer.version_id, worker=self.writer.worker,
                          run_id=self.writer.run_id)
            s.add(batch)
            s.flush()
            present: list[EditRequestRow] = []
            for row in rows:
                assert row is not None and row.state == RequestState.CLAIMED.value
                row.batch_id = batch.id
                present.append(row)
            edits = [EditRequest(prompt=r.prompt, subject=r.subject_label, target_new=r.target_new,
                                 target_old=r.target_old, request_id=r.id, paraphrases=tuple(r.paraphrases))
                     for r in present]
            plan = Plan(batch.id, request_ids, edits, self.verifier.tests_for(s, present), time.perf_counter())
        log.info("batch_started", batch=plan.batch_id, n_edits=len(edits))
        return plan

    def compute(self, plan: Plan) -> Delta:
        hp, loaded = self.ctx.hparams, self.ctx.loaded
        preserved = PreservedKeys.kept_by(hp, [d for _, d in self.ctx.store.active])  # AlphaEdit; edit_memory
        delta = compute_delta(loaded, loaded.tokenizer, loaded.adapter, plan.edits, hp, self.ctx.moments(),
                              preserved=preserved, timings=plan.timings,
                              check_stop=crashing_in("targets", self.stop.check_in_batch))
        plan.timings["delta_s"] = plan.timings.pop("total_s", 0.0)  # compute_delta's own total
        return delta

    def subjects(self, plan: Plan) -> list[str] | None:
        """Each edit's subject when the editor merges a subject's edits (retries keep them together)."""
        return [e.subject for e in plan.edits] if self.ctx.hparams.merge_same_subject else None

    def retry_parts(self, plan: Plan, verdict: BatchVerdict) -> list[list[int]]:
        """Smaller batches to retry a failed one in: [] fails it for good."""
        ids, subjects = plan.request_ids, self.subjects(plan)
        if verdict.decided_by == "gate":
            return split_in_halves(ids, subjects) if self.settings.editing.retry_smaller and len(ids) > 1 else []
        if verdict.decided_by == "thresholds":
            return retry_parts(verdict.checks, ids, self.settings.verify, halves=self.settings.editing.retry_smaller,
                               subjects=subjects)
        return []

    @staticmethod
    def retrying(parts: list[list[int]]) -> str:
        return "; retrying as " + " + ".join(str(len(p)) for p in parts) if parts else ""

    # --- the two ends ------------------------------------------------------------------
    def publish(self, t: BatchTransition, plan: Plan, delta: Delta, verdict: BatchVerdict) -> BatchOutcome:
        damaged: list = []

        def record(s, version: ModelVersion) -> None:  # type: ignore[no-untyped-def]
            batch = s.get(Batch, plan.batch_id)
            batch.timings = {k: round(v, 3) for k, v in plan.timings.items()} | {
                "total_s": round(time.perf_counter() - plan.t0, 3)}
            batch.metrics = verdict.shares
            move_batch(s, batch, BatchState.APPLIED, "delta in the log, version written")
            move_batch(s, batch, BatchState.VERIFIED, verdict.reason)
            for rid in plan.request_ids:
                row = s.get(EditRequestRow, rid)
                move_request(s, row, RequestState.APPLIED, f"batch {plan.batch_id}", batch_id=plan.batch_id,
                             run_id=self.writer.run_id)
                move_request(s, row, RequestState.VERIFIED, verdict.reason, batch_id=plan.batch_id,
                             run_id=self.writer.run_id)
            damaged.extend(self.verifier.save(s, plan.batch_id, verdict, version.id, published=True,
                                              run_id=self.writer.run_id))
            if damaged and self.settings.verify.on_damage == "requeue":
                damage.requeue(s, damaged, open_catalogue(self.settings), self.writer.run_id)
            record_event(s, "batch_applied", run_id=self.writer.run_id, config_hash=self.writer.config_hash,
                         batch_id=plan.batch_id, n_edits=len(plan.request_ids), weights_sha256=t.weights_sha256,
                         delta_sha256=t.delta_sha256, shares=verdict.shares, damaged=len(damaged),
                         gate=verdict.gate.reason if verdict.gate is not None else "off")

        published = t.publish(f"b{plan.batch_id:06d}", f"batch {plan.batch_id} applied", delta=delta, record=record)
        log.info("batch_verified", batch=plan.batch_id, n_edits=len(plan.request_ids), damaged=len(damaged),
                 **verdict.shares)
        return self.outcome(plan, BatchState.VERIFIED, verdict.reason, verdict.shares,
                            version_id=published.version_id, damaged=len(damaged))

    def abandon(self, t: BatchTransition, plan: Plan, reason: str, parts: list[list[int]], shares: dict[str, float],
                *, verdict: BatchVerdict | None = None, per_request: dict[int, str]) -> None:
        """The batch fails: its requests go back to the queue when `parts` retry them, else fail."""
        def record(s) -> None:  # type: ignore[no-untyped-def]
            if verdict is not None:  # checks on the version the batch was tried on
                self.verifier.save(s, plan.batch_id, verdict, self.writer.version_id, published=False)
            record_event(s, "batch_failed", run_id=self.writer.run_id, config_hash=self.writer.config_hash,
                         batch_id=plan.batch_id, ok=False, reason=reason, shares=shares, requeued=bool(parts))

        t.abandon(reason, requeue=bool(parts), per_request=per_request, metrics=shares, record=record)

    def outcome(self, plan: Plan, state: BatchState, reason: str, shares: dict[str, float] | None = None, *,
                version_id: int | None = None, n_failed: int = 0, damaged: int = 0) -> BatchOutcome:
        return BatchOutcome(plan.batch_id, len(plan.request_ids), state.value, reason, shares or {},
                            time.perf_counter() - plan.t0, version_id, n_failed, damaged)

    def reclaim(self, request_ids: list[int]) -> None:
        with self.db.session() as s:
            for rid in request_ids:
                row = s.get(EditRequestRow, rid)
                assert row is not None
                move_request(s, row, RequestState.CLAIMED, f"retry by {self.writer.worker} in a smaller batch",
                             run_id=self.writer.run_id)
                row.claimed_by = self.writer.worker


__all__ = ["Applier", "ApplyReport", "BatchOutcome", "apply_pending"]
