"""apply → verify → commit, rollback, integrity checks: the whole machinery on a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from kbsync.errors import DeltaIntegrityError, LockedError
from kbsync.store import db as store_db
from kbsync.store.locks import held_lock
from kbsync.store.models import (
    Batch,
    EditCheck,
    EditRequestRow,
    Event,
    FactHold,
    ModelVersion,
    RequestTransition,
)
from kbsync.store.transitions import enqueue
from kbsync.sync.apply import apply_pending
from kbsync.sync.drift import verify
from kbsync.sync.from_settings import model_writer
from kbsync.sync.rollback import rollback
from kbsync.versions import registry

FACTS = [
    ("Q142", "France", "Berlin", "Paris"),
    ("Q183", "Germany", "Rome", "Berlin"),
    ("Q38", "Italy", "Paris", "Rome"),
    ("Q55", "Holland", "Tokyo", "Amsterdam"),
]


def seed(db: store_db.Database, facts=FACTS) -> list[int]:
    ids = []
    with db.session() as s:
        for qid, label, new, old in facts:
            row = enqueue(s, EditRequestRow(
                subject=qid, relation="P36", subject_label=label, prompt="The capital of {} is",
                target_new=new, target_new_id=f"X{new}", target_old=old, acceptable=[new],
                paraphrases=["{}'s capital city is"], content_hash=qid), "test")
            ids.append(row.id)
    return ids


def make_writer(settings, db, run_id="r1"):
    state = settings.state.dir
    state.mkdir(parents=True, exist_ok=True)
    return model_writer(settings, db, state, run_id=run_id, worker="test:1")


def test_two_batches_then_rollback_restores_weights_bit_for_bit(tiny_settings, database) -> None:
    seed(database)
    writer = make_writer(tiny_settings, database)
    report = apply_pending(writer, batch_size=2)
    assert [b.state for b in report.batches] == ["verified", "verified"]
    with database.session() as s:
        states = set(s.scalars(select(EditRequestRow.state)))
        versions = list(s.scalars(select(ModelVersion).order_by(ModelVersion.id)))
        batches = list(s.scalars(select(Batch).order_by(Batch.id)))
        assert states == {"verified"}
        assert [v.batch_ids for v in versions] == [[batches[0].id], [batches[0].id, batches[1].id]]
        assert versions[-1].is_current and not versions[0].is_current
        for b in batches:
            assert Path(b.delta_path).is_file() and len(b.delta_sha256) == 64
            assert b.version_after_id is not None and b.metrics["efficacy"] >= 0
            # every stage's time is measured, none derived by subtraction (issue 15 #14: verify_s < 0)
            assert {"targets_s", "delta_s", "verify_s", "total_s"} <= set(b.timings), b.timings
            assert min(b.timings.values()) >= 0 and b.timings["total_s"] >= b.timings["delta_s"] + b.timings["verify_s"] - 0.01
        assert s.scalar(select(EditCheck.id).where(EditCheck.kind == "efficacy")) is not None
        # every request went claimed -> applied -> verified, each step recorded with its reason
        moves = [t.to_state for t in s.scalars(select(RequestTransition).where(RequestTransition.request_id == 1)
                                              .order_by(RequestTransition.id))]
        assert moves == ["pending", "claimed", "applied", "verified"]
    assert writer.context().store.current_target() == Path(versions[-1].path).resolve()

    result = rollback(make_writer(tiny_settings, database, run_id="r2"), batches[1].id)
    assert result.weights_after == versions[0].weights_sha256
    assert result.restores_version == versions[0].id
    with database.session() as s:
        assert {r.state for r in s.scalars(select(EditRequestRow).where(EditRequestRow.batch_id == batches[1].id))} == {"rolled_back"}
        assert {r.state for r in s.scalars(select(EditRequestRow).where(EditRequestRow.batch_id == batches[0].id))} == {"verified"}
        event = s.scalars(select(Event).where(Event.kind == "rollback")).one()
        assert event.details["weights_before"] == versions[1].weights_sha256
        assert event.details["weights_after"] == versions[0].weights_sha256
    # a fresh process materialises the same weights from base ⊕ the remaining delta log
    again = make_writer(tiny_settings, database, run_id="r3")
    registry.load_current(database, again.context().store)
    assert again.context().store.weights_sha256() == versions[0].weights_sha256
    assert verify(again).failed == []


def test_tampered_delta_is_refused(tiny_settings, database) -> None:
    seed(database, FACTS[:2])
    apply_pending(make_writer(tiny_settings, database), batch_size=2)
    with database.session() as s:
        path = Path(s.scalars(select(Batch.delta_path)).one())
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DeltaIntegrityError, match="sha256"):
        make_writer(tiny_settings, database, run_id="r2").open_current()


def test_edits_that_fail_their_own_checks_fail_and_the_model_is_unchanged(make_settings, sqlite_url) -> None:
    settings = make_settings(editing={"v_steps": 1, "v_lr": 1e-6}, verify={"min_efficacy": 1.0})
    store_db.upgrade(sqlite_url)
    database = store_db.open_database(sqlite_url)
    writer = make_writer(settings, database)
    from kbsync.model.scoring import greedy_answers

    lm = writer.context().loaded
    # the model's own answers as target_old: a barely-optimised edit cannot beat them
    answers = greedy_answers(lm.model, lm.tokenizer, [f"The capital of {f[1]} is" for f in FACTS[:2]], 2)
    seed(database, [(q, lab, new, old.strip() or "x") for (q, lab, new, _), old in zip(FACTS[:2], answers, strict=True)])
    before = writer.context().store.weights_sha256()
    report = apply_pending(writer, batch_size=2)
    (batch,) = report.batches   # both dropped in the first round: nothing left to re-solve
    assert batch.state == "failed" and batch.rounds == 1 and batch.n_failed == 2
    assert report.failed == 2 and report.as_dict()["failed"] == 2 and not report.ok
    assert writer.context().store.weights_sha256() == before
    with database.session() as s:
        rows = list(s.scalars(select(EditRequestRow)))
        assert {r.state for r in rows} == {"failed"}
        assert all("this edit: efficacy 0.00 < 1.00: P(" in r.state_reason for r in rows)
        assert s.scalars(select(ModelVersion)).first() is None
        verdicts = list(s.scalars(select(EditCheck).where(EditCheck.kind == "verdict")))
        assert {(v.expected, v.passed) for v in verdicts} == {("efficacy", False)} and len(verdicts) == 2
        held = list(s.scalars(select(FactHold)))
        assert {(h.kind, h.state) for h in held} == {("failed", "active")} and len(held) == 2
        assert all(h.not_before is not None for h in held)   # [editing] retry_backoff_s


def test_second_writer_is_refused_before_the_model_loads_and_names_the_holder(tiny_settings, database) -> None:
    seed(database, FACTS[:1])
    writer = make_writer(tiny_settings, database)
    with held_lock(database, registry.writer_lock_name(writer.model_key), tiny_settings.state.dir / "locks"):
        with pytest.raises(LockedError, match=r"another kbsync process \(pid \d+ on .+ since \d{4}-"):
            apply_pending(writer)
        with pytest.raises(LockedError):
            rollback(writer, 1)
    assert writer._ctx is None  # refused without loading the model


def test_a_failing_edit_is_dropped_and_the_batch_re_solved_and_published_without_it(make_settings,
                                                                                  sqlite_url) -> None:
    """Issue 24: the batch passes on shares (efficacy 0.50 of 2 is no test any more), yet one edit's own
    check cannot pass (its stale value is its new value). That edit is not verified: it is dropped,
    the batch is solved again from the targets already computed, and published without it."""
    settings = make_settings(verify={"min_efficacy": 0.9})
    store_db.upgrade(sqlite_url)
    database = store_db.open_database(sqlite_url)
    writer = make_writer(settings, database)
    from kbsync.model.scoring import greedy_answers

    lm = writer.context().loaded   # the easy edit teaches what the model already says: it passes whatever the solve
    said = greedy_answers(lm.model, lm.tokenizer, ["The capital of Italy is"], 2)[0].strip()
    easy = ("Q38", "Italy", said, "Qzx Vkj")   # against a rival the model never says
    hard = ("Q55", "Holland", "Tokyo", "Tokyo")  # its stale value is its new value: it can never win
    hard_id, easy_id = seed(database, [hard, easy])
    report = apply_pending(writer, batch_size=2)
    (batch,) = report.batches                     # one batch: no retry in halves, no second target optimisation
    assert batch.state == "verified" and batch.rounds == 2 and (batch.n_verified, batch.n_failed) == (1, 1)
    assert batch.held == ["Q38 P36"]
    with database.session() as s:
        easy_row, hard_row = s.get(EditRequestRow, easy_id), s.get(EditRequestRow, hard_id)
        assert easy_row.state == "verified" and easy_row.state_reason.startswith("its own checks passed")
        assert hard_row.state == "failed" and "dropped, the rest re-solved without it" in hard_row.state_reason
        assert "efficacy 0.00 < 0.90: P(" in hard_row.state_reason
        verdicts = {c.request_id: (c.expected, c.passed) for c in s.scalars(select(EditCheck).where(EditCheck.kind == "verdict"))}
        assert verdicts == {easy_id: ("passed", True), hard_id: ("efficacy", False)}
        version = s.scalars(select(ModelVersion).where(ModelVersion.is_current)).one()
        delta = s.get(Batch, version.batch_ids[0])
        assert delta.metrics["verified"] == 1 and delta.metrics["dropped"] == 1
    from kbsync.editing.delta import Delta

    published = Delta.load(Path(delta.delta_path))
    assert published.meta["request_ids"] == f"[{easy_id}]"    # the version holds the kept edit only


@pytest.mark.parametrize("memory", [0.0, 5.0])
def test_edit_memory_hands_the_earlier_batches_keys_to_the_solve(make_settings, monkeypatch, memory: float) -> None:
    import torch

    import kbsync.sync.candidate as apply_module

    seen, made = [], []
    real = apply_module.solve_delta

    def spy(*args, preserved=None, **kwargs):
        seen.append(preserved)
        made.append(real(*args, preserved=preserved, **kwargs))
        return made[-1]

    monkeypatch.setattr(apply_module, "solve_delta", spy)
    settings = make_settings(editing={"edit_memory": memory})
    store_db.upgrade(settings.database_url)
    database = store_db.open_database(settings.database_url)
    seed(database)
    report = apply_pending(make_writer(settings, database), batch_size=2)
    database.dispose()
    assert [b.state for b in report.batches] == ["verified", "verified"]
    if not memory:  # plain MEMIT keeps nothing
        assert seen == [None, None]
        return
    assert seen[0] is not None and seen[0].kkt == {}  # nothing earlier before the first batch
    assert seen[1].n_keys == {1: 2, 2: 2}  # the first batch's two edits, at both layers
    for layer in (1, 2):
        k = made[0].keys[layer].double()
        torch.testing.assert_close(seen[1].kkt[layer], memory * k @ k.T)


def test_a_batch_that_passes_by_shares_publishes_only_the_edits_whose_own_greedy_check_passed(
        make_settings, sqlite_url) -> None:
    """Issue 24: 9 of 10 greedy answers naming their value used to verify all 10 (share 0.90 >= 0.90)."""
    # a learning rate of ~0 leaves the targets where they are: an update of ~nothing, so an edit that
    # teaches what the model already says keeps passing, whatever the other edits do
    settings = make_settings(editing={"v_steps": 1, "v_lr": 1e-12}, verify={"min_efficacy_acc": 0.9})
    store_db.upgrade(sqlite_url)
    database = store_db.open_database(sqlite_url)
    writer = make_writer(settings, database)
    from kbsync.model.scoring import greedy_answers

    lm = writer.context().loaded
    labels = ["France", "Germany", "Italy", "Holland", "Spain", "Japan", "Peru", "Chile", "Mexico", "Egypt"]
    # what the model answers, as verification asks it ([probe] max_new_tokens), first line only
    said = [a.strip().split("\n")[0].strip() or "x" for a in greedy_answers(
        lm.model, lm.tokenizer, [f"The capital of {x} is" for x in labels], settings.probe.max_new_tokens)]
    with database.session() as s:
        for i, (label, answer) in enumerate(zip(labels, said, strict=True)):
            # the last one's KB value is a name no greedy answer of this model gives
            acceptable = ["Zzqx Wvvk"] if i == 9 else [answer]
            enqueue(s, EditRequestRow(subject=f"Q{i}", relation="P36", subject_label=label, prompt="The capital of {} is",
                                      target_new=acceptable[0], target_new_id=f"X{i}", target_old="Qzx Vkj",
                                      acceptable=acceptable, paraphrases=[], content_hash=f"h{i}"), "test")
    report = apply_pending(writer, batch_size=10)
    (batch,) = report.batches
    assert batch.state == "verified" and (batch.n_verified, batch.n_failed) == (9, 1)
    with database.session() as s:
        rows = {r.subject: r for r in s.scalars(select(EditRequestRow))}
        assert rows["Q9"].state == "failed" and "efficacy_acc 0.00 < 0.90" in rows["Q9"].state_reason
        assert {q for q, r in rows.items() if r.state == "verified"} == {f"Q{i}" for i in range(9)}
        # every verified request's own latest greedy check on the published version names its value
        version = s.scalars(select(ModelVersion).where(ModelVersion.is_current)).one()
        for q in (f"Q{i}" for i in range(9)):
            (last,) = s.scalars(select(EditCheck).where(EditCheck.request_id == rows[q].id,
                                                        EditCheck.kind == "efficacy_acc")).all()
            assert last.passed and last.model_version_id == version.id
