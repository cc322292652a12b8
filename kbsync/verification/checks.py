"""Per-edit checks (DESIGN.md §4 conventions) and what each edit is checked on; shared by apply,
rollback and verify.

For each edit, against its *rival* (the value the edit replaces, see `choose_rivals`):
- efficacy_acc   the greedy answer to the prompt names the new value (label or alias)   [gated]
- paraphrase_acc the greedy answer to each paraphrase names the new value             [gated]
- efficacy       P(new | prompt) > P(rival | prompt)          (score = mean token log-prob)
- paraphrase     P(new | paraphrase) > P(rival | paraphrase), per paraphrase prompt
- neighbour      P(true | neighbour prompt) > P(new | neighbour prompt), per neighbour fact
A batch passes when each *measured* share reaches its threshold in `[verify]`: a kind with no
checks (no paraphrases, no neighbour available) has no share, is reported as absent and gates
nothing. An edit whose own checks fail (`hard_edits`) is retried alone, the rest without it
(`retry_parts`), so one hard edit never fails a whole batch.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from kbsync.config import VerifySettings
from kbsync.logs import get_logger
from kbsync.model.probe import answer_matches, normalise_answer
from kbsync.model.scoring import greedy_answers, target_logprobs
from kbsync.sources.catalogue import fill
from kbsync.store.models import EditCheck, EditRequestRow, KbFact, Probe
from kbsync.verification.neighbours import Similarity, bounded, split_counts

log = get_logger(__name__)

KINDS = ("efficacy", "efficacy_acc", "paraphrase", "paraphrase_acc", "neighbour")
RIVAL_CANDIDATES = 30      # other KB objects of the relation scored as the rival of a filler answer
NEIGHBOUR_SCAN = 50        # latest probes read per wanted neighbour when falling back to other relations


@dataclass(frozen=True)
class Neighbour:
    prompt: str
    answer: str     # what the model answered right before, and must still prefer
    subject: str = ""
    relation: str = ""
    acceptable: tuple[str, ...] = ()   # labels/aliases of the KB answer (a greedy answer naming one is right)
    at_risk: bool = False              # chosen for its key's closeness to the edited subject's


@dataclass(frozen=True)
class PoolFact:
    """A fact the model answered right at its last probe: a neighbour candidate."""

    subject: str
    relation: str
    label: str
    prompt: str
    answer: str
    acceptable: tuple[str, ...] = ()

    def neighbour(self, at_risk: bool = False) -> Neighbour:
        return Neighbour(self.prompt, self.answer, self.subject, self.relation, self.acceptable or (self.answer,),
                         at_risk)


@dataclass
class EditUnderTest:
    request_id: int
    prompt: str                      # filled with the subject
    target_new: str
    target_old: str                  # the stale value: an ended KB value, else the model's answer
    acceptable: list[str]            # labels/aliases counting as the new target
    paraphrases: list[str] = field(default_factory=list)
    neighbours: list[Neighbour] = field(default_factory=list)
    target_old_source: str = "model"  # kb | model
    candidates: list[str] = field(default_factory=list)  # entity-like rivals when target_old is filler


@dataclass(frozen=True)
class Rival:
    text: str
    source: str   # kb (ended KB value) | model (its previous answer) | candidate (best-scored KB object)


@dataclass(frozen=True)
class Check:
    request_id: int
    kind: str          # one of KINDS
    prompt: str
    expected: str
    rival: str         # the value it must beat (for *_acc: the greedy answer)
    logprob_expected: float
    logprob_rival: float
    passed: bool


# --- the rival an edit is judged against ------------------------------------------------
_FILLER_START = re.compile(r"^(a|an|the same|one of|not|also|known|called|named|that|this|it|which|"
                           r"located|used|based|part of|home to|the (first|second|most|best|only|name|city|country))\b")
_STOPWORDS = frozenset("a an the of in on at to for and or is was be by with as it its this that same "
                       "name one not also which who from".split())
MAX_ENTITY_WORDS = 5


def is_filler(answer: str) -> bool:
    """True for an answer that names nothing ("", "(nothing)", "the same name", "a testament to the
    power of human ingenuity"): empty, long, a generic phrase, or only function words."""
    text = answer.strip().split("\n", 1)[0].strip(" .,;:")
    words = normalise_answer(text).split()
    if not words or text.startswith("(") or len(text.split()) > MAX_ENTITY_WORDS:
        return True
    return bool(_FILLER_START.match(text.casefold())) or all(w in _STOPWORDS for w in words)


def pick_rival(edit: EditUnderTest, scores: dict[str, float]) -> Rival:
    """The stale value the edit must beat: the ended KB value; else the model's previous answer,
    unless that is filler, then the best-scored entity-like candidate (`scores`: candidate ->
    mean log-prob on the edit prompt) that is not the new value itself."""
    if edit.target_old_source == "kb" or not is_filler(edit.target_old):
        return Rival(edit.target_old, edit.target_old_source)
    usable = [c for c in rival_candidates(edit) if c in scores]
    if not usable:
        return Rival(edit.target_old, edit.target_old_source)
    return Rival(max(usable, key=lambda c: (scores[c], c)), "candidate")


def rival_candidates(edit: EditUnderTest) -> list[str]:
    new = edit.acceptable or [edit.target_new]
    return [c for c in edit.candidates if not is_filler(c) and answer_matches(c, new) is None]


def choose_rivals(model, tokenizer, edits: list[EditUnderTest]) -> dict[int, Rival]:  # type: ignore[no-untyped-def]
    """request id -> its rival; candidates of filler answers scored in one batched pass."""
    wanted = [(e, c) for e in edits if e.target_old_source != "kb" and is_filler(e.target_old)
              for c in rival_candidates(e)]
    lps = target_logprobs(model, tokenizer, [e.prompt for e, _ in wanted], [c for _, c in wanted]).tolist() if wanted else []
    scores: dict[int, dict[str, float]] = defaultdict(dict)
    for (e, c), lp in zip(wanted, lps, strict=True):
        scores[e.request_id][c] = lp
    rivals = {e.request_id: pick_rival(e, scores[e.request_id]) for e in edits}
    for e in edits:
        if rivals[e.request_id].source == "candidate":
            log.info("rival_replaced", request=e.request_id, filler=e.target_old, rival=rivals[e.request_id].text)
    return rivals


# --- running and judging the checks -----------------------------------------------------
def run_checks(model, tokenizer, edits: list[EditUnderTest], max_new_tokens: int = 8) -> list[Check]:  # type: ignore[no-untyped-def]
    """All checks of all edits, scored in a few batched passes."""
    rivals = choose_rivals(model, tokenizer, edits)
    pairs: list[tuple[int, str, str, str, str]] = []  # (request, kind, prompt, expected, rival)
    for e in edits:
        rival = rivals[e.request_id].text
        pairs.append((e.request_id, "efficacy", e.prompt, e.target_new, rival))
        pairs += [(e.request_id, "paraphrase", p, e.target_new, rival) for p in e.paraphrases]
        pairs += [(e.request_id, "neighbour", n.prompt, n.answer, e.target_new) for n in e.neighbours]
    scored = sorted({(p[2], t) for p in pairs for t in (p[3], p[4])})  # each (prompt, value) scored once
    lps = target_logprobs(model, tokenizer, [p for p, _ in scored], [t for _, t in scored]).tolist() if scored else []
    lp = dict(zip(scored, lps, strict=True))
    checks = [Check(rid, kind, prompt, exp, riv, lp[prompt, exp], lp[prompt, riv], lp[prompt, exp] > lp[prompt, riv])
              for rid, kind, prompt, exp, riv in pairs]
    greedy = [(e, "efficacy_acc", e.prompt) for e in edits]
    greedy += [(e, "paraphrase_acc", p) for e in edits for p in e.paraphrases]
    answers = greedy_answers(model, tokenizer, [g[2] for g in greedy], max_new_tokens=max_new_tokens) if greedy else []
    for (e, kind, prompt), answer in zip(greedy, answers, strict=True):
        checks.append(Check(e.request_id, kind, prompt, e.target_new, answer, 0.0, 0.0,
                            answer_matches(answer, e.acceptable or [e.target_new]) is not None))
    return checks


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


# --- what each edit is checked on, and where checks are kept ------------------------------
def edits_under_test(s: Session, rows: list[EditRequestRow], n: int, similarity: Similarity | None = None,
                     at_risk_share: float = 0.0, at_risk_pool: int = 200) -> list[EditUnderTest]:
    """What each request is checked on: its prompt, paraphrases, up to `n` neighbour facts and,
    for a filler answer, the relation's other KB objects as rival candidates.

    With `similarity` (`sync.neighbours.KeySimilarity`), a share `at_risk_share` of each edit's
    neighbours are the facts of its relation whose subject keys are closest to its subject's (among
    at most `at_risk_pool` candidates per relation); the rest are a random sample, as without it."""
    in_batch = {r.subject for r in rows}
    pools: dict[str, list[PoolFact]] = {}  # relation -> its neighbour candidates, read once
    candidates: dict[str, list[str]] = {}
    for r in rows:
        if n and r.relation not in pools:
            pools[r.relation] = neighbour_pool(s, r.relation)
            if len([e for e in pools[r.relation] if e.subject not in in_batch]) < n:
                pools[r.relation] += other_relations_pool(s, r.relation, n)
    closeness = at_risk_scores(rows, pools, in_batch, similarity, at_risk_pool) \
        if n and similarity is not None and at_risk_share > 0 else {}
    tests = []
    for r in rows:
        neighbours: list[Neighbour] = []
        if n:
            neighbours = pick_neighbours(pools[r.relation], exclude=in_batch, limit=n, seed=r.id,
                                         scores=closeness.get(r.id), at_risk_share=at_risk_share)
        source = r.target_old_source or "model"
        if source != "kb" and is_filler(r.target_old) and r.relation not in candidates:
            candidates[r.relation] = relation_objects(s, r.relation)
        tests.append(EditUnderTest(
            request_id=r.id, prompt=fill(r.prompt, r.subject_label), target_new=r.target_new,
            target_old=r.target_old, acceptable=list(r.acceptable),
            paraphrases=[fill(p, r.subject_label) for p in r.paraphrases],
            neighbours=neighbours,
            target_old_source=source, candidates=candidates.get(r.relation, []) if source != "kb" else []))
    return tests


def at_risk_scores(rows: list[EditRequestRow], pools: dict[str, list[PoolFact]], in_batch: set[str],
                   similarity: Similarity, limit: int) -> dict[int, dict[str, float]]:
    """request id -> {candidate subject of its relation: key cosine to the edited subject}, from one
    batched pass over the edits and the (bounded) same-relation candidates."""
    same: dict[str, list[PoolFact]] = {}
    for relation, pool in pools.items():
        own = [f for f in pool if f.relation == relation and f.subject not in in_batch and f.label in f.prompt]
        keep = bounded([f.subject for f in own], limit)
        same[relation] = [f for f in own if f.subject in keep]
    flat = [f for relation in sorted(same) for f in same[relation]]
    edits = [r for r in rows if r.relation in same and same[r.relation]]
    sims = similarity([(r.subject_label, fill(r.prompt, r.subject_label)) for r in edits],
                      [(f.label, f.prompt) for f in flat]) if edits else None
    if sims is None:
        return {}
    column = {(f.relation, f.subject): j for j, f in enumerate(flat)}
    return {r.id: {f.subject: float(sims[i, column[r.relation, f.subject]]) for f in same[r.relation]}
            for i, r in enumerate(edits)}


def save_checks(s: Session, batch_id: int, checks: list[Check], phase: str, version_id: int | None) -> None:
    for c in checks:
        s.add(EditCheck(batch_id=batch_id, request_id=c.request_id, phase=phase, kind=c.kind,
                        prompt=c.prompt, expected=c.expected, rival=c.rival, logprob_expected=c.logprob_expected,
                        logprob_rival=c.logprob_rival, passed=c.passed, model_version_id=version_id))


def relation_objects(s: Session, relation: str, limit: int = RIVAL_CANDIDATES) -> list[str]:
    """Labels of the relation's KB objects, most frequent first (rival candidates of a filler answer)."""
    counts: Counter[str] = Counter()
    for f in s.scalars(select(KbFact).where(KbFact.relation == relation)):
        labels = f.labels.get("object_labels", {})
        counts.update(labels[o] for o in f.objects if labels.get(o))
    return [label for label, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


def neighbour_pool(s: Session, relation: str) -> list[PoolFact]:
    """Facts of `relation` the model answered right at its last probe, sorted by subject."""
    latest: dict[str, Probe] = {}
    for p in s.scalars(select(Probe).where(Probe.relation == relation).order_by(Probe.id)):
        latest[p.subject] = p
    facts = {f.subject: f for f in s.scalars(select(KbFact).where(KbFact.relation == relation))}
    return [pool_fact(facts[subj], latest[subj])
            for subj in sorted(subj for subj, p in latest.items() if p.agrees and subj in facts)]


def other_relations_pool(s: Session, relation: str, n: int) -> list[PoolFact]:
    """The fallback when `relation` has too few known facts: other relations' facts the model
    answered right at their latest probe (among the latest probes read)."""
    latest: dict[tuple[str, str], Probe] = {}
    for p in s.scalars(select(Probe).where(Probe.relation != relation).order_by(Probe.id.desc())
                       .limit(NEIGHBOUR_SCAN * max(n, 1))):
        latest.setdefault((p.subject, p.relation), p)
    known = {k: p for k, p in latest.items() if p.agrees}
    if not known:
        return []
    facts = {(f.subject, f.relation): f
             for f in s.scalars(select(KbFact).where(KbFact.subject.in_({k[0] for k in known})))}
    return [pool_fact(facts[k], known[k]) for k in sorted(known) if k in facts]


def pool_fact(f: KbFact, probe: Probe) -> PoolFact:
    return PoolFact(f.subject, f.relation, f.subject_label, probe.prompt, kb_answer(f), tuple(kb_answers(f)))


def kb_answer(f: KbFact) -> str:
    labels = f.labels.get("object_labels", {})
    return next((labels[o] for o in f.objects if o in labels), "")


def kb_answers(f: KbFact) -> list[str]:
    """Labels, then aliases, of the fact's acceptable objects (what a right answer may name)."""
    labels, aliases = f.labels.get("object_labels", {}), f.labels.get("object_aliases", {})
    out: list[str] = []
    for o in f.objects:
        for text in (labels.get(o, ""), *aliases.get(o, ())):
            if text and text not in out:
                out.append(text)
    return out


def pick_neighbours(pool: list[PoolFact], exclude: set[str], limit: int, seed: int,
                    scores: dict[str, float] | None = None, at_risk_share: float = 0.0) -> list[Neighbour]:
    """Up to `limit` neighbours from the pool, outside `exclude`: with `scores` (subject -> key
    closeness), the closest share `at_risk_share` first, then the rest rotated by `seed`."""
    good = [f for f in pool if f.subject not in exclude and f.answer]
    if not good:
        return []
    n_risky, _ = split_counts(limit, at_risk_share) if scores else (0, limit)
    ranked = sorted((f for f in good if f.subject in (scores or {})), key=lambda f: (-(scores or {})[f.subject], f.subject))
    risky = ranked[:n_risky]
    rest = [f for f in good if f not in risky]
    start = seed % len(rest) if rest else 0
    chosen = [f.neighbour(at_risk=True) for f in risky]
    return chosen + [f.neighbour() for f in (rest[start:] + rest[:start])[:limit - len(chosen)]]
