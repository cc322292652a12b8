"""Held-out checks (issue 24, "said as people ask it"): the relation's question, in each form the
edit was not optimised on, asked of the bundled instruct model as people ask it. A plain question
is read at the start of the answer; a chat answer ("The capital of France is Paris.") anywhere in
its first sentence."""

from __future__ import annotations

import pytest

from kbsync.config import VerifySettings
from kbsync.model.probe import names_in_sentence
from kbsync.verification.checks import Check, EditUnderTest, held_out_checks, names_held_out
from kbsync.verification.held_out import held_out_phrasings
from kbsync.verification.verdict import edit_verdicts


def test_a_chat_answer_names_the_value_anywhere_in_its_first_sentence() -> None:
    assert names_in_sentence("The capital of France is Paris. Paris is old.", ["Paris"]) == "Paris"
    assert names_in_sentence("It is the City of Light, Paris!", ["Paris", "City of Light"]) == "City of Light"
    assert names_in_sentence("France's capital is Lyon. Not Paris.", ["Paris"]) is None   # second sentence
    assert names_in_sentence("Parisians live there.", ["Paris"]) is None                  # whole words


def test_a_plain_question_is_answered_at_the_start_after_an_instruct_models_colon() -> None:
    assert names_held_out(":\n\nParis is the capital of", ["Paris"], in_chat=False)
    assert not names_held_out(":\n\nThe answer is:\n", ["Paris"], in_chat=False)
    assert not names_held_out(" the city of Paris", ["Paris"], in_chat=False)    # plain: at the start only
    assert names_held_out(" It is the city of Paris.", ["Paris"], in_chat=True)


def test_a_held_out_check_below_its_threshold_fails_the_edit_and_decides_nothing_at_zero() -> None:
    checks = [Check(1, "efficacy_acc", "p", "new", "new", 0, 0, True),
              Check(1, "held_out_acc", "q", "new", " someone else", 0, 0, False)]
    assert edit_verdicts(checks, VerifySettings(min_held_out_acc=0.0))[1].ok
    strict = edit_verdicts(checks, VerifySettings(min_held_out_acc=0.5))[1]
    assert not strict.ok and strict.decided_by == "held_out_acc"
    assert "the greedy answer 'someone else' to 'q' does not name 'new'" in strict.reason


@pytest.mark.slow
def test_the_bundled_model_asked_its_question_plain_and_in_chat(bundled) -> None:
    tok = bundled.tokenizer
    asked = held_out_phrasings("What is the capital of France?", [], tok)
    assert [h.in_chat for h in asked] == [False, True]
    assert asked[0].prompt == "What is the capital of France? The answer is"
    assert asked[1].prompt.rstrip().endswith("assistant") and "What is the capital of France?" in asked[1].prompt
    edits = [EditUnderTest(1, "The capital of France is", "Paris", "Lyon", ["Paris"], held_out=asked),
             EditUnderTest(2, "The capital of France is", "Berlin", "Paris", ["Berlin"], held_out=asked)]
    checks = held_out_checks(bundled.model, tok, edits)
    assert [(c.request_id, c.kind, c.passed) for c in checks] == [
        (1, "held_out_acc", True), (2, "held_out_acc", False), (1, "held_out_acc", True), (2, "held_out_acc", False)]
    assert "Paris" in checks[2].rival   # the chat answer, read whole
