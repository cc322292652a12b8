"""The pure logic of verification: shares, per-edit verdicts, what a re-check judges, neighbour
picking. No model: checks are built by hand."""

from __future__ import annotations

from kbsync.config import VerifySettings
from kbsync.verification.checks import Check
from kbsync.verification.neighbours import PoolFact, pick_neighbours
from kbsync.verification.recheck import holding
from kbsync.verification.verdict import (
    batch_rule_would_verify,
    edit_verdicts,
    moved_together,
    shares,
)


def check(rid: int, kind: str, passed: bool) -> Check:
    return Check(rid, kind, "p", "new", "old", -1.0 if passed else -3.0, -2.0, passed)


def test_shares_are_recorded_per_kind_and_decide_nothing() -> None:
    checks = [check(1, "efficacy", True), check(2, "efficacy", False), check(1, "paraphrase", True),
              check(2, "paraphrase", True), check(1, "neighbour", False), check(2, "neighbour", True)]
    summary = shares(checks)
    assert summary == {"efficacy": 0.5, "paraphrase": 1.0, "neighbour": 0.5}


def test_each_edit_is_judged_on_its_own_checks() -> None:
    checks = [check(1, "efficacy", True), check(2, "efficacy", False), check(1, "paraphrase", True),
              check(2, "paraphrase", True), check(1, "neighbour", True), check(2, "neighbour", True)]
    verdicts = edit_verdicts(checks, VerifySettings(min_efficacy=0.9, min_paraphrase=0.0, min_specificity=0.0))
    assert verdicts[1].ok and verdicts[1].decided_by == "passed"
    assert not verdicts[2].ok and verdicts[2].decided_by == "efficacy"
    assert verdicts[2].reason == "efficacy 0.00 < 0.90: P('new')=-3.00 <= P('old')=-2.00 on 'p'"


def test_recheck_judges_whether_the_edit_itself_holds_not_its_neighbours() -> None:
    now = [check(1, "efficacy_acc", False), check(2, "efficacy_acc", True), check(2, "neighbour_acc", False),
           check(3, "paraphrase_acc", False), check(3, "efficacy_acc", True)]
    v = holding(now, VerifySettings())
    assert not v[1].ok and v[1].decided_by == "efficacy_acc"
    assert v[2].ok                      # a neighbour moved since: not this edit's drift
    assert not v[3].ok and v[3].decided_by == "paraphrase_acc"


def pool_of(*entries: tuple[str, str, str]) -> list[PoolFact]:
    return [PoolFact(subject, "P36", prompt, prompt, answer) for subject, prompt, answer in entries]


def shown(neighbours) -> list[tuple[str, str]]:
    return [(n.prompt, n.answer) for n in neighbours]


def test_neighbours_rotate_and_skip_the_batchs_subjects() -> None:
    pool = pool_of(("Q1", "France", "Paris"), ("Q2", "Spain", "Madrid"), ("Q3", "Italy", "Rome"), ("Q4", "Peru", ""))
    assert shown(pick_neighbours(pool, {"Q2"}, 2, seed=0)) == [("France", "Paris"), ("Italy", "Rome")]
    assert shown(pick_neighbours(pool, {"Q2"}, 2, seed=1)) == [("Italy", "Rome"), ("France", "Paris")]  # Peru: no answer
    assert pick_neighbours(pool, {"Q1", "Q2", "Q3", "Q4"}, 2, seed=0) == []


def test_the_closest_keys_fill_the_at_risk_share_and_the_rest_is_random() -> None:
    pool = pool_of(*[(f"Q{i}", f"S{i}", f"A{i}") for i in range(10)])
    scores = {f"Q{i}": i / 10 for i in range(10)}  # Q9 closest, then Q8, ...
    picked = pick_neighbours(pool, set(), 5, seed=0, scores=scores, at_risk_share=0.6)
    assert [n.subject for n in picked[:3]] == ["Q9", "Q8", "Q7"] and all(n.at_risk for n in picked[:3])
    assert [n.subject for n in picked[3:]] == ["Q0", "Q1"] and not any(n.at_risk for n in picked[3:])
    # a share of 0 (or no scores) is the random choice alone
    assert shown(pick_neighbours(pool, set(), 5, seed=0, scores=scores, at_risk_share=0.0)) == \
        shown(pick_neighbours(pool, set(), 5, seed=0))


def test_the_batch_rule_count_is_the_first_rounds_failing_edits_when_every_share_passed() -> None:
    v = VerifySettings()
    passing = {"efficacy_acc": 0.95, "paraphrase_acc": 1.0, "neighbour_acc": 0.9, "efficacy": 1.0,
               "paraphrase": 1.0, "neighbour": 0.9}
    # 2 of 40 edits failed their own greedy check while the batch's shares passed: a batch rule verifies them
    assert batch_rule_would_verify(v, {"first_round": passing, "dropped_first_round": 2}) == 2
    # a share under its threshold: the batch rule would have failed the whole batch, so it verifies none
    assert batch_rule_would_verify(v, {"first_round": passing | {"efficacy_acc": 0.5}, "dropped_first_round": 20}) == 0
    assert batch_rule_would_verify(v, None) == 0 and batch_rule_would_verify(v, {}) == 0


def neighbour(rid: int, prompt: str, passed: bool) -> Check:
    return Check(rid, "neighbour_acc", prompt, "astronomy", "physics", 0.0, 0.0, passed)


def test_a_neighbour_that_moved_for_several_edits_is_the_batch_s_move_not_one_edit_s() -> None:
    """Edits 1 and 2 share the neighbour H, which moved: neither is shown to have moved it (retried);
    edit 3 moved a neighbour of its own (fails); edit 4 failed its own efficacy too (fails)."""
    checks = [check(r, "efficacy_acc", r != 4) for r in (1, 2, 3, 4)] + [
        neighbour(1, "H", False), neighbour(1, "A", True),
        neighbour(2, "H", False), neighbour(2, "B", True),
        neighbour(3, "C", False), neighbour(3, "D", True),
        neighbour(4, "H", False), neighbour(4, "E", True)]
    verdicts = edit_verdicts(checks, VerifySettings(min_efficacy_acc=0.9, min_paraphrase_acc=0.0, min_efficacy=0.0,
                                                    min_paraphrase=0.0, min_specificity=0.8))
    assert {r for r, v in verdicts.items() if not v.ok} == {1, 2, 3, 4}
    assert verdicts[1].below == ("neighbour_acc",) and verdicts[4].below == ("efficacy_acc", "neighbour_acc")
    assert moved_together(checks, verdicts) == {1, 2}
