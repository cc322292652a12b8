"""The verification service: everything apply, compaction and the re-checks ask of verification.

    verifier = Verifier(writer)                  this writer's model; the gate when [gate] enabled
    tests = verifier.tests_for(s, rows)          what each request is checked on (keys read on the
                                                 model before the edit: call it first)
    verifier.prepare()                           the gate's base and previous figures, before the edit
    checks = verifier.check_edits(tests, before) on the edited model; a neighbour whose greedy answer
                                                 misses its KB value is asked again on `before` (the
                                                 log before the edit): one that missed it there too
                                                 was not moved by the edit
    verdicts = verifier.judge(checks)            one EditVerdict per edit (verification/verdict.py)
    gate = verifier.gate_check(request_ids)      the regression gate on the model as it is now
    verifier.save(s, ...)                        checks, verdict rows, gate figures and damage rows,
                                                 in the caller's transaction (publish or abandon)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlalchemy.orm import Session

from kbsync.editing.delta import Delta
from kbsync.logs import get_logger
from kbsync.model.probe import answer_matches
from kbsync.model.scoring import greedy_answers
from kbsync.store.models import DamagedFact, EditRequestRow
from kbsync.verification import damage
from kbsync.verification.checks import Check, EditUnderTest, run_checks, save_checks
from kbsync.verification.damage import Harm
from kbsync.verification.gate import GateVerdict, RegressionGate
from kbsync.verification.held_out import held_out_for
from kbsync.verification.neighbours import edits_under_test, key_similarity
from kbsync.verification.verdict import EditVerdict, edit_verdicts, shares
from kbsync.versions.writer import ModelWriter

log = get_logger(__name__)


@dataclass
class Round:
    """One check round of a batch's candidate: its checks and each edit's verdict on them."""

    checks: list[Check]
    verdicts: dict[int, EditVerdict]

    @property
    def failing(self) -> set[int]:
        return {rid for rid, v in self.verdicts.items() if not v.ok}

    @property
    def shares(self) -> dict[str, float]:
        return shares(self.checks)


@dataclass
class BeforeAnswers:
    """Greedy answers on the model before a batch (cached across its check rounds)."""

    log: list[tuple[int, Delta]]
    answers: dict[str, str] = field(default_factory=dict)


class Verifier:
    def __init__(self, writer: ModelWriter) -> None:
        self.writer, self.settings = writer, writer.settings
        self.gate = RegressionGate(writer) if self.settings.gate.enabled else None

    def tests_for(self, s: Session, rows: list[EditRequestRow]) -> list[EditUnderTest]:
        v = self.settings.verify
        ctx = self.writer.context()
        return edits_under_test(s, rows, v.neighbours, key_similarity(ctx), v.at_risk_share, v.at_risk_pool,
                                held_out_for(ctx))

    def prepare(self) -> None:
        if self.gate is not None:
            self.gate.prepare()

    def checks(self, tests: list[EditUnderTest]) -> list[Check]:
        loaded = self.writer.context().loaded
        return run_checks(loaded.model, loaded.tokenizer, tests, self.settings.probe.max_new_tokens)

    def check_edits(self, tests: list[EditUnderTest], before: BeforeAnswers | None = None) -> Round:
        """Every check of every edit on the model as it is now, and each edit's verdict."""
        checks = self.checks(tests)
        if before is not None:
            checks = self._not_moved_by_the_edit(tests, checks, before)
        return Round(checks, self.judge(checks))

    def judge(self, checks: list[Check]) -> dict[int, EditVerdict]:
        return edit_verdicts(checks, self.settings.verify, damage_fails=self.settings.verify.on_damage == "rollback")

    def _not_moved_by_the_edit(self, tests: list[EditUnderTest], checks: list[Check],
                               before: BeforeAnswers) -> list[Check]:
        missed = sorted({c.prompt for c in checks if c.kind == "neighbour_acc" and not c.passed} - set(before.answers))
        if missed:
            store, loaded = self.writer.context().store, self.writer.context().loaded
            now = list(store.active)
            store.materialise(before.log)
            try:
                answers = greedy_answers(loaded.model, loaded.tokenizer, missed, self.settings.probe.max_new_tokens)
            finally:
                store.materialise(now)
            before.answers.update(zip(missed, answers, strict=True))
        acceptable = {n.prompt: list(n.acceptable or (n.answer,)) for t in tests for n in t.neighbours}
        return [replace(c, passed=True, rival=f"{c.rival} (missed it before the edit too)")
                if c.kind == "neighbour_acc" and not c.passed
                and answer_matches(before.answers[c.prompt], acceptable[c.prompt]) is None else c
                for c in checks]

    def gate_check(self, request_ids: list[int]) -> GateVerdict | None:
        return self.gate.check(request_ids) if self.gate is not None else None

    @staticmethod
    def harms(tests: list[EditUnderTest], checks: list[Check], request_ids: set[int]) -> list[Harm]:
        """Neighbours of these edits whose greedy answer the edit moved off their KB value: damage."""
        by_prompt = {n.prompt: n for t in tests for n in t.neighbours if n.subject}
        seen: set[str] = set()
        out = []
        for c in checks:
            if c.kind == "neighbour_acc" and not c.passed and c.request_id in request_ids and c.prompt in by_prompt \
                    and c.prompt not in seen:
                seen.add(c.prompt)
                n = by_prompt[c.prompt]
                out.append(Harm(n.subject, n.relation, "", c.prompt, n.answer, c.rival, "neighbour"))
        return out

    def save(self, s: Session, batch_id: int, checks: list[Check], verdicts: dict[int, EditVerdict],
             version_id: int | None, *, phase: str = "apply", prompts: dict[int, str] | None = None) -> None:
        """The checks and one `verdict` row per edit (which check decided)."""
        save_checks(s, batch_id, checks, phase, version_id)
        rows = [Check(rid, "verdict", (prompts or {}).get(rid, ""), v.decided_by, v.reason, 0.0, 0.0, v.ok)
                for rid, v in sorted(verdicts.items())]
        save_checks(s, batch_id, rows, phase, version_id)

    def save_gate(self, s: Session, batch_id: int, gate: GateVerdict | None, version_id: int | None) -> None:
        if gate is not None and self.gate is not None:
            self.gate.save(s, batch_id, gate, version_id)

    @staticmethod
    def save_damage(s: Session, batch_id: int, harms: list[Harm], version_id: int | None,
                    run_id: str) -> list[DamagedFact]:
        return damage.record(s, batch_id, harms, version_id=version_id, run_id=run_id)


__all__ = ["BeforeAnswers", "Round", "Verifier"]
