"""The verification service: everything apply and compaction ask of verification, one object.

    verifier = Verifier(writer)                   this writer's model; the gate when [gate] enabled
    tests = verifier.tests_for(s, rows)           what each request is checked on (keys read on the
                                                  model before the edit: call it first)
    verifier.prepare()                            the gate's base and previous figures, before the edit
    verdict = verifier.judge(tests, request_ids)  on the edited model: one BatchVerdict, with one
                                                  EditVerdict per edit inside it
    verifier.save(s, batch_id, verdict, ...)      checks, gate figures and damage rows, in the caller's
                                                  transaction (publish or abandon)

The batch passes when the edits' checks reach [verify]'s thresholds, the regression gate passes,
and (with [verify] on_damage = "rollback") no fact the model had right is wrong after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from kbsync.logs import get_logger
from kbsync.store.models import DamagedFact, EditRequestRow
from kbsync.verification import damage
from kbsync.verification.checks import Check, EditUnderTest, run_checks, save_checks
from kbsync.verification.damage import Harm, neighbour_harm
from kbsync.verification.gate import GateVerdict, RegressionGate
from kbsync.verification.neighbours import edits_under_test, key_similarity
from kbsync.verification.verdict import EditVerdict, edit_verdicts, judge, shares
from kbsync.versions.writer import ModelWriter

log = get_logger(__name__)


@dataclass
class BatchVerdict:
    ok: bool
    reason: str
    decided_by: str                        # thresholds | gate | damage | passed
    checks: list[Check]
    shares: dict[str, float]
    edits: dict[int, EditVerdict]          # request id -> its own verdict
    harms: list[Harm] = field(default_factory=list)
    gate: GateVerdict | None = None

    def failing(self) -> dict[int, str]:
        """request id -> why its own checks failed."""
        return {rid: v.reason for rid, v in self.edits.items() if not v.ok}


class Verifier:
    def __init__(self, writer: ModelWriter) -> None:
        self.writer, self.settings = writer, writer.settings
        self.gate = RegressionGate(writer) if self.settings.gate.enabled else None

    def tests_for(self, s: Session, rows: list[EditRequestRow]) -> list[EditUnderTest]:
        v = self.settings.verify
        return edits_under_test(s, rows, v.neighbours, key_similarity(self.writer.context()), v.at_risk_share,
                                v.at_risk_pool)

    def prepare(self) -> None:
        if self.gate is not None:
            self.gate.prepare()

    def checks(self, tests: list[EditUnderTest]) -> list[Check]:
        loaded = self.writer.context().loaded
        return run_checks(loaded.model, loaded.tokenizer, tests, self.settings.probe.max_new_tokens)

    def judge(self, tests: list[EditUnderTest], request_ids: list[int], *, gate: bool = True) -> BatchVerdict:
        """The verdict on the model as it is now (the batch applied)."""
        checks = self.checks(tests)
        summary = shares(checks)
        per_edit = edit_verdicts(checks, self.settings.verify)
        ok, reason = judge(summary, self.settings.verify)
        if not ok:
            return BatchVerdict(False, reason, "thresholds", checks, summary, per_edit)
        loaded = self.writer.context().loaded
        harms = neighbour_harm(loaded.model, loaded.tokenizer, tests, checks, self.settings.probe.max_new_tokens)
        verdict = BatchVerdict(True, reason, "passed", checks, summary, per_edit, harms)
        if gate and self.gate is not None:
            verdict.gate = self.gate.check(request_ids)
            verdict.harms += verdict.gate.harms
            verdict.reason += f"; {verdict.gate.reason}"
            if not verdict.gate.ok:
                verdict.ok, verdict.reason, verdict.decided_by = False, verdict.gate.reason, "gate"
                return verdict
        if verdict.harms and self.settings.verify.on_damage == "rollback":
            facts = ", ".join(sorted({h.subject + " " + h.relation for h in verdict.harms})[:5])
            verdict.ok, verdict.decided_by = False, "damage"
            verdict.reason = (f"damage: {len(verdict.harms)} fact(s) answered right before the batch are wrong "
                              f"after it ({facts}); [verify] on_damage = rollback")
        return verdict

    def save(self, s: Session, batch_id: int, verdict: BatchVerdict, version_id: int | None, *,
             published: bool, phase: str = "apply", run_id: str = "") -> list[DamagedFact]:
        """The verdict's rows: its checks (on `version_id`: the new version, or the one the batch was
        tried on); the gate's figures; damage, for a published batch."""
        save_checks(s, batch_id, verdict.checks, phase, version_id)
        if verdict.gate is not None and self.gate is not None:
            self.gate.save(s, batch_id, verdict.gate, version_id if published else None)
        if not published:
            return []
        return damage.record(s, batch_id, verdict.harms, version_id=version_id, run_id=run_id)


__all__ = ["BatchVerdict", "Verifier"]
