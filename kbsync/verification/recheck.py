"""Re-checks of applied edits on a model version (after a rollback or a compaction, and
`kbsync verify`): do the verified edits still hold?

Drift is judged on efficacy: an edit that held at its last check and now loses to its rival
on its own prompt has drifted and is failed. An edit admitted below its own efficacy (its
batch passed as a whole) is not failed again for the same reason.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from kbsync.store.models import EditCheck, EditRequestRow
from kbsync.store.states import RequestState
from kbsync.store.transitions import move_request
from kbsync.verification.checks import Check, run_checks, save_checks
from kbsync.verification.neighbours import edits_under_test, key_similarity
from kbsync.versions import registry
from kbsync.versions.writer import ModelWriter


def drifted(checks: list[Check], held_before: set[int]) -> list[int]:
    """Requests whose efficacy check failed now although it passed at their last check."""
    return sorted({c.request_id for c in checks
                   if c.kind == "efficacy" and not c.passed and c.request_id in held_before})


def recheck(writer: ModelWriter, batch_ids: list[int]) -> tuple[list[Check], dict[int, int]]:
    """Checks of the verified edits of these batches on the live model; request -> batch."""
    with writer.db.session() as s:
        batch_ids = registry.expand_compactions(s, batch_ids)  # a compaction's edits keep their batches
        rows = list(s.scalars(select(EditRequestRow).where(
            EditRequestRow.batch_id.in_(batch_ids), EditRequestRow.state == RequestState.VERIFIED.value)
            .order_by(EditRequestRow.id)))
        v = writer.settings.verify
        tests = edits_under_test(s, rows, v.neighbours, key_similarity(writer.context()), v.at_risk_share,
                                 v.at_risk_pool)
        owner = {r.id: r.batch_id for r in rows if r.batch_id is not None}
    loaded = writer.context().loaded
    return run_checks(loaded.model, loaded.tokenizer, tests, writer.settings.probe.max_new_tokens), owner


def record_rechecks(s: Session, checks: list[Check], owner: dict[int, int], phase: str, version_id: int | None,
                    why: str, run_id: str) -> list[int]:
    """Save the checks; fail the edits that drifted (with `why`); return their ids."""
    held_before = {rid for rid, passed in s.execute(
        select(EditCheck.request_id, EditCheck.passed).where(EditCheck.request_id.in_(list(owner)),
                                                             EditCheck.kind == "efficacy")
        .order_by(EditCheck.id)) if passed} if owner else set()
    failed = drifted(checks, held_before)
    for rid, batch_id in owner.items():
        save_checks(s, batch_id, [c for c in checks if c.request_id == rid], phase, version_id)
    for rid in failed:
        row = s.get(EditRequestRow, rid)
        assert row is not None
        move_request(s, row, RequestState.FAILED, why, run_id=run_id)
    return failed
