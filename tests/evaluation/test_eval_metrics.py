"""Metric functions on hand-made numbers, and `measure` against direct scoring."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kbsync.evaluation.datasets import EvalCase
from kbsync.evaluation.metrics import (
    ge_prompts,
    generation_entropy,
    harmonic_mean,
    measure,
    ngram_entropy,
)


def test_harmonic_mean() -> None:
    assert harmonic_mean([1.0, 0.5, 0.5]) == pytest.approx(0.6)
    assert harmonic_mean([0.8, 0.8, 0.8]) == pytest.approx(0.8)
    assert harmonic_mean([1.0, 0.0, 1.0]) == 0.0
    assert harmonic_mean([]) == 0.0


def test_ngram_entropy_of_known_strings() -> None:
    # "a b a b": bigrams ab x2, ba x1 -> H2 = h(1/3); trigrams aba, bab -> H3 = 1 bit
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    # five distinct words: 4 distinct bigrams (2 bits), 3 distinct trigrams (log2 3)
    assert ngram_entropy("the cat sat on mats") == pytest.approx((2 / 3 * 2 + 4 / 3 * math.log2(3)) / 2)
    assert ngram_entropy("x x x x x x") == 0.0  # one repeated n-gram: no entropy
    assert ngram_entropy("word") == 0.0  # too short for any n-gram
    assert ngram_entropy("Paris, France.") == ngram_entropy("a b c d")  # punctuation marks are tokens
    assert generation_entropy(["a b a b", "x x x x x x"]) == pytest.approx(50 * ngram_entropy("a b a b"))


def _case(i: int, subject: str) -> EvalCase:
    return EvalCase(str(i), f"{subject} is", subject, "new", "old", (), ())


def test_ge_prompts_are_fixed_and_spread_over_the_subjects() -> None:
    cases = [_case(i, f"S{i}") for i in range(20)]
    prompts = ge_prompts(cases, 10)
    assert len(prompts) == 10 and prompts == ge_prompts(cases, 10)
    assert prompts[0].startswith("S0") and "S19" in prompts[-1]
    assert len(ge_prompts(cases[:1], 3)) == 3 and ge_prompts([], 10) == []


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_measure_matches_direct_scoring(tiny, reduced: list[dict]) -> None:
    from kbsync.model.scoring import target_logprobs

    model, tok = tiny
    cases = [EvalCase(str(r["case_id"]), r["prompt"], r["subject"], r["target_new"], r["ground_truth"],
                      (r["rephrase_prompt"], r["prompt"]), ((r["locality_prompt"], r["locality_ground_truth"]),))
             for r in reduced]
    m = measure(model, tok, cases, gen_prompts=ge_prompts(cases, 2), gen_tokens=10)
    new = target_logprobs(model, tok, [c.prompt for c in cases], [c.target_new for c in cases])
    old = target_logprobs(model, tok, [c.prompt for c in cases], [c.target_true for c in cases])
    assert m.wins == (new > old).tolist()
    assert m.es == pytest.approx(float((new > old).float().mean()))
    # PS averages per case over (paraphrase, prompt): each case contributes 0, 0.5 or 1
    assert all(0 <= v <= 1 for v in (m.ps, m.ns, m.score, m.efficacy_acc, m.paraphrase_acc))
    assert m.score == pytest.approx(harmonic_mean([m.es, m.ps, m.ns]))
    assert m.ge is not None and m.ge > 0


def test_measure_when_new_equals_old(tiny) -> None:
    model, tok = tiny
    case = EvalCase("0", "The capital of France is", "France", "Paris", "Paris",
                    ("France's capital is",), (("Google was founded in", "Paris"),))
    m = measure(model, tok, [case])
    assert (m.es, m.ps, m.ns, m.score) == (0.0, 0.0, 0.0, 0.0)  # ties never win
    assert m.ge is None
