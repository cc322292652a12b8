"""What each dashboard page reads: one function per page, each a few indexed queries.

Every list is paginated (`Page`), and every query is a primary-key range or lookup, or uses
an index of kbsync/store/models.py. Two questions have no index of their own in the schema:
the requests of one batch (found through `ix_edit_checks_batch_id` instead) and the requests
of one fact (`edit_requests.subject`; a scan, see `fact`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from kbsync.store import holds as fact_holds
from kbsync.store.models import (
    Batch,
    DamagedFact,
    EditCheck,
    EditRequestRow,
    Event,
    FactHold,
    GateFigures,
    KbFact,
    ModelVersion,
    Probe,
    RequestTransition,
    as_utc,
)
from kbsync.store.states import RequestState


@dataclass
class Page:
    rows: list[Any]
    number: int            # 1-based
    size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


def page_of(s: Session, query, count_query, number: int, size: int) -> Page:  # type: ignore[no-untyped-def]
    number = max(1, number)
    rows = list(s.scalars(query.limit(size).offset((number - 1) * size)))
    return Page(rows, number, size, s.scalar(count_query) or 0)


# --- overview -----------------------------------------------------------------------------
@dataclass
class Overview:
    current: ModelVersion | None
    queue: dict[str, int]
    ticks: list[Event]
    events: list[Event]
    batches: dict[str, int]
    settling: int = 0  # KB changes waiting out [kb] settle_s before they may be queued


def overview(s: Session) -> Overview:
    current = s.scalars(select(ModelVersion).where(ModelVersion.is_current)
                        .order_by(ModelVersion.id.desc())).first()
    queue = dict(s.execute(select(EditRequestRow.state, func.count()).group_by(EditRequestRow.state)).all())
    ticks = list(s.scalars(select(Event).where(Event.kind == "tick").order_by(Event.id.desc()).limit(10)))
    events = list(s.scalars(select(Event).order_by(Event.id.desc()).limit(15)))
    batches = dict(s.execute(select(Batch.state, func.count()).group_by(Batch.state)).all())
    settling = s.scalar(select(func.count()).select_from(KbFact).where(KbFact.settling_since.is_not(None))) or 0
    return Overview(current, queue, ticks, events, batches, settling)


# --- timeline -----------------------------------------------------------------------------
def timeline(s: Session, number: int, size: int) -> Page:
    """Batches, newest first."""
    return page_of(s, select(Batch).order_by(Batch.id.desc()), select(func.count()).select_from(Batch), number, size)


def gate_figures(s: Session, batch_ids: list[int]) -> dict[int, GateFigures]:
    """The regression gate's figures of each of these batches' candidates (the latest, where it ran)."""
    if not batch_ids:
        return {}
    rows = s.scalars(select(GateFigures).where(GateFigures.scope == "batch", GateFigures.batch_id.in_(batch_ids))
                     .order_by(GateFigures.id))
    return {g.batch_id: g for g in rows if g.batch_id is not None}


def rollbacks(s: Session, batch_ids: list[int]) -> dict[int, Event]:
    """The rollback event of each of these batches that was rolled back."""
    if not batch_ids:
        return {}
    rows = s.scalars(select(Event).where(Event.kind == "rollback", Event.batch_id.in_(batch_ids)))
    return {e.batch_id: e for e in rows if e.batch_id is not None}


# --- one batch ----------------------------------------------------------------------------
@dataclass
class BatchView:
    batch: Batch
    requests: Page
    checks: dict[int, list[EditCheck]]        # request id -> its checks in this batch
    before: ModelVersion | None
    after: ModelVersion | None
    events: list[Event] = field(default_factory=list)
    gate: GateFigures | None = None                                  # the regression gate on its candidate
    damaged: list[DamagedFact] = field(default_factory=list)        # facts it made wrong


def batch_view(s: Session, batch_id: int, number: int, size: int) -> BatchView | None:
    batch = s.get(Batch, batch_id)
    if batch is None:
        return None
    # The requests of a batch, through the indexed edit_checks.batch_id (edit_requests.batch_id
    # has no index); a batch that failed before any check falls back to the scan.
    ids = select(EditCheck.request_id).where(EditCheck.batch_id == batch_id).distinct()
    in_batch: ColumnElement[bool] = EditRequestRow.id.in_(ids)
    if not s.scalar(select(EditCheck.id).where(EditCheck.batch_id == batch_id).limit(1)):
        in_batch = EditRequestRow.batch_id == batch_id
    requests = page_of(s, select(EditRequestRow).where(in_batch).order_by(EditRequestRow.id),
                       select(func.count()).select_from(EditRequestRow).where(in_batch), number, size)
    checks: dict[int, list[EditCheck]] = {r.id: [] for r in requests.rows}
    if checks:
        for c in s.scalars(select(EditCheck).where(EditCheck.batch_id == batch_id,
                                                   EditCheck.request_id.in_(list(checks))).order_by(EditCheck.id)):
            checks[c.request_id].append(c)
    before = s.get(ModelVersion, batch.version_before_id) if batch.version_before_id else None
    after = s.get(ModelVersion, batch.version_after_id) if batch.version_after_id else None
    events = list(s.scalars(select(Event).where(Event.batch_id == batch_id).order_by(Event.id)))
    damaged = list(s.scalars(select(DamagedFact).where(DamagedFact.batch_id == batch_id)   # indexed
                             .order_by(DamagedFact.id).limit(size * 4)))
    return BatchView(batch, requests, checks, before, after, events, gate_figures(s, [batch_id]).get(batch_id),
                     damaged)


# --- one fact -----------------------------------------------------------------------------
@dataclass
class FactView:
    subject: str
    relation: str
    kb: KbFact | None
    requests: list[EditRequestRow]
    transitions: list[RequestTransition]
    probes: Page
    answered_by: dict[int, str] = field(default_factory=dict)   # probe id -> which model answered
    holds: list[FactHold] = field(default_factory=list)         # newest first; the active one, if any, first
    waits_for: str = ""                                          # what the active hold waits for
    damage: list[DamagedFact] = field(default_factory=list)

    @property
    def hold(self) -> FactHold | None:
        return next((h for h in self.holds if h.state == "active"), None)

    @property
    def values(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(object id, label, why) of every value the KB gives, current first, then future, ended,
        superseded (the snapshot's `why`; empty for a truthy read, which has current values only)."""
        if self.kb is None or not self.kb.why:
            return []
        labels = (self.kb.labels or {}).get("object_labels") or {}
        order = {"current": 0, "future": 1, "ended": 2, "superseded": 3}
        return sorted(((o, labels.get(o, o), w) for o, w in self.kb.why.items()),
                      key=lambda v: (order.get(str(v[2].get("status")), 9), v[0]))


def find_facts(s: Session, query: str, relation: str, limit: int = 50) -> list[KbFact]:
    """Facts whose subject id is `query` (indexed), else whose label is `query` (any case; a scan
    of kb_facts, which has no index on labels)."""
    for cond in (KbFact.subject == query, KbFact.subject_label == query,
                 func.lower(KbFact.subject_label) == query.lower()):
        q = select(KbFact).where(cond)
        if relation:
            q = q.where(KbFact.relation == relation)
        found = list(s.scalars(q.order_by(KbFact.subject, KbFact.relation).limit(limit)))
        if found:
            return found
    return []


def requested_facts(s: Session, query: str, relation: str, limit: int = 50) -> list[tuple[str, str, str]]:
    """(subject, relation, label) of edit requests for a subject id that the KB snapshot no longer has."""
    q = select(EditRequestRow.subject, EditRequestRow.relation, EditRequestRow.subject_label).where(
        EditRequestRow.subject == query)
    if relation:
        q = q.where(EditRequestRow.relation == relation)
    return list(s.execute(q.distinct().limit(limit)))


def fact(s: Session, subject: str, relation: str, number: int, size: int) -> FactView:
    kb = s.scalars(select(KbFact).where(KbFact.subject == subject, KbFact.relation == relation)).first()
    # edit_requests has no index on (subject, relation) (only a partial one over open requests):
    # this is the one scan of the dashboard; about 20 ms on 100,000 requests (benchmarks/dashboard.py).
    requests = list(s.scalars(select(EditRequestRow).where(EditRequestRow.subject == subject,
                                                           EditRequestRow.relation == relation)
                              .order_by(EditRequestRow.id)))
    transitions = list(s.scalars(select(RequestTransition).where(
        RequestTransition.request_id.in_([r.id for r in requests])).order_by(RequestTransition.at, RequestTransition.id))
    ) if requests else []
    where = (Probe.subject == subject, Probe.relation == relation)
    probes = page_of(s, select(Probe).where(*where).order_by(Probe.id.desc()),
                     select(func.count()).select_from(Probe).where(*where), number, size)
    held = list(s.scalars(select(FactHold).where(FactHold.subject == subject, FactHold.relation == relation)
                          .order_by(FactHold.id.desc()).limit(20)))
    active = next((h for h in held if h.state == "active"), None)
    waits_for = fact_holds.why_waiting(active, fact_holds.now_for(s, active.model_key, active.config_hash)) \
        if active is not None else ""
    damage = list(s.scalars(select(DamagedFact).where(DamagedFact.subject == subject, DamagedFact.relation == relation)
                            .order_by(DamagedFact.id.desc()).limit(20)))
    return FactView(subject, relation, kb, requests, transitions, probes, answered_by(s, probes.rows),
                    sorted(held, key=lambda h: h.state != "active"), waits_for, damage)


def answered_by(s: Session, probes: list[Probe]) -> dict[int, str]:
    """Which model answered each probe: "version N" ("version N, base weights" when everything was
    rolled back), "base" (before any version existed), or "not recorded" (a probe kbsync took
    before it recorded the answering version)."""
    ids = {p.model_version_id for p in probes if p.model_version_id is not None}
    versions = {v.id: v for v in s.scalars(select(ModelVersion).where(ModelVersion.id.in_(ids)))} if ids else {}
    first = s.scalar(select(func.min(ModelVersion.created_at)))
    out = {}
    for p in probes:
        v = versions.get(p.model_version_id) if p.model_version_id is not None else None
        if v is not None:
            out[p.id] = f"version {v.id}" + ("" if v.batch_ids else ", base weights")
        elif first is None or as_utc(p.probed_at) < as_utc(first):  # type: ignore[operator]
            out[p.id] = "base"
        else:
            out[p.id] = "not recorded"
    return out


# --- failures -----------------------------------------------------------------------------
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def reason_group(reason: str) -> str:
    """A failure reason with its numbers (batch ids, scores) blanked, so alike reasons group."""
    return NUMBER.sub("#", reason)


def failure_groups(s: Session) -> list[tuple[str, int, str]]:
    """(group, count, one example reason) of failed requests, the largest group first."""
    counts: Counter[str] = Counter()
    example: dict[str, str] = {}
    reasons = s.execute(select(EditRequestRow.state_reason, func.count())
                        .where(EditRequestRow.state == RequestState.FAILED.value)
                        .group_by(EditRequestRow.state_reason)).all()
    for reason, n in reasons:
        group = reason_group(reason)
        counts[group] += n
        example.setdefault(group, reason)
    return [(g, n, example[g]) for g, n in counts.most_common()]


def failed_in_group(s: Session, group: str) -> list[int]:
    """Ids of the failed requests whose reason falls in `group`."""
    rows = s.execute(select(EditRequestRow.id, EditRequestRow.state_reason)
                     .where(EditRequestRow.state == RequestState.FAILED.value).order_by(EditRequestRow.id))
    return [rid for rid, reason in rows if reason_group(reason) == group]


def failed_requests(s: Session, ids: list[int]) -> list[EditRequestRow]:
    return list(s.scalars(select(EditRequestRow).where(EditRequestRow.id.in_(ids)).order_by(EditRequestRow.id))) if ids else []


# --- model versions -----------------------------------------------------------------------
def versions(s: Session, number: int, size: int) -> Page:
    return page_of(s, select(ModelVersion).order_by(ModelVersion.id.desc()),
                   select(func.count()).select_from(ModelVersion), number, size)
