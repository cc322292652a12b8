"""Judging the checks: per edit and per batch.

    shares(checks)                 share of passed checks per kind, over the batch
    judge(shares, thresholds)      the batch against [verify]'s thresholds (kinds measured only)
    hard_edits(checks, thresholds) request -> why its own checks fail
    retry_parts(...)               how to retry a failed batch: the rest without its hard edits, each
                                   hard edit alone (a subject's edits kept together), else halves
"""

from __future__ import annotations

from collections import defaultdict
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
            "efficacy": thresholds.min_efficacy, "paraphrase": thresholds.min_paraphrase,
            "neighbour": thresholds.min_specificity}


def judge(summary: dict[str, float], thresholds: VerifySettings) -> tuple[bool, str]:
    """(passed, reason) for a batch against the configured thresholds; unmeasured kinds gate nothing."""
    limit = limits(thresholds)
    below = [f"{kind} {summary[kind]:.2f} < {limit[kind]:.2f}" for kind in KINDS
             if kind in summary and summary[kind] < limit[kind]]
    if below:
        return False, "below thresholds: " + ", ".join(below)
    shown = [f"{k} {summary[k]:.2f}" if k in summary else f"{k} not measured" for k in KINDS]
    return True, "passed: " + ", ".join(shown)


def failing_requests(checks: list[Check], thresholds: VerifySettings | None = None) -> dict[int, str]:
    """request id -> why its own edit did not take (greedy answer or P(new) vs P(rival) on its prompt);
    with `thresholds`, only the kinds they gate (a limit above 0) count."""
    gated = {k for k, v in limits(thresholds).items() if v > 0} if thresholds else set(KINDS)
    why: dict[int, list[str]] = defaultdict(list)
    for c in checks:
        if c.kind not in gated:
            continue
        if c.kind == "efficacy_acc" and not c.passed:
            why[c.request_id].append(f"the greedy answer {c.rival.strip()!r} does not name {c.expected!r}")
        elif c.kind == "efficacy" and not c.passed:
            why[c.request_id].append(f"P(new)={c.logprob_expected:.2f} <= P({c.rival!r})={c.logprob_rival:.2f} "
                                     "on its prompt")
    return {rid: "; ".join(reasons) for rid, reasons in why.items()}


def hard_edits(checks: list[Check], thresholds: VerifySettings) -> dict[int, str]:
    """request id -> why its own checks fail: its edit did not take, or it moved its neighbours'
    answers (share below min_specificity). Paraphrase shares are a batch's, not one edit's."""
    hard = failing_requests(checks, thresholds)
    neighbours: dict[int, list[bool]] = defaultdict(list)
    for c in checks:
        if c.kind == "neighbour":
            neighbours[c.request_id].append(c.passed)
    for rid, kept in neighbours.items():
        share = sum(kept) / len(kept)
        if share < thresholds.min_specificity:
            hard[rid] = "; ".join(filter(None, [hard.get(rid), f"neighbour {share:.2f} < {thresholds.min_specificity:.2f}"]))
    return hard


def retry_parts(checks: list[Check], request_ids: list[int], thresholds: VerifySettings,
                halves: bool, subjects: list[str] | None = None) -> list[list[int]]:
    """How to retry a failed batch: [the rest, [hard edit], ...] when some (not all) edits fail their
    own checks, so the rest is solved once more without them and each hard edit alone; else two
    halves when `halves`; else [] (fail the batch). With `subjects` (request_ids[i]'s subject; the
    editor merges a subject's edits) a hard edit goes with its subject's other edits, and halves
    split between subjects, so that no part edits a subject another part edits too."""
    if len(request_ids) < 2:
        return []
    owner = subjects if subjects is not None else [str(r) for r in request_ids]
    hard = hard_edits(checks, thresholds)
    hard_owners = list(dict.fromkeys(o for r, o in zip(request_ids, owner, strict=True) if r in hard))
    if hard and len(hard_owners) < len(set(owner)):
        parts = [[r for r, o in zip(request_ids, owner, strict=True) if o not in hard_owners]]
        return parts + [[r for r, o in zip(request_ids, owner, strict=True) if o == h] for h in hard_owners]
    if halves:
        return split_in_halves(request_ids, subjects)
    return []


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


@dataclass(frozen=True)
class EditVerdict:
    request_id: int
    ok: bool
    decided_by: str     # the first check kind (in KINDS order) below its threshold, or "passed"
    reason: str


def edit_verdicts(checks: list[Check], thresholds: VerifySettings) -> dict[int, EditVerdict]:
    """Each edit judged on its own checks: for every kind with a threshold above 0, the share of
    this edit's checks of that kind that passed (one efficacy prompt; its paraphrases; its
    neighbours) reaches the threshold. A kind with no check for this edit gates nothing."""
    limit = limits(thresholds)
    mine: dict[int, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for c in checks:
        mine[c.request_id][c.kind].append(c.passed)
    out: dict[int, EditVerdict] = {}
    for rid, kinds in mine.items():
        below = [(kind, sum(kinds[kind]) / len(kinds[kind])) for kind in KINDS
                 if limit[kind] > 0 and kinds.get(kind) and sum(kinds[kind]) / len(kinds[kind]) < limit[kind]]
        if below:
            out[rid] = EditVerdict(rid, False, below[0][0],
                                   ", ".join(f"{k} {v:.2f} < {limit[k]:.2f}" for k, v in below))
        else:
            out[rid] = EditVerdict(rid, True, "passed", "its own checks passed")
    return out
