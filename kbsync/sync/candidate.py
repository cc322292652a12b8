"""A batch's candidate: its edits solved, each checked on its own, the failing ones dropped and
the rest solved again, until every kept edit passes (the compute and verdict steps of apply).

    targets = candidates.targets(plan)               every edit's z_i, once (editing/memit.py)
    c = candidates.converge(t, plan, targets, ids)   solve -> push -> check each edit -> drop the
                                                     failing ones (a subject's edits together) ->
                                                     solve again from the same targets, at most
                                                     [verify] max_resolves times
    An edit dropped only for a neighbour that moved for other edits of the batch as well (the
    batch's move, not shown to be its own: verdict.moved_together) is set aside for a retry in a
    later batch, at most SHARED_MOVE_RETRIES times (the request's claims count them); every other
    dropped edit fails with its own reason.
    first, rest = candidates.halves(plan, c.kept)     a subject's edits kept together

Each round starts from the model before the batch (`BatchTransition.before`), bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kbsync.editing.delta import Delta
from kbsync.editing.memit import BatchTargets, compute_batch_targets, solve_delta
from kbsync.editing.nullspace import PreservedKeys
from kbsync.editing.request import EditRequest
from kbsync.logs import get_logger
from kbsync.verification.checks import EditUnderTest
from kbsync.verification.verdict import EditVerdict, moved_together, split_in_halves, with_subjects
from kbsync.verification.verifier import BeforeAnswers, Round, Verifier
from kbsync.versions.transition import BatchTransition, crashing_in
from kbsync.versions.writer import ModelWriter

log = get_logger(__name__)

SHARED_MOVE_RETRIES = 2   # later batches an edit dropped only for a shared neighbour's move is tried in


@dataclass
class Plan:
    batch_id: int
    request_ids: list[int]
    edits: list[EditRequest]
    tests: list[EditUnderTest]
    rows: dict[int, tuple[str, str, str, str]]     # request id -> (subject, relation, content hash, prompt)
    t0: float
    timings: dict[str, float] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)   # request id -> times claimed, this claim included

    def tests_of(self, ids: set[int]) -> list[EditUnderTest]:
        return [t for t in self.tests if t.request_id in ids]


@dataclass
class Candidate:
    """The edits of a batch that passed their own checks, their delta, and the check rounds so far."""

    kept: list[int]
    delta: Delta | None
    round: Round | None
    dropped: dict[int, tuple[EditVerdict, Round]] = field(default_factory=dict)  # with the round that decided
    retry: dict[int, tuple[EditVerdict, Round]] = field(default_factory=dict)    # dropped, for a later batch
    rounds: int = 0
    capped: bool = False        # edits still failed after [verify] max_resolves re-solves
    first: dict[str, float] = field(default_factory=dict)   # the first round's shares (what a batch rule saw)
    first_failing: int = 0      # edits that failed their own checks in the first round


class Candidates:
    """Solving and checking one writer's batches (the loaded model, its hyper-parameters, C_l)."""

    def __init__(self, writer: ModelWriter, verifier: Verifier) -> None:
        self.writer, self.verifier = writer, verifier
        self.ctx, self.stop, self.settings = writer.context(), writer.stop, writer.settings

    @staticmethod
    def phase(plan: Plan, name: str, **details: object) -> None:
        """A batch takes minutes: say which step it is in (targets, solve, checks, gate, publish)."""
        log.info("batch_phase", batch=plan.batch_id, phase=name, seconds=round(time.perf_counter() - plan.t0, 1),
                 **details)

    def targets(self, plan: Plan) -> BatchTargets:
        loaded = self.ctx.loaded
        self.phase(plan, "targets", edits=len(plan.edits))
        t0 = time.perf_counter()
        targets = compute_batch_targets(loaded, loaded.tokenizer, loaded.adapter, plan.edits, self.ctx.hparams,
                                        timings=plan.timings, check_stop=crashing_in("targets", self.stop.check_in_batch))
        plan.timings["delta_s"] = time.perf_counter() - t0
        return targets

    def solve(self, plan: Plan, targets: BatchTargets, kept: list[int]) -> Delta:
        hp, loaded = self.ctx.hparams, self.ctx.loaded
        t0 = time.perf_counter()
        preserved = PreservedKeys.kept_by(hp, [d for _, d in self.ctx.store.active])  # AlphaEdit; edit_memory
        delta = solve_delta(loaded, loaded.tokenizer, loaded.adapter, targets.without(set(plan.request_ids) - set(kept)),
                            hp, self.ctx.moments(), preserved=preserved, timings=plan.timings,
                            check_stop=self.stop.check_in_batch)
        plan.timings["delta_s"] = plan.timings.get("delta_s", 0.0) + time.perf_counter() - t0
        return delta

    def converge(self, t: BatchTransition, plan: Plan, targets: BatchTargets, kept: list[int],
                 before: BeforeAnswers, previous: Candidate | None = None) -> Candidate:
        """Solve the kept edits, check each on its own, drop those that fail (with their subject's other
        edits) and solve again, until every kept edit passes, none is left, or [verify] max_resolves."""
        c = Candidate(list(kept), None, None, dict(previous.dropped) if previous else {},
                      dict(previous.retry) if previous else {}, previous.rounds if previous else 0,
                      first=dict(previous.first) if previous else {},
                      first_failing=previous.first_failing if previous else 0)
        subjects = self.subjects(plan)
        while c.kept:
            store = self.ctx.store
            if [b for b, _ in store.active] != [b for b, _ in t.before]:
                store.materialise(t.before)           # the model before the batch, bit for bit
            self.phase(plan, "solve", edits=len(c.kept), round=c.rounds + 1)
            c.delta = self.solve(plan, targets, c.kept)
            store.push(plan.batch_id, c.delta)
            self.phase(plan, "checks", edits=len(c.kept), round=c.rounds + 1)
            t_verify = time.perf_counter()
            c.round = self.verifier.check_edits(plan.tests_of(set(c.kept)), before)
            plan.timings["verify_s"] = plan.timings.get("verify_s", 0.0) + time.perf_counter() - t_verify
            c.rounds += 1
            if c.rounds == 1:
                c.first = c.round.shares
            own = c.round.failing & set(c.kept)
            if c.rounds == 1:
                c.first_failing = len(own)
            together = {r for r in moved_together(c.round.checks, c.round.verdicts) & own
                        if plan.attempts.get(r, 1) <= SHARED_MOVE_RETRIES}
            failing = with_subjects(own - together, plan.request_ids, subjects) & set(c.kept)
            later = with_subjects(together, plan.request_ids, subjects) & set(c.kept) - failing
            failing |= later
            if not failing:
                break
            for rid in failing:
                verdict = c.round.verdicts.get(rid) or EditVerdict(
                    rid, False, "subject", "dropped with its subject's other edits, one of which failed")
                (c.retry if rid in later else c.dropped)[rid] = (verdict, c.round)
            if c.rounds > self.settings.verify.max_resolves:
                c.capped = True
                break
            c.kept = [r for r in c.kept if r not in failing]
            log.info("batch_resolving", batch=plan.batch_id, dropped=len(failing), kept=len(c.kept), round=c.rounds)
        return c

    def subjects(self, plan: Plan) -> list[str] | None:
        """Each edit's subject when the editor merges a subject's edits (they are kept or dropped together)."""
        return [e.subject for e in plan.edits] if self.ctx.hparams.merge_same_subject else None

    def halves(self, plan: Plan, kept: list[int]) -> tuple[list[int], list[int]]:
        """The kept edits in two parts, a subject's edits together; ([], kept) when they cannot be split."""
        if len(kept) < 2:
            return [], kept
        subjects = self.subjects(plan)
        mine = [subjects[plan.request_ids.index(r)] for r in kept] if subjects is not None else None
        if mine is not None and len(set(mine)) < 2:
            return [], kept
        first, rest = split_in_halves(kept, mine)
        return first, rest

