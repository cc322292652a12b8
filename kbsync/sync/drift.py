"""`kbsync verify` and the re-checks rollback runs: do applied edits still hold on the model?

Drift is judged on efficacy: an edit that held at its last check and now loses to its rival
on its own prompt has drifted and is failed. An edit admitted below its own efficacy (its
batch passed as a whole) is not failed again for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from kbsync.errors import RollbackError
from kbsync.store.events import record_event
from kbsync.store.models import EditCheck, EditRequestRow
from kbsync.store.states import RequestState
from kbsync.store.transitions import move_request
from kbsync.verification.checks import Check, edits_under_test, run_checks, save_checks
from kbsync.verification.neighbours import key_similarity
from kbsync.versions import registry
from kbsync.versions.writer import ModelWriter


@dataclass
class VerifyReport:
    checked: int
    still_hold: int
    failed: list[int]


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


def verify(writer: ModelWriter, batch_id: int | None = None, *, lock_wait_s: float = 0.0) -> VerifyReport:
    """Re-run the checks of verified edits (one batch or all) on the current model; drift fails them."""
    with writer.locked(lock_wait_s):
        with writer.db.session() as s:
            current = registry.current_version(s, writer.model_key)
            ids = list(current.batch_ids) if current else []
            live = set(ids) | set(registry.expand_compactions(s, ids))
        if batch_id is not None:
            if batch_id not in live:
                raise RollbackError(f"batch {batch_id} is not part of the current model; see `kbsync audit`")
            ids = [batch_id]
        checks: list[Check] = []
        owner: dict[int, int] = {}
        if ids:                       # the base model has nothing to check: no model to load
            writer.open_current()
            checks, owner = recheck(writer, ids)
        with writer.db.session() as s:
            failed = record_rechecks(s, checks, owner, "verify", writer.version_id,
                                     "drift: the edit no longer wins on its prompt", writer.run_id)
            record_event(s, "verify", run_id=writer.run_id, config_hash=writer.config_hash, batches=ids,
                         checked=len(owner), failed=failed, ok=not failed)
    return VerifyReport(len(owner), len(owner) - len(failed), failed)
