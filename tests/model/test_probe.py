from __future__ import annotations

import math

import pytest

from kbsync.model.probe import (
    ProbeItem,
    answer_matches,
    first_clause,
    normalise_answer,
    probe,
)
from kbsync.model.scoring import greedy_answers, target_logprobs


@pytest.mark.parametrize("text,expected", [
    ("  The  Paris ", "paris"),
    ("An apple.", "apple"),
    ("Anne", "anne"),
    ("São Paulo!", "sao paulo"),
    ("U.S.A.", "u s a"),
    ("the", "the"),
    ("Côte d'Ivoire", "cote d ivoire"),
])
def test_normalise_answer(text: str, expected: str) -> None:
    assert normalise_answer(text) == expected


@pytest.mark.parametrize("text,expected", [
    (" Paris, France.", "Paris"),
    (" Paris.\n\nThe answer is:", "Paris"),
    ("\nLondon", "London"),
    (" 3.5 metres tall", "3.5 metres tall"),
    (" the U.S, maybe", "the U.S"),
    (" French", "French"),
])
def test_first_clause(text: str, expected: str) -> None:
    assert first_clause(text) == expected


@pytest.mark.parametrize("answer,acceptable,expected", [
    (" Paris, France.", ["Paris"], "Paris"),
    (" the city of Paris", ["Paris"], None),
    (" Parisian cafes", ["Paris"], None),
    (" The Hague is", ["Hague"], "Hague"),
    (" St. Petersburg.", ["Saint Petersburg", "St. Petersburg"], "St. Petersburg"),
    (" Paris Saint-Germain", ["Paris", "Paris Saint-Germain"], "Paris Saint-Germain"),
    (" english", ["English language", "English"], "English"),
    ("\nParis", ["Paris"], "Paris"),
    ("", ["Paris"], None),
    (" Paris", ["", "  "], None),
])
def test_answer_matches(answer: str, acceptable: list[str], expected: str | None) -> None:
    assert answer_matches(answer, acceptable) == expected


def test_probe_agrees_by_text_or_by_score(make_tiny, bpe_tokenizer) -> None:
    model = make_tiny("llama", len(bpe_tokenizer))
    prompts = ["The capital of France is", "Danielle Darrieux is a native speaker of",
               "The Eiffel Tower is located in the city of"]
    raw = greedy_answers(model, bpe_tokenizer, prompts, max_new_tokens=4)
    answers = [first_clause(r) for r in raw]
    assert all(answers)
    items = [
        ProbeItem(prompts[0], ["Paris", answers[0]]),  # the model's own answer is acceptable
        ProbeItem(prompts[1], ["French", "Dutch"]),
        ProbeItem(prompts[2], []),
    ]
    results = probe(model, bpe_tokenizer, items, max_new_tokens=4, batch_size=2)
    assert [r.answer for r in results] == answers

    first = results[0]
    assert first.agrees and first.matched == answers[0]
    assert first.kb_logprob >= first.answer_logprob

    second = results[1]
    kb = target_logprobs(model, bpe_tokenizer, [prompts[1]] * 3, ["French", "Dutch", answers[1]])
    assert math.isclose(second.kb_logprob, max(kb[:2]).item(), abs_tol=1e-4)
    assert math.isclose(second.answer_logprob, kb[2].item(), abs_tol=1e-4)
    by_score = second.kb_logprob >= second.answer_logprob
    assert second.agrees == by_score
    assert second.matched == (["French", "Dutch"][int(kb[1] > kb[0])] if by_score else None)

    third = results[2]
    assert not third.agrees and third.kb_logprob == float("-inf") and third.matched is None


@pytest.mark.slow
def test_bundled_model_probe(bundled) -> None:
    items = [
        ProbeItem("The capital of France is", ["Paris", "City of Light"]),
        ProbeItem("The capital of France is", ["Berlin"]),
        ProbeItem("The Eiffel Tower is located in the city of", ["Paris"]),
        ProbeItem("The mother tongue of Danielle Darrieux is", ["French", "French language"]),
    ]
    results = probe(bundled.model, bundled.tokenizer, items)
    assert [r.agrees for r in results] == [True, False, True, True], results
    assert results[0].answer == "Paris" and results[0].matched == "Paris"
    assert results[1].answer == "Paris" and results[1].kb_logprob < results[1].answer_logprob
