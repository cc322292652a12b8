"""The KB snapshot (`kb_facts`): what the last complete read said, to find what changed.

`compare` classifies a chunk of a new read against the stored rows of its keys (a read is
compared, and saved, a chunk at a time: nothing holds the whole snapshot); `settle` holds back changes
that have not yet shown the same new state for `[kb] settle_s` seconds; `save` writes it
all, and is only called after a complete read (a read that fails part-way leaves the
snapshot as it was). A held change leaves the fact's stored state as it was and records
the new state's hash, since when it has been seen and its values; a change that reverts
inside the window clears that record, so it never reaches the queue. Facts seen for the
first time are not held: there is no earlier state to keep.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.orm import Session

from kbsync.sources.fact import Fact
from kbsync.sources.timeline import due
from kbsync.store.models import KbFact, SyncState, utcnow


@dataclass
class SnapshotDiff:
    new: list[Fact] = field(default_factory=list)
    changed: list[Fact] = field(default_factory=list)
    unchanged: list[Fact] = field(default_factory=list)
    last_probed: dict[tuple[str, str], datetime | None] = field(default_factory=dict)  # from the same read
    settling: dict[tuple[str, str], tuple[str, datetime]] = field(default_factory=dict)  # hash, since
    held: list[Fact] = field(default_factory=list)  # changed, still settling: not probed
    reverted: list[Fact] = field(default_factory=list)  # back to the stored state inside the window

    @property
    def to_probe(self) -> list[Fact]:
        return self.new + self.changed


def compare(session: Session, facts: Sequence[Fact]) -> SnapshotDiff:
    """Classify `facts` (a chunk of a read) against the stored rows of those keys only."""
    rows = _stored(session, facts, KbFact.content_hash, KbFact.last_probed, KbFact.settling_hash,
                   KbFact.settling_since)
    diff = SnapshotDiff(
        last_probed={key: r.last_probed for key, r in rows.items()},
        settling={
            key: (r.settling_hash, _aware(r.settling_since))
            for key, r in rows.items()
            if r.settling_hash and r.settling_since
        },
    )
    for fact in facts:
        row = rows.get((fact.subject, fact.relation))
        if row is None:
            diff.new.append(fact)
        elif row.content_hash != fact.content_hash():
            diff.changed.append(fact)
        else:
            diff.unchanged.append(fact)
    return diff


def _stored(session: Session, facts: Sequence[Fact], *columns: Any) -> dict[tuple[str, str], Row[Any]]:
    """(subject, relation) -> the requested columns of the stored rows of `facts`' keys."""
    by_relation: dict[str, list[str]] = defaultdict(list)
    for fact in facts:
        by_relation[fact.relation].append(fact.subject)
    out: dict[tuple[str, str], Row[Any]] = {}
    for relation, subjects in by_relation.items():
        query = select(KbFact.subject, KbFact.relation, *columns).where(
            KbFact.relation == relation, KbFact.subject.in_(subjects))
        out.update(((r.subject, r.relation), r) for r in session.execute(query))
    return out


def settle(diff: SnapshotDiff, now: datetime, settle_s: int) -> None:
    """Move the changed facts whose new state has not held for `settle_s` seconds to `held`."""
    if settle_s > 0:
        ready: list[Fact] = []
        for fact in diff.changed:
            since = _settling_since(diff, fact)
            (ready if since is not None and (now - since).total_seconds() >= settle_s else diff.held).append(fact)
        diff.changed = ready
    diff.reverted = [f for f in diff.unchanged if (f.subject, f.relation) in diff.settling]


def _settling_since(diff: SnapshotDiff, fact: Fact) -> datetime | None:
    entry = diff.settling.get((fact.subject, fact.relation))
    return entry[1] if entry is not None and entry[0] == fact.content_hash() else None


def due_subjects(session: Session, last: datetime, now: datetime) -> list[str]:
    """Subjects whose current values change by time alone since `last` (an end or a start
    passed): an incremental read by dateModified would not see them. Streamed over kb_facts."""
    query = select(KbFact.subject, KbFact.why).where(KbFact.why.is_not(None)).execution_options(yield_per=5000)
    return sorted({r.subject for r in session.execute(query) if r.why and due(r.why, last, now)})


def settling_subjects(session: Session) -> list[str]:
    """Subjects with a change waiting out settle_s (an incremental read must look at them again)."""
    rows = session.scalars(select(KbFact.subject).where(KbFact.settling_since.is_not(None)))
    return sorted(set(rows))


def count_in_scope(session: Session, relations: Sequence[str], subjects: Sequence[str] | None = None) -> int:
    """How many facts of these relations (and subjects) the snapshot holds."""
    query = select(func.count()).select_from(KbFact).where(KbFact.relation.in_(list(relations)))
    if subjects:
        query = query.where(KbFact.subject.in_(list(subjects)))
    return session.scalar(query) or 0


def forget_unseen(session: Session, relations: Sequence[str], subjects: Sequence[str] | None, seen_at: datetime) -> int:
    """Drop the facts of this scope that the read saved at `seen_at` did not see: they left the KB
    (only after a shrink the operator accepted: `kbsync diff --accept-shrink`)."""
    query = delete(KbFact).where(KbFact.relation.in_(list(relations)), KbFact.last_seen < seen_at)
    if subjects:
        query = query.where(KbFact.subject.in_(list(subjects)))
    return session.execute(query.execution_options(synchronize_session=False)).rowcount or 0  # type: ignore[attr-defined]


def save(session: Session, facts: Sequence[Fact], probed: set[tuple[str, str]] | None = None,
         held: Sequence[Fact] = (), clock: datetime | None = None, now: datetime | None = None) -> None:
    """Upsert the read facts (a chunk of a read); `probed` marks the (subject, relation) pairs probed
    in this run; `held` facts (still settling) keep their stored state and record the new one, seen
    since `clock`. Bulk statements: inserts, updates of what differs, one last_seen for the rest."""
    now = now or utcnow()
    clock = clock or now
    probed = probed or set()
    held_keys = {(f.subject, f.relation) for f in held}
    rows = _stored(session, facts, KbFact.id, KbFact.content_hash, KbFact.revision, KbFact.why,
                   KbFact.settling_hash)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    seen: list[int] = []  # rows where only last_seen moves
    for fact in facts:
        key = (fact.subject, fact.relation)
        digest = fact.content_hash()
        row = rows.get(key)
        if row is not None and key in held_keys:
            if row.settling_hash != digest:
                updates.append({"id": row.id, "settling_hash": digest, "settling_since": clock, "last_seen": now,
                                "settling_objects": {o: fact.object_labels.get(o, o) for o in fact.objects}})
            else:
                seen.append(row.id)
            continue
        why = {o: dict(w) for o, w in fact.why.items()} or None
        values: dict[str, Any] = {}
        if row is None or row.content_hash != digest:
            values = {"subject_label": fact.subject_label, "objects": list(fact.objects),
                      "labels": _labels(fact), "content_hash": digest, "last_changed": now}
        if row is None or row.revision != fact.revision or row.why != why:
            values |= {"revision": fact.revision, "why": why}
        if row is not None and row.settling_hash is not None:
            values |= {"settling_hash": None, "settling_since": None, "settling_objects": None}
        if key in probed:
            values["last_probed"] = now
        if row is None:
            inserts.append({"subject": fact.subject, "relation": fact.relation, "first_seen": now,
                            "last_seen": now, **values})
        elif values:
            updates.append({"id": row.id, "last_seen": now, **values})
        else:
            seen.append(row.id)
    if inserts:
        session.execute(insert(KbFact), inserts)
    if updates:
        session.execute(update(KbFact), updates)
    if seen:
        session.execute(update(KbFact).where(KbFact.id.in_(seen)).values(last_seen=now)
                        .execution_options(synchronize_session=False))


def _labels(fact: Fact) -> dict[str, Any]:
    return {
        "subject_aliases": list(fact.subject_aliases),
        "object_labels": dict(fact.object_labels),
        "object_aliases": {k: list(v) for k, v in fact.object_aliases.items()},
    }


class RotatingSample:
    """The `size` unchanged facts probed longest ago (never-probed first), so all get a turn;
    fed one compared chunk at a time, holding only `size` keys."""

    def __init__(self, size: int):
        self.size = size
        self._keys: list[tuple[datetime, str, str]] = []

    def offer(self, diff: SnapshotDiff) -> None:
        if self.size <= 0 or not diff.unchanged:
            return
        oldest = datetime.min

        def key(f: Fact) -> tuple[datetime, str, str]:
            when = diff.last_probed.get((f.subject, f.relation))
            return ((when.replace(tzinfo=None) if when else oldest), f.subject, f.relation)

        self._keys = heapq.nsmallest(self.size, self._keys + [key(f) for f in diff.unchanged])

    def keys(self) -> list[tuple[str, str]]:
        """(subject, relation) of the sample, longest unprobed first."""
        return [(subject, relation) for _, subject, relation in self._keys]


def _aware(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def get_value(session: Session, key: str) -> str | None:
    row = session.get(SyncState, key)
    return None if row is None else row.value


def set_value(session: Session, key: str, value: str) -> None:
    row = session.get(SyncState, key)
    if row is None:
        session.add(SyncState(key=key, value=value))
    else:
        row.value = value
