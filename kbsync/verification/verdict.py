"""Judging the checks: every edit on its own. A batch is a way to compute edits, not a unit of truth.

An edit is verified only if its own checks pass: for each kind whose threshold in [verify] is
above 0, the share of this edit's checks of that kind that passed reaches the threshold.

    efficacy_acc    its greedy answer names the KB value or an alias     min_efficacy_acc
    paraphrase_acc  ... to its paraphrases                                min_paraphrase_acc
    held_out_acc    ... to its held-out phrasings (never trained on)      min_held_out_acc
    neighbour_acc   its neighbours' greedy answers still name theirs      min_specificity
    efficacy        P(new) > P(stale) on its prompt (teacher-forced)      min_efficacy
    paraphrase      ... on its paraphrases                                min_paraphrase
    neighbour       P(true) > P(new) on its neighbours' prompts           min_specificity

With [verify] on_damage = "rollback" an edit that moved any neighbour's greedy answer fails
("damage"). A kind this edit has no check of (no neighbour available) decides nothing. The
first failing kind, in that order, is the one that decided (`EditVerdict.decided_by`).
A batch's shares (the share of passed checks per kind) are recorded beside it; they decide nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from kbsync.config import VerifySettings
from kbsync.verification.checks import KINDS, Check


def shares(checks: list[Check]) -> dict[str, float]:
    """Share of passed checks per kind; a kind with no checks is absent (nothing measured it)."""
    passed: dict[str, list[bool]] = defaultdict(list)
    for c in checks:
        passed[c.kind].append(c.passed)
    return {kind: sum(passed[kind]) / len(passed[kind]) for kind in KINDS if passed[kind]}


def limits(thresholds: VerifySettings) -> dict[str, float]:
    return {"efficacy_acc": thresholds.min_efficacy_acc, "paraphrase_acc": thresholds.min_paraphrase_acc,
            "held_out_acc": thresholds.min_held_out_acc,
            "neighbour_acc": thresholds.min_specificity, "efficacy": thresholds.min_efficacy,
            "paraphrase": thresholds.min_paraphrase, "neighbour": thresholds.min_specificity}


def summary(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {values[k]:.2f}" for k in KINDS if k in values) or "nothing measured"


@dataclass(frozen=True)
class EditVerdict:
    request_id: int
    ok: bool
    decided_by: str     # the failing kind that decided (see the module docstring), "damage", or "passed"
    reason: str
    below: tuple[str, ...] = ()   # every kind below its threshold


def describe(c: Check) -> str:
    """A failed check in words."""
    if c.kind in ("efficacy_acc", "paraphrase_acc", "held_out_acc"):
        return f"the greedy answer {c.rival.strip()!r} to {c.prompt!r} does not name {c.expected!r}"
    if c.kind == "neighbour_acc":
        return f"the neighbour {c.prompt!r} now answers {c.rival.strip()!r}, not {c.expected!r}"
    return f"P({c.expected!r})={c.logprob_expected:.2f} <= P({c.rival!r})={c.logprob_rival:.2f} on {c.prompt!r}"


def edit_verdicts(checks: list[Check], thresholds: VerifySettings, *, damage_fails: bool = False
                  ) -> dict[int, EditVerdict]:
    """Each edit's verdict on its own checks (see the module docstring)."""
    limit = limits(thresholds)
    mine: dict[int, dict[str, list[Check]]] = defaultdict(lambda: defaultdict(list))
    for c in checks:
        mine[c.request_id][c.kind].append(c)
    out: dict[int, EditVerdict] = {}
    for rid, kinds in mine.items():
        own = {kind: sum(c.passed for c in kinds[kind]) / len(kinds[kind]) for kind in KINDS if kinds.get(kind)}
        below = [kind for kind in KINDS if kind in own and limit[kind] > 0 and own[kind] < limit[kind]]
        moved = [c for c in kinds.get("neighbour_acc", []) if not c.passed]
        if below:
            first = next(c for c in kinds[below[0]] if not c.passed)
            why = ", ".join(f"{k} {own[k]:.2f} < {limit[k]:.2f}" for k in below)
            out[rid] = EditVerdict(rid, False, below[0], f"{why}: {describe(first)}", tuple(below))
        elif damage_fails and moved:
            out[rid] = EditVerdict(rid, False, "damage", f"damage: {describe(moved[0])} ([verify] on_damage = rollback)")
        else:
            out[rid] = EditVerdict(rid, True, "passed", "its own checks passed: " + summary(own))
    return out


NEIGHBOUR_KINDS = frozenset({"neighbour_acc", "neighbour"})


def moved_together(checks: list[Check], verdicts: dict[int, EditVerdict]) -> set[int]:
    """The failing edits whose only failing kinds are neighbour checks, each failed neighbour of which
    failed for another edit of the batch too: a move the batch's edits made together, not shown to
    be this edit's own (one neighbour shared by many edits moved, and every one of them failed).
    Apply retries these in a later batch (at most twice); every other failing edit fails."""
    failed_for: dict[str, set[int]] = defaultdict(set)   # neighbour prompt -> edits whose check of it failed
    mine: dict[int, set[str]] = defaultdict(set)
    for c in checks:
        if c.kind in NEIGHBOUR_KINDS and not c.passed:
            failed_for[c.prompt].add(c.request_id)
            mine[c.request_id].add(c.prompt)
    return {rid for rid, v in verdicts.items()
            if not v.ok and v.below and set(v.below) <= NEIGHBOUR_KINDS and mine[rid]
            and all(failed_for[p] - {rid} for p in mine[rid])}


def with_subjects(failing: set[int], request_ids: Sequence[int], subjects: Sequence[str] | None) -> set[int]:
    """The failing requests and, when the editor merges a subject's edits (one shared target),
    every other request of their subjects: they are dropped and retried together."""
    if subjects is None:
        return set(failing)
    bad = {o for r, o in zip(request_ids, subjects, strict=True) if r in failing}
    return {r for r, o in zip(request_ids, subjects, strict=True) if o in bad}


def split_in_halves(request_ids: list[int], subjects: list[str] | None = None) -> list[list[int]]:
    """Two parts of about half each; with `subjects`, a subject's requests stay in one part (one
    subject alone is split)."""
    half = len(request_ids) // 2
    if subjects is None or len(set(subjects)) < 2:
        return [request_ids[:half], request_ids[half:]]
    groups: dict[str, list[int]] = {}
    for r, o in zip(request_ids, subjects, strict=True):
        groups.setdefault(o, []).append(r)
    first: list[int] = []
    rest = list(groups.values())
    while rest and (not first or len(first) + len(rest[0]) <= half):
        first += rest.pop(0)
    return [first, [r for g in rest for r in g]]


def batch_rule_would_verify(thresholds: VerifySettings, metrics: dict | None) -> int:
    """Edits of one batch that a batch-level rule (every kind's share over the batch's first check
    round reaches its threshold: the whole batch verified) would have marked verified although
    their own checks failed: what per-edit verdicts change. `metrics`: the batch row's."""
    m = metrics or {}
    first = m.get("first_round") or {}
    if not first:
        return 0
    passes = all(first.get(kind, 1.0) >= limit for kind, limit in limits(thresholds).items())
    return int(m.get("dropped_first_round", 0)) if passes else 0
