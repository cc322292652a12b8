"""Issue 13 on a tiny model: at-risk neighbours (closest subject keys) and the regression gate
(a damaging batch is refused and the current version stays)."""

from __future__ import annotations

from datetime import timedelta
from importlib import resources
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from kbsync.config import GateSettings, Settings
from kbsync.editing.covariance import TextFileCorpus
from kbsync.model.loading import load_model
from kbsync.store import db as store_db
from kbsync.store.models import EditRequestRow, GateFigures, KbFact, ModelVersion, Probe
from kbsync.store.status import status
from kbsync.store.transitions import enqueue
from kbsync.sync.apply import apply_pending
from kbsync.sync.from_settings import model_writer
from kbsync.verification.figures import Figures
from kbsync.verification.gate import heldout_texts, judge
from kbsync.verification.neighbours import KeySimilarity, edits_under_test
from kbsync.versions import registry

FACTS = [("Q142", "France", "Berlin", "Paris"), ("Q183", "Germany", "Rome", "Berlin"),
         ("Q38", "Italy", "Paris", "Rome"), ("Q55", "Holland", "Tokyo", "Amsterdam")]


def seed(db: store_db.Database, facts) -> None:  # type: ignore[no-untyped-def]
    with db.session() as s:
        for qid, label, new, old in facts:
            enqueue(s, EditRequestRow(subject=qid, relation="P36", subject_label=label, prompt="The capital of {} is",
                                      target_new=new, target_new_id=f"X{new}", target_old=old, acceptable=[new],
                                      paraphrases=["{}'s capital city is"], content_hash=qid), "test")


def make_writer(settings, db, run_id="r1"):  # type: ignore[no-untyped-def]
    settings.state.dir.mkdir(parents=True, exist_ok=True)
    return model_writer(settings, db, settings.state.dir, run_id=run_id, worker="test:1")

CONTINENT = "{} is on the continent of"
PLACES = [("Q11", "Howard Glacier"), ("Q12", "Mawson Glacier"), ("Q999", "Emmanuel Glacier"),  # Q999: a homonym
          ("Q21", "Paris"), ("Q22", "Berlin"), ("Q23", "Tokyo"), ("Q24", "Madrid"), ("Q25", "Rome"), ("Q26", "Kyoto")]


def test_at_risk_neighbours_are_the_subjects_whose_keys_are_closest(tiny_model_dir: Path, tmp_path: Path,
                                                                    database) -> None:
    loaded = load_model(str(tiny_model_dir), state_dir=tmp_path / "state", device="cpu")
    similarity = KeySimilarity(loaded.model, loaded.tokenizer, loaded.adapter, [1, 2])
    with database.session() as s:
        for qid, label in PLACES:
            s.add(KbFact(subject=qid, relation="P30", subject_label=label, objects=["Q15"],
                         labels={"object_labels": {"Q15": "Antarctica"}}, content_hash=qid))
            s.add(Probe(run_id="r", subject=qid, relation="P30", prompt=CONTINENT.format(label), answer="Antarctica",
                        agrees=True, kb_logprob=-1.0, answer_logprob=-1.0, content_hash=qid))
        row = enqueue(s, EditRequestRow(subject="Q1", relation="P30", subject_label="Emmanuel Glacier",
                                        prompt=CONTINENT, target_new="Africa", target_new_id="Q4",
                                        target_old="Antarctica", acceptable=["Africa"], paraphrases=[],
                                        content_hash="Q1"), "test")
        s.flush()
        (risky,) = edits_under_test(s, [row], 3, similarity, at_risk_share=1.0)
        (mixed,) = edits_under_test(s, [row], 3, similarity, at_risk_share=0.34)
        (random,) = edits_under_test(s, [row], 3)
    # the cosines, computed on their own: the chosen are the three closest
    sims = similarity([("Emmanuel Glacier", CONTINENT.format("Emmanuel Glacier"))],
                      [(label, CONTINENT.format(label)) for _, label in PLACES])
    assert sims is not None
    order = [PLACES[j][0] for j in sims[0].argsort(descending=True).tolist()]
    assert sims[0, 2] == pytest.approx(1.0)                       # the homonym has the very same key
    assert [n.subject for n in risky.neighbours] == order[:3] and all(n.at_risk for n in risky.neighbours)
    assert order[0] == "Q999" and set(order[:3]) == {"Q999", "Q11", "Q12"}  # other glaciers: the same last token
    # a share of 1/3: the closest one, then the random rotation (as without keys) for the rest
    assert [n.at_risk for n in mixed.neighbours] == [True, False, False] and mixed.neighbours[0].subject == "Q999"
    assert not any(n.at_risk for n in random.neighbours)


STRICT = {"texts": 8, "max_perplexity_rise": 0.05, "max_perplexity_rise_base": 0.2, "max_known_drop": 0.05,
          "max_known_drop_base": 0.1, "min_retention": 0.9}


def test_a_damaging_batch_is_refused_by_the_gate_and_the_current_version_stays(make_settings, database) -> None:
    # A learning rate of ~0 leaves the target vectors where they are: an update of ~nothing passes.
    gentle = make_settings(editing={"v_steps": 1, "v_lr": 1e-12}, gate=STRICT)
    seed(database, FACTS[:2])
    first = apply_pending(make_writer(gentle, database), batch_size=2)
    assert [b.state for b in first.batches] == ["verified"], first.batches[0].reason
    assert "gate passed: perplexity" in first.batches[0].reason
    with database.session() as s:
        v1 = registry.current_version(s, first_key(s))
        assert v1 is not None
        v1_id, v1_sha = v1.id, v1.weights_sha256

    # Real target vectors on a random 4-layer model whose key statistics span a few directions (4
    # sentences): the update swamps what the edited layers read and perplexity doubles (at any λ:
    # the keys lie outside C's span). Its own checks pass (tiny thresholds are 0); the gate does not.
    harsh = make_settings(gate=STRICT)
    seed(database, FACTS[2:])
    second = apply_pending(make_writer(harsh, database, run_id="r2"), batch_size=2)
    (outcome,) = second.batches
    assert outcome.state == "failed" and outcome.reason.startswith("regression gate: perplexity")
    assert second.failed == 2
    with database.session() as s:
        current = registry.current_version(s, first_key(s))
        assert current is not None and current.id == v1_id            # not promoted: the version is unchanged
        assert s.scalar(select(ModelVersion.id).order_by(ModelVersion.id.desc())) == v1_id
        failed = list(s.scalars(select(EditRequestRow).where(EditRequestRow.batch_id == outcome.batch_id)))
        assert {r.state for r in failed} == {"failed"} and all("regression gate" in r.state_reason for r in failed)
        rows = {g.scope: g for g in s.scalars(select(GateFigures).order_by(GateFigures.id))}
        refused = s.scalars(select(GateFigures).where(GateFigures.batch_id == outcome.batch_id)).one()
        passed = s.scalars(select(GateFigures).where(GateFigures.model_version_id == v1_id)).one()
        assert rows["base"].perplexity and not refused.passed and refused.model_version_id is None
        assert refused.perplexity > passed.perplexity * 1.05 and passed.perplexity <= rows["base"].perplexity * 1.05
    # a fresh process materialises the same weights: the failed batch left nothing behind
    again = make_writer(gentle, database, run_id="r3")
    registry.load_current(database, again.context().store)
    assert again.context().store.weights_sha256() == v1_sha
    shown = status(database)["gate"]
    assert shown["current"]["model_version_id"] == v1_id and shown["last_refused"]["batch_id"] == outcome.batch_id
    assert shown["base"]["perplexity"] == pytest.approx(rows["base"].perplexity)


def first_key(s) -> str:  # type: ignore[no-untyped-def]
    return s.scalars(select(ModelVersion.model_key)).first()


def held(*flags: bool) -> dict[str, bool]:
    return {str(i): f for i, f in enumerate(flags)}


def test_retention_is_judged_against_the_previous_version_so_a_floor_does_not_lock_the_log() -> None:
    """The lifelong cascade: once earlier batches lost a few edits, an absolute floor refused every
    later batch. Now a batch is refused when it loses edits the previous version still held (more
    than max_retention_drop, or any below min_retention), not for what earlier batches did."""
    bounds = GateSettings(min_retention=0.9, max_retention_drop=0.05)
    base = Figures(10.0)

    def judged(previous: dict[str, bool], now: dict[str, bool]) -> tuple[bool, str]:
        before = Figures(10.0, retained_ok=previous, retention=sum(previous.values()) / len(previous),
                         n_retention=len(previous))
        after = Figures(10.0, retained_ok=now, retention=sum(now.values()) / len(now), n_retention=len(now))
        return judge(after, before, base, set(), bounds)

    below = held(*[True] * 8, False, False)                       # 0.80: two edits lost by earlier batches
    assert judged(below, below) == (True, "gate passed: perplexity 10.00 is +0.0% over the previous 10.00 (max +5%); "
                                    "perplexity 10.00 is +0.0% over the base 10.00 (max +20%); retention 0.80 vs "
                                    "0.80 of the previous on 10 earlier edits (max drop 0.05)")
    ok, reason = judged(below, held(*[True] * 7, False, False, False))  # loses one more below the floor
    assert not ok and "retention 0.70 of 10 earlier edits (min 0.90; `kbsync compact`" in reason
    ok, reason = judged(held(*[True] * 20), held(*[True] * 18, False, False))  # above the floor, drop 0.10 > 0.05
    assert not ok and reason == ("regression gate: retention 0.90 vs 1.00 of the previous on 20 earlier edits "
                                 "(max drop 0.05)")
    assert judged(held(*[True] * 20), held(*[True] * 19, False))[0]          # drop 0.05: within the bound
    # figures of a previous version without per-edit results (ref unknown): the floor holds as it is
    ok, reason = judge(Figures(10.0, retention=0.8, n_retention=10, retained_ok=held(*[True] * 8, False, False)),
                       Figures(10.0), base, set(), bounds)
    assert not ok and "retention 0.80 of 10 earlier edits (min 0.90" in reason


def test_a_model_the_gate_refuses_everything_is_saturated_and_says_so(make_settings, database) -> None:
    """Issue 24: when the gate refuses a run's batches for lack of room, the model is `saturated`
    (status, metrics), the refused facts wait for a change instead of being retried every tick, and
    a batch refused whole first tries its first half from the targets it already computed."""
    from kbsync.daemon.metrics import Metrics
    from kbsync.store import holds

    harsh = make_settings(gate=STRICT, editing={"retry_smaller": True})
    seed(database, FACTS[:2])
    report = apply_pending(make_writer(harsh, database), batch_size=2)
    first, second = report.batches
    assert (first.n_failed, first.n_requeued) == (1, 1)       # its first half refused alone, the other given back
    assert (second.n_failed, second.n_requeued) == (1, 0)
    assert report.failed == 2 and report.saturated.startswith("regression gate: perplexity") and not report.ok
    shown = status(database, gate=harsh.gate)
    assert shown["capacity"]["state"] == "saturated" and shown["capacity"]["reason"] == report.saturated
    room = shown["capacity"]["headroom"]
    assert room["perplexity_ceiling"] == pytest.approx(shown["gate"]["base"]["perplexity"] * 1.2)
    assert room["edits_applied"] == 0 and shown["holds"]["refused"] == 2
    metrics = Metrics()
    metrics.refresh(database, harsh.gate)
    assert metrics.saturated._value.get() == 1 and metrics.holds.labels("refused")._value.get() == 2
    with database.session() as s:
        for qid, *_ in FACTS[:2]:   # the next diff leaves them be: nothing changed that they wait for
            now = holds.now_for(s, first_key_or(s), harsh.hash())
            assert holds.waiting(s, qid, "P36", qid, now) is not None
            assert holds.waiting(s, qid, "P36", qid, holds.Now(now.model_key, now.model_version_id, "new settings",
                                                              now.at + timedelta(days=1))) is None


def first_key_or(s) -> str:  # type: ignore[no-untyped-def]
    from kbsync.store.models import Batch

    return s.scalars(select(Batch.model_key)).first()


@pytest.mark.parametrize(("model", "heldout"), [("builtin:smollm2-135m", "smollm2-heldout"),
                                              ("builtin:gemma3-270m", "smollm2-heldout")])  # its C text's
def test_the_default_gate_reads_the_held_out_text_shipped_beside_a_builtin_models_corpus(model: str,
                                                                                          heldout: str) -> None:
    """[gate] corpus = auto beside [editing] corpus = auto (both defaults) reads builtin:NAME-heldout; it once
    read the unresolved "auto", found no text past the key statistics' and sampled the model instead."""
    no_model = SimpleNamespace(spec=model, model=None, tokenizer=None)  # sampling it would raise
    ctx = SimpleNamespace(settings=Settings(), loaded=no_model, hparams=SimpleNamespace(cov_samples=512))
    shipped = TextFileCorpus(Path(str(resources.files("kbsync").joinpath("data", heldout + ".txt"))))
    assert heldout_texts(ctx, "auto", 4) == list(islice(shipped.texts(), 4))  # type: ignore[arg-type]
