"""Damage: a fact the model answered right before a batch and wrong after it.

It is found three ways, each recorded against the batch (`damaged_facts`, the view
v_batch_damage, `kbsync status`, the daemon's metrics):
- neighbour  a neighbour check of the batch failed and the greedy answer no longer names the KB value;
- gate       a known fact of the regression gate (sync/gate.py) right before the batch, wrong after;
- diff       a probed fact whose last probe agreed (same KB content) now disagrees, and a batch
             applied since that probe is live: the latest such batch is blamed (`blame`).
A damaged fact is not a new KB disagreement: while its batch is live `kbsync diff` does not
queue it, the batch is flagged, and the operator (`kbsync rollback BATCH`, `kbsync retry
--damage BATCH`) or [verify] on_damage (rollback | requeue) decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kbsync.sources.catalogue import Catalogue
from kbsync.store.models import Batch, DamagedFact, EditRequestRow, KbFact, Probe, as_utc, utcnow
from kbsync.store.queue import enqueue_edit
from kbsync.store.states import RequestState
from kbsync.store.transitions import move_request
from kbsync.versions import registry

if TYPE_CHECKING:  # the model stack is imported where a model is used, so `kbsync retry` stays light
    from kbsync.verification.checks import Check, EditUnderTest

FactKey = tuple[str, str]  # (subject, relation)


@dataclass(frozen=True)
class Harm:
    """One damaged fact, before it is recorded."""

    subject: str
    relation: str
    subject_label: str
    prompt: str
    expected: str     # the KB answer the model gave before
    answer: str       # what it answers now
    found_by: str     # neighbour | gate | diff


def neighbour_harm(model, tokenizer, tests: list[EditUnderTest], checks: list[Check],  # type: ignore[no-untyped-def]
                   max_new_tokens: int = 8) -> list[Harm]:
    """Neighbours whose check failed and that the model no longer agrees on, as `diff` judges it
    (they agreed at their last probe: that is how they became neighbours)."""
    from kbsync.model.probe import ProbeItem, probe

    failed = {c.prompt for c in checks if c.kind == "neighbour" and not c.passed}
    suspects = {n.prompt: n for t in tests for n in t.neighbours if n.prompt in failed and n.subject}
    if not suspects:
        return []
    prompts = sorted(suspects)
    results = probe(model, tokenizer, [ProbeItem(p, list(suspects[p].acceptable or (suspects[p].answer,)))
                                       for p in prompts], max_new_tokens=max_new_tokens)
    return [Harm(n.subject, n.relation, "", p, n.answer, r.answer, "neighbour")
            for p, r in zip(prompts, results, strict=True) if not r.agrees and (n := suspects[p])]


def record(s: Session, batch_id: int, harms: Iterable[Harm], *, version_id: int | None, run_id: str,
           state: str = "open") -> list[DamagedFact]:
    """Damage rows of `batch_id` (one per fact: a fact already recorded against it is skipped)."""
    seen = {(subject, relation) for subject, relation in s.execute(
        select(DamagedFact.subject, DamagedFact.relation).where(DamagedFact.batch_id == batch_id))}
    labels: dict[FactKey, str] = {}
    rows = []
    for h in harms:
        if (h.subject, h.relation) in seen:
            continue
        seen.add((h.subject, h.relation))
        if not h.subject_label and (h.subject, h.relation) not in labels:
            labels[h.subject, h.relation] = s.scalar(select(KbFact.subject_label).where(
                KbFact.subject == h.subject, KbFact.relation == h.relation)) or ""
        row = DamagedFact(batch_id=batch_id, subject=h.subject, relation=h.relation,
                          subject_label=h.subject_label or labels[h.subject, h.relation], prompt=h.prompt,
                          expected=h.expected, answer=h.answer, found_by=h.found_by, state=state,
                          model_version_id=version_id, run_id=run_id)
        s.add(row)
        rows.append(row)
    s.flush()
    return rows


def requeued(s: Session, batch_id: int, harm: Harm, request_id: int, run_id: str) -> None:
    """[verify] on_damage = "requeue": the damage (recorded now, or open from apply) has a re-edit."""
    rows = record(s, batch_id, [harm], version_id=None, run_id=run_id) or list(s.scalars(select(DamagedFact).where(
        DamagedFact.batch_id == batch_id, DamagedFact.subject == harm.subject, DamagedFact.relation == harm.relation,
        DamagedFact.state == "open")))
    for row in rows:
        row.state, row.request_id, row.resolved_at = "requeued", request_id, utcnow()


def live_batches(s: Session, model_key: str) -> list[int]:
    current = registry.current_version(s, model_key)
    return list(current.batch_ids) if current else []


def blame(s: Session, model_key: str, facts: Sequence[tuple[str, str, str]]) -> dict[FactKey, int]:
    """(subject, relation) -> the live batch that damaged it, for facts (subject, relation, content
    hash) the model now gets wrong: a batch with open damage of the fact, else the latest live batch
    applied after the fact's last probe, when that probe agreed on the same KB content."""
    live = live_batches(s, model_key)
    if not live or not facts:
        return {}
    keys = {(f[0], f[1]) for f in facts}
    out: dict[FactKey, int] = {}
    for subject, relation, batch_id in s.execute(
            select(DamagedFact.subject, DamagedFact.relation, DamagedFact.batch_id)
            .where(DamagedFact.state == "open", DamagedFact.batch_id.in_(live))):
        if (subject, relation) in keys:
            out[subject, relation] = batch_id
    finished = [(b, as_utc(at)) for b, at in s.execute(select(Batch.id, Batch.finished_at).where(Batch.id.in_(live)))
                if at is not None]
    subjects = {f[0] for f in facts}
    last = (select(func.max(Probe.id)).where(Probe.subject.in_(subjects))
            .group_by(Probe.subject, Probe.relation))
    probes = {(p.subject, p.relation): p for p in s.scalars(select(Probe).where(Probe.id.in_(last)))}
    for subject, relation, content_hash in facts:
        p = probes.get((subject, relation))
        if (subject, relation) in out or p is None or not p.agrees or p.content_hash != content_hash:
            continue
        after = [b for b, at in finished if at is not None and at > _utc(p.probed_at)]
        if after:
            out[subject, relation] = max(after, key=live.index)
    return out


def _utc(moment: datetime) -> datetime:
    value = as_utc(moment)
    assert value is not None
    return value


def resolve(s: Session, subject: str, relation: str) -> int:
    """The model answers the fact right again: its open damage is resolved."""
    rows = list(s.scalars(select(DamagedFact).where(DamagedFact.subject == subject, DamagedFact.relation == relation,
                                                    DamagedFact.state == "open")))
    for row in rows:
        row.state, row.resolved_at = "resolved", utcnow()
    return len(rows)


def close_batch(s: Session, batch_id: int, run_id: str = "") -> int:
    """The batch was rolled back: its damage is undone with it, and re-edits queued for that damage
    and still pending are withdrawn (superseded)."""
    rows = list(s.scalars(select(DamagedFact).where(DamagedFact.batch_id == batch_id,
                                                    DamagedFact.state.in_(("open", "requeued")))))
    for row in rows:
        request = s.get(EditRequestRow, row.request_id) if row.request_id is not None else None
        if row.state == "requeued" and (request is None or request.state != RequestState.PENDING.value):
            continue  # the re-edit is under way or done: it stands on its own now
        if request is not None:
            move_request(s, request, RequestState.SUPERSEDED,
                         f"batch {batch_id} rolled back: the damage this re-edit repairs is undone", run_id=run_id)
        row.state, row.resolved_at = "rolled_back", utcnow()
    return len(rows)


def open_damage(s: Session, batch_id: int | None = None) -> list[DamagedFact]:
    query = select(DamagedFact).where(DamagedFact.state == "open")
    if batch_id is not None:
        query = query.where(DamagedFact.batch_id == batch_id)
    return list(s.scalars(query.order_by(DamagedFact.id)))


def flagged(s: Session, model_key: str | None = None) -> dict[int, int]:
    """batch id -> open damaged facts, for batches of the current model(s) that have some."""
    counts = dict(s.execute(select(DamagedFact.batch_id, func.count()).where(DamagedFact.state == "open")
                            .group_by(DamagedFact.batch_id)).all())
    if model_key is None:
        return {b: n for b, n in sorted(counts.items())}
    live = set(live_batches(s, model_key))
    return {b: n for b, n in sorted(counts.items()) if b in live}


def requeue(s: Session, rows: Sequence[DamagedFact], catalogue: Catalogue, run_id: str) -> dict[int, int]:
    """Queue a re-edit of each damaged fact to its KB value; damage id -> request id. A fact the KB
    no longer has, or whose relation left the catalogue, is left as it is."""
    from kbsync.verification.known import kb_answer, kb_answers

    out: dict[int, int] = {}
    for d in rows:
        fact = s.scalars(select(KbFact).where(KbFact.subject == d.subject, KbFact.relation == d.relation)).first()
        if fact is None or d.relation not in catalogue.ids():
            continue
        relation = catalogue[d.relation]
        label = kb_answer(fact)
        obj = next((o for o in fact.objects if fact.labels.get("object_labels", {}).get(o) == label), fact.objects[0])
        request = EditRequestRow(
            subject=d.subject, relation=d.relation, subject_label=fact.subject_label, prompt=relation.prompt,
            target_new=label, target_new_id=obj, target_old=d.answer or "(nothing)", target_old_source="model",
            acceptable=kb_answers(fact), paraphrases=list(relation.paraphrases), kb_revision=fact.revision,
            content_hash=fact.content_hash)
        outcome = enqueue_edit(s, request, f"damaged by batch {d.batch_id}: model answered {d.answer!r}, "
                                          f"KB says {label!r}", run_id)
        if outcome.request is not None:
            s.flush()
            d.state, d.request_id, d.resolved_at = "requeued", outcome.request.id, utcnow()
            out[d.id] = outcome.request.id
    return out
