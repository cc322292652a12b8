"""`kbsync apply`: queued requests become verified model versions, a batch at a time.

    under the model's writer lock (a dead worker's claims go back to the queue first):
        nothing pending? done, without loading the model
        C_l of the base weights; the current version materialised
        while no stop is asked: claim a batch, then
            plan      its row, its edits, what each is checked on (keys read before the edit)
            compute   every edit's target vector z_i, once (editing/memit.py)
            verdict   solve and push the delta; each edit judged on its own checks
                      (verification/verdict.py); edits that fail are dropped and the rest re-solved
                      from the targets already computed, until every remaining edit passes
                      ([verify] max_resolves bounds the rounds; each drops a subject's edits at least);
                      then the regression gate, and on its refusal the first half, re-solved the same way
            publish   versions/transition.py: files, promote and rows in one transaction, pointer.
                      Only edits whose own checks passed become `verified`; the dropped ones fail
                      with their own reason and wait (store/holds.py), the other half goes back
            abandon   or: the live model back, nothing published
        the run published nothing because the gate refused: the model is `saturated` (store/capacity.py)
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

from sqlalchemy.orm import Session

from kbsync.errors import EditError, TokenizationError
from kbsync.logs import get_logger
from kbsync.sources.factory import open_catalogue
from kbsync.store import capacity, holds
from kbsync.store.events import record_event
from kbsync.store.models import Batch, EditRequestRow, ModelVersion, utcnow
from kbsync.store.queue import claim, count_pending, reap
from kbsync.store.states import BatchState, RequestState
from kbsync.store.transitions import move_batch, move_request
from kbsync.sync.candidate import Candidate, Candidates, Plan
from kbsync.sync.requests import edit_requests
from kbsync.verification import damage
from kbsync.verification.gate import GateVerdict
from kbsync.verification.recheck import record_lost
from kbsync.verification.verdict import summary
from kbsync.verification.verifier import BeforeAnswers, Verifier
from kbsync.versions import registry
from kbsync.versions.transition import BatchTransition
from kbsync.versions.writer import ModelWriter

log = get_logger(__name__)


@dataclass
class BatchOutcome:
    batch_id: int
    n_edits: int               # requests claimed into the batch
    state: str                 # verified (published) | failed (nothing published)
    reason: str
    shares: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    version_id: int | None = None
    n_failed: int = 0          # requests that failed their own checks (or that the gate refused alone)
    damaged: int = 0           # facts right before the batch and wrong after it (flagged against it)
    n_verified: int = 0        # requests published as verified
    n_requeued: int = 0        # requests given back to the queue (the gate's other half, a stop, the cap)
    rounds: int = 0            # check rounds (1 + re-solves)
    held: list[str] = field(default_factory=list)   # "subject relation" of each verified edit


@dataclass
class ApplyReport:
    batches: list[BatchOutcome] = field(default_factory=list)
    recovered: int = 0         # a dead worker's claims given back to the queue
    poisoned: int = 0          # ... failed as poison instead ([editing] max_attempts)
    saturated: str = ""        # the gate refused this run's batches and nothing was published: why

    @property
    def applied(self) -> int:
        return sum(b.n_verified for b in self.batches)

    @property
    def failed(self) -> int:
        return sum(b.n_failed for b in self.batches)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.saturated

    def as_dict(self) -> dict[str, object]:
        return {"applied": self.applied, "failed": self.failed, "recovered": self.recovered,
                "poisoned": self.poisoned, "saturated": self.saturated or None,
                "batches": [asdict(b) for b in self.batches]}


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
        self.candidates = Candidates(writer, self.verifier)
        self.refused = ""            # the latest gate refusal of this run

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
            outcome = self.batch(ids)
            report.batches.append(outcome)
            if self.on_batch:
                self.on_batch(outcome)
            done += len(ids) - outcome.n_requeued
        self.record_capacity(report)
        return report

    def record_capacity(self, report: ApplyReport) -> None:
        """Saturated: the gate refused this run's batches and none was published; room once one is."""
        published = any(b.version_id is not None for b in report.batches)
        if not published and not self.refused:
            return
        state = "room" if published else "saturated"
        report.saturated = "" if published else self.refused
        with self.db.session() as s:
            if capacity.mark(s, self.ctx.model_key, state, report.saturated, version_id=self.writer.version_id,
                             config_hash=self.writer.config_hash, run_id=self.writer.run_id) and state == "saturated":
                log.warning("model_saturated", reason=self.refused)

    # --- one batch ---------------------------------------------------------------------
    def batch(self, request_ids: list[int]) -> BatchOutcome:
        try:
            plan = self.plan(request_ids)
        except BaseException as exc:  # no batch row yet: the claims go back now, not when their lease ends
            self.unclaim(request_ids, f"not planned: {type(exc).__name__}: {exc}")
            raise
        with BatchTransition(self.writer, plan.batch_id, request_ids) as t:
            self.verifier.prepare()  # the gate's figures of the base and of the current version, before the edit
            try:
                targets = self.candidates.targets(plan)
            except (EditError, TokenizationError) as exc:  # the requests themselves cannot be edited
                self.abandon(t, plan, str(exc), Candidate([], None, None), {}, requeue=set())
                return self.outcome(plan, BatchState.FAILED, str(exc), n_failed=len(request_ids))
            before = BeforeAnswers(list(t.before))
            candidate = self.candidates.converge(t, plan, targets, list(request_ids), before)
            gate: GateVerdict | None = None
            requeue: set[int] = set()
            refused: list[int] = []
            refusal = ""
            while candidate.kept and not candidate.capped:
                self.stop.check_in_batch()  # a second signal during the checks: abort before the publish
                self.candidates.phase(plan, "gate", edits=len(candidate.kept))
                t_gate = time.perf_counter()
                gate = self.verifier.gate_check(candidate.kept)
                plan.timings["gate_s"] = plan.timings.get("gate_s", 0.0) + time.perf_counter() - t_gate
                refusal = self.refusal(gate)
                if not refusal:
                    break
                first, rest = self.candidates.halves(plan, candidate.kept)
                if not first or not self.settings.editing.retry_smaller:
                    refused, candidate.kept = candidate.kept, []
                    break
                requeue |= set(rest)   # the other half: claimed again in a later batch
                log.info("refused_trying_half", batch=plan.batch_id, kept=len(first), back=len(rest), why=refusal)
                candidate = self.candidates.converge(t, plan, targets, first, before, candidate)
            if candidate.capped:
                requeue |= set(candidate.kept)
                candidate.kept = []
            if candidate.kept:
                return self.publish(t, plan, candidate, gate, requeue)
            requeue |= set(candidate.retry)
            if refused and gate is not None and not gate.ok:
                self.refused = refusal       # for lack of room: the run may end saturated
            reason = self.failure_reason(candidate, refused, requeue, refusal)
            kind = "refused" if gate is not None and not gate.ok else "failed"
            self.abandon(t, plan, reason, candidate, {rid: refusal for rid in refused}, requeue=requeue,
                         gate=gate, refused_kind=kind)
        return self.outcome(plan, BatchState.FAILED, reason, candidate.round.shares if candidate.round else {},
                            n_failed=len(request_ids) - len(requeue), n_requeued=len(requeue), rounds=candidate.rounds)

    def refusal(self, gate: GateVerdict | None) -> str:
        """Why the edits that passed their own checks may not be published together ('' when they may):
        the regression gate refused them, or ([verify] on_damage = rollback) they broke known facts."""
        if gate is None:
            return ""
        if not gate.ok:
            return gate.reason
        if gate.harms and self.settings.verify.on_damage == "rollback":
            facts = ", ".join(sorted({h.subject + " " + h.relation for h in gate.harms})[:5])
            return f"damage: {len(gate.harms)} known fact(s) wrong after it ({facts}); [verify] on_damage = rollback"
        return ""

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
            edits = edit_requests(self.ctx, present)
            facts = {r.id: (r.subject, r.relation, r.content_hash or "", r.prompt) for r in present}
            plan = Plan(batch.id, request_ids, edits, self.verifier.tests_for(s, present), facts, time.perf_counter(),
                        attempts={r.id: r.attempts for r in present})
        log.info("batch_started", batch=plan.batch_id, n_edits=len(edits))
        return plan

    @staticmethod
    def failure_reason(c: Candidate, refused: list[int], requeue: set[int], refusal: str) -> str:
        parts = []
        if refused:
            parts.append(refusal)
        if len(c.dropped) == 1 and not refused:
            parts.append(next(iter(c.dropped.values()))[0].reason)
        elif c.dropped:
            first = next(iter(c.dropped.values()))[0].reason
            parts.append(f"{len(c.dropped)} edits failed their own checks (the first: {first})")
        if c.retry:
            parts.append(f"{len(c.retry)} dropped for neighbours that moved for other edits too, to be tried "
                         "again in a later batch")
        if c.capped:
            parts.append(f"edits still failing after {c.rounds - 1} re-solves ([verify] max_resolves)")
        if requeue:
            parts.append(f"{len(requeue)} back in the queue")
        return "; ".join(parts) or "nothing to publish"

    # --- the two ends ------------------------------------------------------------------
    def publish(self, t: BatchTransition, plan: Plan, c: Candidate, gate: GateVerdict | None,
                requeue: set[int]) -> BatchOutcome:
        assert c.round is not None and c.delta is not None
        final, kept = c.round, set(c.kept)
        harms = self.verifier.harms(plan.tests, final.checks, kept) + (gate.harms if gate is not None else [])
        reason = (f"{len(kept)} of {len(plan.request_ids)} edits verified on their own checks ({summary(final.shares)})"
                  + (f"; {gate.reason}" if gate is not None else "")
                  + (f"; {len(c.dropped)} failed their own checks" if c.dropped else "")
                  + (f"; {len(c.retry)} to be tried again in a later batch (neighbours that moved for other edits "
                     "too)" if c.retry else "")
                  + (f"; {len(requeue)} back in the queue (the gate's other half)" if requeue else ""))
        damaged: list = []
        drifted: list[int] = []
        run_id = self.writer.run_id

        def record(s: Session, version: ModelVersion) -> None:
            batch = s.get(Batch, plan.batch_id)
            assert batch is not None
            batch.timings = {k: round(v, 3) for k, v in plan.timings.items()} | {
                "total_s": round(time.perf_counter() - plan.t0, 3)}
            batch.metrics = final.shares | {"verified": len(kept), "dropped": len(c.dropped), "rounds": c.rounds,
                                            "first_round": c.first, "dropped_first_round": c.first_failing}
            move_batch(s, batch, BatchState.APPLIED, "delta in the log, version written")
            move_batch(s, batch, BatchState.VERIFIED, reason)
            for rid in c.kept:
                row = s.get(EditRequestRow, rid)
                assert row is not None
                move_request(s, row, RequestState.APPLIED, f"batch {plan.batch_id}", batch_id=plan.batch_id,
                             run_id=run_id)
                move_request(s, row, RequestState.VERIFIED, final.verdicts[rid].reason, batch_id=plan.batch_id,
                             run_id=run_id)
            self.verifier.save(s, plan.batch_id, [x for x in final.checks if x.request_id in kept],
                               {r: final.verdicts[r] for r in c.kept}, version.id, prompts=self.prompts(plan))
            self.fail_dropped(s, plan, c, self.writer.version_id)
            self.retry_later(s, plan, c, self.writer.version_id)
            if gate is not None:   # earlier edits the gate found no longer named on this version: drifted
                drifted.extend(record_lost(s, gate.figures, plan.batch_id, version.id, run_id))
            self.give_back(s, plan, requeue, "the regression gate refused the whole batch; tried in a smaller one")
            self.verifier.save_gate(s, plan.batch_id, gate, version.id)
            damaged.extend(self.verifier.save_damage(s, plan.batch_id, harms, version.id, run_id))
            if damaged and self.settings.verify.on_damage == "requeue":
                damage.requeue(s, damaged, open_catalogue(self.settings), run_id)
            record_event(s, "batch_applied", run_id=run_id, config_hash=self.writer.config_hash,
                         batch_id=plan.batch_id, n_edits=len(kept), dropped=sorted(c.dropped),
                         retried=sorted(c.retry), requeued=sorted(requeue), drifted=drifted,
                         weights_sha256=t.weights_sha256, delta_sha256=t.delta_sha256, shares=final.shares,
                         damaged=len(damaged), rounds=c.rounds, gate=gate.reason if gate is not None else "off")

        self.candidates.phase(plan, "publish", edits=len(kept))
        # the version holds the kept edits only: their delta is the last solve's (the live model)
        published = t.publish(f"b{plan.batch_id:06d}", f"batch {plan.batch_id} applied", delta=c.delta,
                              record=record)
        log.info("batch_verified", batch=plan.batch_id, n_edits=len(kept), dropped=len(c.dropped),
                 retried=len(c.retry), requeued=len(requeue), damaged=len(damaged), drifted=len(drifted),
                 rounds=c.rounds, **final.shares)
        return self.outcome(plan, BatchState.VERIFIED, reason, final.shares, version_id=published.version_id,
                            damaged=len(damaged), n_failed=len(c.dropped), n_verified=len(kept),
                            n_requeued=len(requeue) + len(c.retry), rounds=c.rounds,
                            held=[f"{plan.rows[r][0]} {plan.rows[r][1]}" for r in c.kept])

    def abandon(self, t: BatchTransition, plan: Plan, reason: str, c: Candidate, refused: dict[int, str], *,
                requeue: set[int], gate: GateVerdict | None = None, refused_kind: str = "refused") -> None:
        """Nothing is published: dropped edits fail with their own reason and wait; edits the gate refused
        alone fail and wait for room; `requeue` goes back to the queue."""
        run_id = self.writer.run_id
        per_request = {rid: v.reason for rid, (v, _) in c.dropped.items()} | refused

        def record(s: Session) -> None:
            version = self.writer.version_id  # the version the batch was tried on
            for rid, (verdict, deciding) in sorted(c.dropped.items()):
                self.verifier.save(s, plan.batch_id, [x for x in deciding.checks if x.request_id == rid],
                                   {rid: verdict}, version, prompts=self.prompts(plan))
                self.hold(s, plan, rid, "failed", verdict.reason)
            for rid, (verdict, deciding) in sorted(c.retry.items()):   # back in the queue (t.abandon moves them)
                self.verifier.save(s, plan.batch_id, [x for x in deciding.checks if x.request_id == rid],
                                   {rid: verdict}, version, prompts=self.prompts(plan))
            for rid, why in sorted(refused.items()):
                self.hold(s, plan, rid, refused_kind, why)
            self.verifier.save_gate(s, plan.batch_id, gate, None)
            record_event(s, "batch_failed", run_id=run_id, config_hash=self.writer.config_hash,
                         batch_id=plan.batch_id, ok=False, reason=reason, dropped=sorted(c.dropped),
                         retried=sorted(c.retry), refused=sorted(refused), requeued=sorted(requeue))

        t.abandon(reason, requeue=requeue, per_request=per_request,
                  metrics=(c.round.shares if c.round else {}) | {"dropped": len(c.dropped), "rounds": c.rounds,
                                                                 "first_round": c.first, "dropped_first_round": c.first_failing},
                  record=record)

    def fail_dropped(self, s: Session, plan: Plan, c: Candidate, version_id: int | None) -> None:
        """In the publish's transaction: each dropped edit fails with its own reason, its checks of the
        round that dropped it are kept, and its fact waits (a `failed` hold)."""
        for rid, (verdict, deciding) in sorted(c.dropped.items()):
            row = s.get(EditRequestRow, rid)
            assert row is not None
            move_request(s, row, RequestState.FAILED,
                         f"batch {plan.batch_id}: dropped, the rest re-solved without it; this edit: {verdict.reason}",
                         batch_id=plan.batch_id, run_id=self.writer.run_id)
            self.verifier.save(s, plan.batch_id, [x for x in deciding.checks if x.request_id == rid], {rid: verdict},
                               version_id, prompts=self.prompts(plan))
            self.hold(s, plan, rid, "failed", verdict.reason)

    def retry_later(self, s: Session, plan: Plan, c: Candidate, version_id: int | None) -> None:
        """In the publish's transaction: each edit set aside for a retry goes back to the queue with its
        own reason, and its checks of the round that dropped it are kept."""
        for rid, (verdict, deciding) in sorted(c.retry.items()):
            row = s.get(EditRequestRow, rid)
            assert row is not None
            move_request(s, row, RequestState.PENDING,
                         f"batch {plan.batch_id}: dropped, a neighbour it shares moved for other edits too; tried "
                         f"again in a later batch; this edit: {verdict.reason}", batch_id=plan.batch_id,
                         run_id=self.writer.run_id)
            self.verifier.save(s, plan.batch_id, [x for x in deciding.checks if x.request_id == rid], {rid: verdict},
                               version_id, prompts=self.prompts(plan))

    def unclaim(self, request_ids: list[int], why: str) -> None:
        with self.db.session() as s:
            for rid in request_ids:
                row = s.get(EditRequestRow, rid)
                if row is not None and row.state == RequestState.CLAIMED.value:
                    move_request(s, row, RequestState.PENDING, why, run_id=self.writer.run_id)
            record_event(s, "batch_failed", run_id=self.writer.run_id, config_hash=self.writer.config_hash, ok=False,
                         reason=why, requeued=sorted(request_ids))
        log.warning("batch_not_planned", requeued=len(request_ids), reason=why)

    def give_back(self, s: Session, plan: Plan, request_ids: set[int], why: str) -> None:
        for rid in sorted(request_ids):
            row = s.get(EditRequestRow, rid)
            assert row is not None
            move_request(s, row, RequestState.PENDING, f"batch {plan.batch_id}: {why}", run_id=self.writer.run_id)

    def hold(self, s: Session, plan: Plan, rid: int, kind: str, why: str) -> None:
        subject, relation, content_hash, _ = plan.rows[rid]
        now = holds.Now(self.ctx.model_key, self.writer.version_id, self.writer.config_hash, utcnow())
        holds.hold(s, subject=subject, relation=relation, content_hash=content_hash, kind=kind, reason=why, now=now,
                   backoff_s=self.settings.editing.retry_backoff_s, request_id=rid, batch_id=plan.batch_id,
                   run_id=self.writer.run_id)

    @staticmethod
    def prompts(plan: Plan) -> dict[int, str]:
        return {t.request_id: t.prompt for t in plan.tests}

    def outcome(self, plan: Plan, state: BatchState, reason: str, shares: dict[str, float] | None = None, *,
                version_id: int | None = None, n_failed: int = 0, damaged: int = 0, n_verified: int = 0,
                n_requeued: int = 0, rounds: int = 0, held: list[str] | None = None) -> BatchOutcome:
        return BatchOutcome(plan.batch_id, len(plan.request_ids), state.value, reason, shares or {},
                            time.perf_counter() - plan.t0, version_id, n_failed, damaged, n_verified, n_requeued,
                            rounds, held or [])


__all__ = ["Applier", "ApplyReport", "BatchOutcome", "apply_pending"]
