"""Re-checks of applied edits on a model version (after a rollback or a compaction, and
`kbsync verify`): do the verified edits still hold?

They are judged as apply judges an edit (verification/verdict.py), on the kinds that say whether
the edit itself holds: its greedy answers to its prompt and paraphrases and their teacher-forced
scores against the stale value. (Its neighbours are asked again and recorded, but what happens
to them after later batches is not this edit's doing.) An edit is verified only if it held on
the version it was published in, so a verified edit whose verdict now fails has drifted: it is
failed, with the check that decided.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from kbsync.config import VerifySettings
from kbsync.prompts import fill
from kbsync.store.log import expand_compactions
from kbsync.store.models import EditCheck, EditRequestRow
from kbsync.store.states import RequestState
from kbsync.store.transitions import move_request
from kbsync.verification.checks import Check, run_checks, save_checks
from kbsync.verification.figures import Figures
from kbsync.verification.held_out import held_out_for
from kbsync.verification.neighbours import edits_under_test, key_similarity
from kbsync.verification.verdict import EditVerdict, edit_verdicts
from kbsync.versions.writer import ModelWriter

HOLDING = ("efficacy_acc", "paraphrase_acc", "held_out_acc", "efficacy", "paraphrase")


def holding(checks: list[Check], thresholds: VerifySettings) -> dict[int, EditVerdict]:
    """Each edit's verdict on whether it holds (its own prompt and paraphrases)."""
    return edit_verdicts([c for c in checks if c.kind in HOLDING], thresholds)


def recheck(writer: ModelWriter, batch_ids: list[int]) -> tuple[list[Check], dict[int, int]]:
    """Checks of the verified edits of these batches on the live model; request -> batch."""
    with writer.db.session() as s:
        batch_ids = expand_compactions(s, batch_ids)  # a compaction's edits keep their batches
        rows = list(s.scalars(select(EditRequestRow).where(
            EditRequestRow.batch_id.in_(batch_ids), EditRequestRow.state == RequestState.VERIFIED.value)
            .order_by(EditRequestRow.id)))
        v = writer.settings.verify
        ctx = writer.context()
        tests = edits_under_test(s, rows, v.neighbours, key_similarity(ctx), v.at_risk_share, v.at_risk_pool,
                                 held_out_for(ctx))
        owner = {r.id: r.batch_id for r in rows if r.batch_id is not None}
    loaded = writer.context().loaded
    return run_checks(loaded.model, loaded.tokenizer, tests, writer.settings.probe.max_new_tokens), owner


def record_rechecks(s: Session, checks: list[Check], owner: dict[int, int], phase: str, version_id: int | None,
                    why: str, run_id: str, thresholds: VerifySettings) -> list[int]:
    """Save the checks and a verdict row per edit; fail the verified edits that no longer hold
    (with `why` and the check that decided); return their ids."""
    verdicts = holding(checks, thresholds)
    failed = []
    for rid, batch_id in sorted(owner.items()):
        mine = [c for c in checks if c.request_id == rid]
        verdict = verdicts.get(rid)
        rows = [Check(rid, "verdict", mine[0].prompt if mine else "", verdict.decided_by, verdict.reason, 0.0, 0.0,
                      verdict.ok)] if verdict is not None else []
        save_checks(s, batch_id, mine + rows, phase, version_id)
        row = s.get(EditRequestRow, rid)
        if verdict is not None and not verdict.ok and row is not None and row.state == RequestState.VERIFIED.value:
            move_request(s, row, RequestState.FAILED, f"{why}: {verdict.reason}", run_id=run_id)
            failed.append(rid)
    return failed


def record_lost(s: Session, figures: Figures, batch_id: int, version_id: int | None, run_id: str) -> list[int]:
    """The regression gate re-asked earlier verified edits on the version batch `batch_id` publishes
    (its retention sample, greedy, on each edit's own prompt: its efficacy_acc check); those whose
    answer named the KB value at their last check and no longer does have drifted and fail, as
    `kbsync verify` fails them, with the check kept. Their ids."""
    failed = []
    for key, ok in sorted(figures.retained_ok.items(), key=lambda kv: int(kv[0])):
        row = s.get(EditRequestRow, int(key))
        if ok or row is None or row.state != RequestState.VERIFIED.value or row.batch_id is None:
            continue
        last = s.scalars(select(EditCheck).where(EditCheck.request_id == row.id, EditCheck.kind == "efficacy_acc")
                         .order_by(EditCheck.id.desc())).first()
        if last is None or not last.passed:   # it never named the value greedily ([verify] min_efficacy_acc 0)
            continue
        answer, prompt = figures.lost_answers.get(key, ""), fill(row.prompt, row.subject_label)
        save_checks(s, row.batch_id, [Check(row.id, "efficacy_acc", prompt, row.target_new, answer, 0.0, 0.0, False)],
                    "gate", version_id)
        move_request(s, row, RequestState.FAILED,
                     f"drift: after batch {batch_id} the greedy answer {answer.strip()!r} to {prompt!r} no longer "
                     f"names {row.target_new!r} (the regression gate's retention sample)", run_id=run_id)
        failed.append(row.id)
    return failed

