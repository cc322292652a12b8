"""The pure logic of verification: shares, the batch gate, per-edit failures, drift, neighbour
picking. No model: checks are built by hand."""

from __future__ import annotations

from kbsync.config import VerifySettings
from kbsync.verification.checks import Check
from kbsync.verification.neighbours import PoolFact, pick_neighbours
from kbsync.verification.recheck import drifted
from kbsync.verification.verdict import failing_requests, judge, shares


def check(rid: int, kind: str, passed: bool) -> Check:
    return Check(rid, kind, "p", "new", "old", -1.0 if passed else -3.0, -2.0, passed)


def test_shares_and_the_gate() -> None:
    checks = [check(1, "efficacy", True), check(2, "efficacy", False), check(1, "paraphrase", True),
              check(2, "paraphrase", True), check(1, "neighbour", False), check(2, "neighbour", True)]
    summary = shares(checks)
    assert summary["efficacy"] == 0.5 and summary["paraphrase"] == 1.0 and summary["neighbour"] == 0.5
    ok, reason = judge(summary, VerifySettings(min_efficacy=0.9, min_paraphrase=0.0, min_specificity=0.0))
    assert not ok and reason == "below thresholds: efficacy 0.50 < 0.90"
    ok, reason = judge(summary, VerifySettings(min_efficacy=0.5, min_paraphrase=0.5, min_specificity=0.5))
    assert ok and reason.startswith("passed: efficacy 0.50")
    assert list(failing_requests(checks)) == [2]
    assert failing_requests(checks)[2] == "P(new)=-3.00 <= P('old')=-2.00 on its prompt"


def test_drift_is_an_efficacy_check_that_held_before_and_fails_now() -> None:
    now = [check(1, "efficacy", False), check(2, "efficacy", False), check(3, "efficacy", True),
           check(4, "paraphrase", False)]
    # 1 held before and fails now: drift. 2 was admitted below its own efficacy: not failed again.
    # 3 still holds. 4 lost a paraphrase only: not drift.
    assert drifted(now, held_before={1, 3, 4}) == [1]
    assert drifted([], held_before={1}) == []


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
