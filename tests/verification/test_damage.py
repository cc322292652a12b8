"""Damage on a tiny model, end to end: facts the model answered right before a batch and wrong
after it are recorded against the batch, `diff` flags them instead of queueing them, and the
operator's rollback or `retry --damage` settles them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from kbsync.config import Settings
from kbsync.model.loading import load_model
from kbsync.model.probe import ProbeItem, probe
from kbsync.sources.factory import open_catalogue
from kbsync.store import db as store_db
from kbsync.store.models import Batch, DamagedFact, EditRequestRow, KbFact, ModelVersion, Probe
from kbsync.store.status import status
from kbsync.store.views import audit_rows
from kbsync.sync.apply import apply_pending
from kbsync.sync.from_settings import diff_from_settings, model_writer
from kbsync.sync.retry import retry_damage
from kbsync.sync.rollback import rollback, rollback_damaged
from kbsync.verification import damage

COUNTRIES = [("Q142", "France"), ("Q183", "Germany"), ("Q38", "Italy"), ("Q17", "Japan"), ("Q29", "Spain"),
             ("Q55", "Holland"), ("Q419", "Peru"), ("Q298", "Chile"), ("Q96", "Mexico"), ("Q414", "Argentina")]
TARGET = ("Q1000", "Atlantis", "Poseidonia")   # the one fact the KB says differently: the batch's edit


def turtle(capitals: dict[str, str]) -> str:
    lines = ["@prefix wd: <http://www.wikidata.org/entity/> .", "@prefix wdt: <http://www.wikidata.org/prop/direct/> .",
             "@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> ."]
    for n, (subject, label) in enumerate([*COUNTRIES, TARGET[:2]]):
        lines += [f'wd:{subject} rdfs:label "{label}"@en ; wdt:P36 wd:Q{5000 + n} .',
                  f'wd:Q{5000 + n} rdfs:label "{capitals[subject]}"@en .']
    return "\n".join(lines) + "\n"


@pytest.fixture
def flow(make_settings, tiny_model_dir: Path, tmp_path: Path, sqlite_url: str):  # type: ignore[no-untyped-def]
    """A KB whose capitals are what the tiny model answers (it knows them), but for the target."""
    loaded = load_model(str(tiny_model_dir), state_dir=tmp_path / "probe-state", device="cpu")
    prompts = [f"The capital of {label} is" for _, label in COUNTRIES]
    answers = [r.answer.strip() for r in probe(loaded.model, loaded.tokenizer,
                                               [ProbeItem(p, []) for p in prompts], max_new_tokens=3)]
    capitals = {subject: answer for (subject, _), answer in zip(COUNTRIES, answers, strict=True) if answer}
    assert len(capitals) >= 6, answers
    capitals[TARGET[0]] = TARGET[2]
    kb = tmp_path / "kb.ttl"
    kb.write_text(turtle(capitals), encoding="utf-8")
    settings = make_settings(
        kb={"source": "rdf", "mode": "truthy", "files": [str(kb)]}, relations={"enabled": ["P36"]},
        probe={"max_new_tokens": 3, "sample_unchanged": 0},
        verify={"neighbours": 3, "at_risk_share": 1.0})
    settings.state.dir.mkdir(parents=True, exist_ok=True)
    store_db.upgrade(sqlite_url)
    db = store_db.open_database(sqlite_url)
    yield settings, db, {s for s in capitals if s != TARGET[0]}
    db.dispose()


def diff(settings: Settings, db, run_id: str, dry_run: bool = False):  # type: ignore[no-untyped-def]
    return diff_from_settings(settings, db, settings.state.dir, run_id=run_id, full=True, dry_run=dry_run)


def test_damage_is_recorded_flagged_and_not_queued_until_the_operator_decides(flow) -> None:  # type: ignore[no-untyped-def]
    settings, db, known = flow
    first = diff(settings, db, "d1")
    right_before = {r.subject for r in first.rows if r.action == "agrees"}
    assert {r.subject for r in first.rows if r.action == "queued"} == {TARGET[0]} and right_before == known

    report = apply_pending(model_writer(settings, db, settings.state.dir, run_id="a1", worker="t:1"))
    (batch,) = report.batches
    assert batch.state == "verified"
    with db.session() as s:
        at_apply = {d.subject: d.found_by for d in s.scalars(select(DamagedFact))}
    assert batch.damaged == len(at_apply) and set(at_apply.values()) <= {"neighbour", "gate"}

    dry = diff(settings, db, "d2", dry_run=True)                        # what `kbsync diff --full --dry-run` shows
    wrong_now = {r.subject for r in dry.rows if r.action != "agrees"} & right_before
    assert wrong_now, "the update moved no known fact: the test shows nothing"
    assert {r.subject for r in dry.rows if r.action == "damaged"} == wrong_now
    assert {r.damaged_by for r in dry.rows if r.action == "damaged"} == {batch.batch_id}
    assert not any(r.action == "would_queue" for r in dry.rows if r.subject in right_before)

    second = diff(settings, db, "d2")
    assert {r.subject for r in second.rows if r.action == "damaged"} == wrong_now and second.damaged == len(wrong_now)
    assert not {r.subject for r in second.rows if r.action in ("queued", "superseded")} & right_before
    with db.session() as s:
        open_rows = damage.open_damage(s, batch.batch_id)
        # the gate judges known facts by their greedy answer; diff also counts a fact right when its KB value
        # out-scores the answer, so gate damage that diff sees answered right is resolved by that diff
        assert wrong_now <= {d.subject for d in open_rows} <= wrong_now | set(at_apply)
        assert not s.scalars(select(EditRequestRow).where(EditRequestRow.subject.in_(wrong_now))).first()
    assert status(db)["damage"]["flagged_batches"] == {str(batch.batch_id): len(open_rows)}
    kind, _, rows = audit_rows(db, batch=batch.batch_id, damage=True)
    assert kind == "damage" and {r["subject"] for r in rows if r["state"] == "open"} == {d.subject for d in open_rows}

    # the operator re-edits: one request per damaged fact, to its KB value
    retried = retry_damage(db, batch.batch_id, open_catalogue(settings), run_id="r1")
    with db.session() as s:
        queued = {r.subject: r for r in s.scalars(select(EditRequestRow).where(EditRequestRow.id.in_(retried.requeued)))}
        assert set(queued) == {d.subject for d in open_rows}
        assert all(r.state == "pending" and r.target_new == KbFact_label(s, r.subject) for r in queued.values())
        assert {d.state for d in s.scalars(select(DamagedFact))} <= {"requeued", "resolved"}
    assert status(db)["damage"]["flagged_batches"] == {}

    # ... or rolls the batch back: the model answers as before, the pending re-edits are withdrawn
    rollback(model_writer(settings, db, settings.state.dir, run_id="rb", worker="t:1"), batch.batch_id)
    third = diff(settings, db, "d3")
    assert {r.subject for r in third.rows if r.action == "agrees"} == right_before and third.damaged == 0
    with db.session() as s:
        assert {r.state for r in s.scalars(select(EditRequestRow).where(EditRequestRow.id.in_(retried.requeued)))} \
            == {"superseded"}
        assert "rolled_back" in {d.state for d in s.scalars(select(DamagedFact))} <= {"rolled_back", "resolved"}


def KbFact_label(s, subject: str) -> str:  # type: ignore[no-untyped-def]
    fact = s.scalars(select(KbFact).where(KbFact.subject == subject)).one()
    return next(iter(fact.labels["object_labels"].values()))


def test_blame_needs_an_earlier_agreeing_probe_of_the_same_kb_content_and_a_later_live_batch(
        sqlite_url: str) -> None:
    store_db.upgrade(sqlite_url)
    db = store_db.open_database(sqlite_url)
    with db.session() as s:
        for subject, agrees, content in (("Q1", True, "h1"), ("Q2", False, "h2"), ("Q3", True, "old")):
            s.add(Probe(run_id="d1", subject=subject, relation="P36", prompt="p", answer="a", agrees=agrees,
                        kb_logprob=0.0, answer_logprob=0.0, content_hash=content))
        s.flush()
        b1 = Batch(model_key="m", algorithm="memit", hparams={}, n_edits=1, state="verified")
        s.add(b1)
        s.flush()
        b1.finished_at = s.scalars(select(Probe.probed_at)).first() + __import__("datetime").timedelta(seconds=1)
        s.add(ModelVersion(model_key="m", batch_ids=[b1.id], weights_sha256="x", is_current=True))
        s.flush()
        facts = [("Q1", "P36", "h1"), ("Q2", "P36", "h2"), ("Q3", "P36", "new"), ("Q4", "P36", "h4")]
        # Q1: right before, same KB content, a batch since: damage. Q2: was wrong already. Q3: the KB
        # changed (a real disagreement). Q4: never probed.
        assert damage.blame(s, "m", facts) == {("Q1", "P36"): b1.id}
        assert damage.blame(s, "another model", facts) == {}
    db.dispose()


def test_on_damage_rollback_undoes_flagged_batches_and_fails_damaging_ones(flow) -> None:  # type: ignore[no-untyped-def]
    settings, db, _ = flow
    diff(settings, db, "d1")
    (batch,) = apply_pending(model_writer(settings, db, settings.state.dir, run_id="a1", worker="t:1")).batches
    diff(settings, db, "d2")                                         # flags the batch: damage, not queued
    with db.session() as s:   # apply's damage the diff still sees (the rest it resolved: see the first test)
        still_open = len(damage.open_damage(s, batch.batch_id))
    assert status(db)["damage"]["flagged_batches"] == {str(batch.batch_id): still_open} and still_open
    settings.verify.on_damage = "rollback"
    # the undo_damage step rolls the flagged batch back before apply; the target, queued again by that diff (its
    # edit did not take on a random model), is applied under the policy: it damages, so it fails
    writer = model_writer(settings, db, settings.state.dir, run_id="a2", worker="t:1")
    assert [r.batch_id for r in rollback_damaged(writer)] == [batch.batch_id]   # the tick's step before apply
    report = apply_pending(writer)
    (again,) = report.batches
    assert again.state == "failed" and again.reason.startswith("damage: ") and "on_damage = rollback" in again.reason
    with db.session() as s:
        assert {d.state for d in s.scalars(select(DamagedFact))} <= {"rolled_back", "resolved"}
        assert s.get(Batch, batch.batch_id).state == "rolled_back"
        assert not s.scalars(select(DamagedFact).where(DamagedFact.batch_id == again.batch_id)).first()
    assert status(db)["current_model_version"]["batch_ids"] == []


def test_on_damage_requeue_queues_the_damaged_facts_as_re_edits(flow) -> None:  # type: ignore[no-untyped-def]
    settings, db, _ = flow
    diff(settings, db, "d1")
    (batch,) = apply_pending(model_writer(settings, db, settings.state.dir, run_id="a1", worker="t:1")).batches
    settings.verify.on_damage = "requeue"
    second = diff(settings, db, "d2")
    damaged = [r for r in second.rows if r.damaged_by == batch.batch_id]
    assert damaged and {r.action for r in damaged} == {"queued"}
    with db.session() as s:
        rows = list(s.scalars(select(DamagedFact)))
        requeued = [d for d in rows if d.state == "requeued"]
        assert {d.state for d in rows} <= {"requeued", "resolved"} and {d.subject for d in requeued} == {r.subject for r in damaged}
        assert {d.request_id for d in requeued} == {r.request_id for r in damaged}
