"""An earlier verified edit that the regression gate's retention sample finds no longer named on
the version a batch publishes has drifted: it fails there and then, as `kbsync verify` would fail
it, with the check kept (issue 24: a `verified` row is a promise about the current model)."""

from __future__ import annotations

from sqlalchemy import select

from kbsync.store.models import Batch, EditCheck, EditRequestRow
from kbsync.store.states import RequestState
from kbsync.store.transitions import enqueue, move_request
from kbsync.verification.checks import Check, save_checks
from kbsync.verification.figures import Figures
from kbsync.verification.recheck import record_lost


def verified(s, batch_id: int, subject: str, new: str, named: bool) -> int:  # type: ignore[no-untyped-def]
    row = enqueue(s, EditRequestRow(subject=subject, relation="P36", subject_label=subject, prompt="The capital of {} is",
                                    target_new=new, target_new_id="X" + new, target_old="Old", acceptable=[new],
                                    paraphrases=[], content_hash=subject), "test")
    s.flush()
    for state in (RequestState.CLAIMED, RequestState.APPLIED, RequestState.VERIFIED):
        move_request(s, row, state, "test", batch_id=batch_id)
    save_checks(s, batch_id, [Check(row.id, "efficacy_acc", f"The capital of {subject} is", new,
                                    new if named else "noise", 0.0, 0.0, named)], "apply", None)
    return row.id


def test_an_edit_the_gate_finds_no_longer_named_drifted_and_fails(database) -> None:
    with database.session() as s:
        batch = Batch(model_key="m", algorithm="memit", hparams={}, n_edits=3)
        s.add(batch)
        s.flush()
        held, lost, never = (verified(s, batch.id, "Q1", "Paris", True), verified(s, batch.id, "Q2", "Rome", True),
                             verified(s, batch.id, "Q3", "Oslo", False))   # Q3: verified with min_efficacy_acc 0
        figures = Figures(12.0, retained_ok={str(held): True, str(lost): False, str(never): False},
                          lost_answers={str(lost): " Berlin, the", str(never): " noise"})
        assert record_lost(s, figures, 7, None, "run") == [lost]
    with database.session() as s:
        states = {r.id: (r.state, r.state_reason) for r in s.scalars(select(EditRequestRow))}
        assert states[held][0] == states[never][0] == "verified"
        assert states[lost] == ("failed", "drift: after batch 7 the greedy answer 'Berlin, the' to 'The capital of Q2 "
                                          "is' no longer names 'Rome' (the regression gate's retention sample)")
        last = s.scalars(select(EditCheck).where(EditCheck.request_id == lost).order_by(EditCheck.id.desc())).first()
        assert last is not None and last.kind == "efficacy_acc" and not last.passed and last.phase == "gate"
