"""Per-edit checks (DESIGN.md §4 conventions) and what each edit is checked on; shared by apply,
rollback and verify.

For each edit:
- efficacy       P(new | prompt) > P(old | prompt)             (score = mean token log-prob)
- efficacy_acc   the greedy answer to the prompt matches the new target (reported, not gated)
- paraphrase     P(new | paraphrase) > P(old | paraphrase), per paraphrase prompt
- neighbour      P(true | neighbour prompt) > P(new | neighbour prompt), per neighbour fact
A batch passes when each share reaches its threshold in `[verify]`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from kbsync.config import VerifySettings
from kbsync.model.probe import answer_matches
from kbsync.model.scoring import greedy_answers, target_logprobs
from kbsync.sources.catalogue import fill
from kbsync.store.models import EditCheck, EditRequestRow, KbFact, Probe

GATED = ("efficacy", "paraphrase", "neighbour")


@dataclass(frozen=True)
class Neighbour:
    prompt: str
    answer: str     # what the model answered right before, and must still prefer


@dataclass
class EditUnderTest:
    request_id: int
    prompt: str                      # filled with the subject
    target_new: str
    target_old: str
    acceptable: list[str]            # labels/aliases counting as the new target
    paraphrases: list[str] = field(default_factory=list)
    neighbours: list[Neighbour] = field(default_factory=list)


@dataclass(frozen=True)
class Check:
    request_id: int
    kind: str          # efficacy | efficacy_acc | paraphrase | neighbour
    prompt: str
    expected: str
    rival: str
    logprob_expected: float
    logprob_rival: float
    passed: bool


def run_checks(model, tokenizer, edits: list[EditUnderTest], max_new_tokens: int = 8) -> list[Check]:  # type: ignore[no-untyped-def]
    """All checks of all edits, scored in a few batched passes."""
    pairs: list[tuple[int, str, str, str, str]] = []  # (request, kind, prompt, expected, rival)
    for e in edits:
        pairs.append((e.request_id, "efficacy", e.prompt, e.target_new, e.target_old))
        pairs += [(e.request_id, "paraphrase", p, e.target_new, e.target_old) for p in e.paraphrases]
        pairs += [(e.request_id, "neighbour", n.prompt, n.answer, e.target_new) for n in e.neighbours]
    prompts = [p[2] for p in pairs]
    expected = target_logprobs(model, tokenizer, prompts, [p[3] for p in pairs]).tolist() if pairs else []
    rival = target_logprobs(model, tokenizer, prompts, [p[4] for p in pairs]).tolist() if pairs else []
    checks = [
        Check(rid, kind, prompt, exp, riv, le, lr, le > lr)
        for (rid, kind, prompt, exp, riv), le, lr in zip(pairs, expected, rival, strict=True)
    ]
    answers = greedy_answers(model, tokenizer, [e.prompt for e in edits], max_new_tokens=max_new_tokens) if edits else []
    for e, answer in zip(edits, answers, strict=True):
        checks.append(
            Check(e.request_id, "efficacy_acc", e.prompt, e.target_new, answer, 0.0, 0.0,
                  answer_matches(answer, e.acceptable or [e.target_new]) is not None)
        )
    return checks


def shares(checks: list[Check]) -> dict[str, float]:
    """Share of passed checks per kind (a kind with no checks counts as 1.0)."""
    passed: dict[str, list[bool]] = defaultdict(list)
    for c in checks:
        passed[c.kind].append(c.passed)
    return {kind: (sum(passed[kind]) / len(passed[kind]) if passed[kind] else 1.0)
            for kind in ("efficacy", "efficacy_acc", "paraphrase", "neighbour")}


def judge(summary: dict[str, float], thresholds: VerifySettings) -> tuple[bool, str]:
    """(passed, reason) for a batch against the configured thresholds."""
    limits = {"efficacy": thresholds.min_efficacy, "paraphrase": thresholds.min_paraphrase,
              "neighbour": thresholds.min_specificity}
    below = [f"{kind} {summary[kind]:.2f} < {limits[kind]:.2f}" for kind in GATED if summary[kind] < limits[kind]]
    if below:
        return False, "below thresholds: " + ", ".join(below)
    return True, "passed: " + ", ".join(f"{k} {summary[k]:.2f}" for k in (*GATED, "efficacy_acc"))


def failing_requests(checks: list[Check]) -> dict[int, str]:
    """request id -> why its own efficacy check failed (the edit did not take)."""
    return {c.request_id: f"P(new)={c.logprob_expected:.2f} <= P(old)={c.logprob_rival:.2f} on its prompt"
            for c in checks if c.kind == "efficacy" and not c.passed}


# --- what each edit is checked on, and where checks are kept ------------------------------
def edits_under_test(s: Session, rows: list[EditRequestRow], n: int) -> list[EditUnderTest]:
    """What each request is checked on: its prompt, paraphrases and up to `n` neighbour facts."""
    in_batch = {r.subject for r in rows}
    pools: dict[str, list[tuple[str, str, str]]] = {}  # relation -> its neighbour candidates, read once
    tests = []
    for r in rows:
        if n and r.relation not in pools:
            pools[r.relation] = neighbour_pool(s, r.relation)
        neighbours = pick_neighbours(pools[r.relation], exclude=in_batch, limit=n, seed=r.id) if n else []
        tests.append(EditUnderTest(
            request_id=r.id, prompt=fill(r.prompt, r.subject_label), target_new=r.target_new,
            target_old=r.target_old, acceptable=list(r.acceptable),
            paraphrases=[fill(p, r.subject_label) for p in r.paraphrases],
            neighbours=[Neighbour(fill(r.prompt, label), answer) for label, answer in neighbours]))
    return tests


def save_checks(s: Session, batch_id: int, checks: list[Check], phase: str, version_id: int | None) -> None:
    for c in checks:
        s.add(EditCheck(batch_id=batch_id, request_id=c.request_id, phase=phase, kind=c.kind, prompt=c.prompt,
                        expected=c.expected, rival=c.rival, logprob_expected=c.logprob_expected,
                        logprob_rival=c.logprob_rival, passed=c.passed, model_version_id=version_id))


def neighbour_pool(s: Session, relation: str) -> list[tuple[str, str, str]]:
    """(subject, label, KB answer) of facts of `relation` the model answered right at its last probe,
    sorted by subject."""
    latest: dict[str, Probe] = {}
    for p in s.scalars(select(Probe).where(Probe.relation == relation).order_by(Probe.id)):
        latest[p.subject] = p
    facts = {f.subject: f for f in s.scalars(select(KbFact).where(KbFact.relation == relation))}
    pool = []
    for subj in sorted(subj for subj, p in latest.items() if p.agrees and subj in facts):
        f = facts[subj]
        labels = f.labels.get("object_labels", {})
        pool.append((subj, f.subject_label, next((labels[o] for o in f.objects if o in labels), "")))
    return pool


def pick_neighbours(pool: list[tuple[str, str, str]], exclude: set[str], limit: int,
                    seed: int) -> list[tuple[str, str]]:
    """Up to `limit` (label, answer) from the pool, outside `exclude`, rotated by `seed`."""
    good = [entry for entry in pool if entry[0] not in exclude]
    if not good:
        return []
    start = seed % len(good)
    return [(label, answer) for _, label, answer in (good[start:] + good[:start])[:limit] if answer]
