"""The KB snapshot (`kb_facts`): what the last complete read said, to find what changed.

`compare` classifies a new read against the stored snapshot; `save` writes it, and is only
called after a complete read (a read that fails part-way leaves the snapshot as it was).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from kbsync.sources.fact import Fact
from kbsync.store.models import KbFact, SyncState, utcnow


@dataclass
class SnapshotDiff:
    new: list[Fact] = field(default_factory=list)
    changed: list[Fact] = field(default_factory=list)
    unchanged: list[Fact] = field(default_factory=list)
    last_probed: dict[tuple[str, str], datetime | None] = field(default_factory=dict)  # from the same read

    @property
    def to_probe(self) -> list[Fact]:
        return self.new + self.changed


def compare(session: Session, facts: Sequence[Fact]) -> SnapshotDiff:
    rows = list(session.scalars(select(KbFact)))
    stored = {(f.subject, f.relation): f.content_hash for f in rows}
    diff = SnapshotDiff(last_probed={(f.subject, f.relation): f.last_probed for f in rows})
    for fact in facts:
        before = stored.get((fact.subject, fact.relation))
        if before is None:
            diff.new.append(fact)
        elif before != fact.content_hash():
            diff.changed.append(fact)
        else:
            diff.unchanged.append(fact)
    return diff


def save(session: Session, facts: Sequence[Fact], probed: set[tuple[str, str]] | None = None) -> None:
    """Upsert the read facts; `probed` marks the (subject, relation) pairs probed in this run."""
    now = utcnow()
    probed = probed or set()
    rows = {(r.subject, r.relation): r for r in session.scalars(select(KbFact))}
    for fact in facts:
        key = (fact.subject, fact.relation)
        digest = fact.content_hash()
        row = rows.get(key)
        if row is None:
            row = KbFact(subject=fact.subject, relation=fact.relation, first_seen=now, last_changed=now)
            session.add(row)
        elif row.content_hash != digest:
            row.last_changed = now
        row.subject_label = fact.subject_label
        row.objects = list(fact.objects)
        row.labels = {
            "subject_aliases": list(fact.subject_aliases),
            "object_labels": dict(fact.object_labels),
            "object_aliases": {k: list(v) for k, v in fact.object_aliases.items()},
        }
        row.content_hash = digest
        row.revision = fact.revision
        row.last_seen = now
        if key in probed:
            row.last_probed = now


def rotating_sample(diff: SnapshotDiff, size: int) -> list[Fact]:
    """The `size` unchanged facts probed longest ago (never-probed first), so all get a turn."""
    unchanged, last = diff.unchanged, diff.last_probed
    if size <= 0 or not unchanged:
        return []
    oldest = datetime.min.replace(tzinfo=None)

    def key(f: Fact) -> tuple[datetime, str, str]:
        when = last.get((f.subject, f.relation))
        return ((when.replace(tzinfo=None) if when else oldest), f.subject, f.relation)

    return sorted(unchanged, key=key)[:size]


def get_value(session: Session, key: str) -> str | None:
    row = session.get(SyncState, key)
    return None if row is None else row.value


def set_value(session: Session, key: str, value: str) -> None:
    row = session.get(SyncState, key)
    if row is None:
        session.add(SyncState(key=key, value=value))
    else:
        row.value = value
