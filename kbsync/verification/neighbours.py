"""What each edit is checked on: its neighbours (facts the model answered right, a share of them
chosen because their subject's key is closest to the edited subject's) and, for a filler
answer, the relation's other KB objects as rival candidates.

MEMIT writes each edit as a value for the edited subject's *key* (the MLP input at the
subject's last token) at every edited layer; a fact whose subject has a key close to the edited
one is read through nearly the same rows of ΔW and moves with it (other glaciers when one
glacier's continent is edited). So a share [verify] at_risk_share of the neighbours that
verification checks are the facts of the edit's relation whose subject keys are closest
(cosine, averaged over the edited layers) to the edited subject's, computed on the model before
the edit; the rest stay a random sample, so damage far from the edit can still be seen.

    edits_under_test(s, rows, n, KeySimilarity(...))   the EditUnderTest of each request
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from kbsync.editing.keys import compute_keys
from kbsync.editing.request import EditRequest
from kbsync.errors import TokenizationError
from kbsync.logs import get_logger
from kbsync.model.adapters import ArchitectureAdapter
from kbsync.sources.catalogue import fill
from kbsync.store.models import EditRequestRow, KbFact, Probe
from kbsync.verification.checks import EditUnderTest, HeldOut, Neighbour, is_filler
from kbsync.verification.known import kb_answer, kb_answers

log = get_logger(__name__)

Labelled = tuple[str, str]   # (subject label, prompt with the label in it)
RIVAL_CANDIDATES = 30      # other KB objects of the relation scored as the rival of a filler answer
NEIGHBOUR_SCAN = 50        # latest probes read per wanted neighbour when falling back to other relations
Similarity = Callable[[list[Labelled], list[Labelled]], torch.Tensor | None]


@dataclass
class KeySimilarity:
    """Cosine similarity of subject keys at the edited layers, on the model as it is now."""

    model: torch.nn.Module
    tokenizer: Any
    adapter: ArchitectureAdapter
    layers: list[int]
    batch_rows: int = 256

    def __call__(self, edits: list[Labelled], candidates: list[Labelled]) -> torch.Tensor | None:
        """(len(edits), len(candidates)) mean cosine over the layers; None when a subject cannot be
        found in its prompt (the caller then falls back to a random choice)."""
        if not edits or not candidates:
            return None
        requests = [EditRequest(prompt=prompt, subject=label, target_new="-") for label, prompt in edits + candidates]
        try:
            keys, _ = compute_keys(self.model, self.tokenizer, self.adapter, requests, ["{}"], self.layers,
                                   self.layers[-1], self.batch_rows)
        except TokenizationError as exc:
            log.warning("at_risk_keys_skipped", reason=str(exc))
            return None
        n = len(edits)
        total = torch.zeros(n, len(candidates))
        for k in keys.values():  # (d_in, n + c)
            unit = torch.nn.functional.normalize(k.T.float().cpu(), dim=1)
            total += unit[:n] @ unit[n:].T
        return total / len(keys)


def key_similarity(ctx: Any) -> KeySimilarity:
    """The similarity of an editing context (`sync.engine.EditingContext`): its model and layers."""
    loaded = ctx.loaded
    return KeySimilarity(loaded.model, loaded.tokenizer, loaded.adapter, list(ctx.hparams.layers),
                         ctx.hparams.batch_rows)


def bounded(subjects: list[str], limit: int) -> set[str]:
    """A fixed sample of at most `limit` subjects (by hash, so the same in every process)."""
    if len(subjects) <= limit:
        return set(subjects)
    return set(sorted(subjects, key=lambda s: hashlib.sha256(s.encode()).hexdigest())[:limit])


def split_counts(limit: int, share: float) -> tuple[int, int]:
    """(at risk, random) neighbours of `limit` for an at-risk share."""
    risky = min(limit, round(limit * share))
    return risky, limit - risky


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


# --- choosing ------------------------------------------------------------------------
def edits_under_test(s: Session, rows: list[EditRequestRow], n: int, similarity: Similarity | None = None,
                     at_risk_share: float = 0.0, at_risk_pool: int = 200,
                     held_out: Callable[[EditRequestRow], list[HeldOut]] | None = None) -> list[EditUnderTest]:
    """What each request is checked on: its prompt, paraphrases, its `held_out` phrasings
    (sync/requests.held_out_for), up to `n` neighbour facts and, for a filler answer, the
    relation's other KB objects as rival candidates.

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
            neighbours=neighbours, held_out=held_out(r) if held_out is not None else [],
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
