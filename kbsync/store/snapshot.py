"""The KB snapshot (`kb_facts`): what the last complete read said, to find what changed.

`compare` classifies a new read against the stored snapshot; `settle` holds back changes
that have not yet shown the same new state for `[kb] settle_s` seconds; `save` writes it
all, and is only called after a complete read (a read that fails part-way leaves the
snapshot as it was). A held change leaves the fact's stored state as it was and records
the new state's hash, since when it has been seen and its values; a change that reverts
inside the window clears that record, so it never reaches the queue. Facts seen for the
first time are not held: there is no earlier state to keep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
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
    rows = list(session.scalars(select(KbFact)))
    stored = {(f.subject, f.relation): f.content_hash for f in rows}
    diff = SnapshotDiff(
        last_probed={(f.subject, f.relation): f.last_probed for f in rows},
        settling={
            (f.subject, f.relation): (f.settling_hash, _aware(f.settling_since))
            for f in rows
            if f.settling_hash and f.settling_since
        },
    )
    for fact in facts:
        before = stored.get((fact.subject, fact.relation))
        if before is None:
            diff.new.append(fact)
        elif before != fact.content_hash():
            diff.changed.append(fact)
        else:
            diff.unchanged.append(fact)
    return diff


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
    passed): an incremental read by dateModified would not see them."""
    rows = session.scalars(select(KbFact).where(KbFact.why.is_not(None)))
    return sorted({r.subject for r in rows if r.why and due(r.why, last, now)})


def settling_subjects(session: Session) -> list[str]:
    """Subjects with a change waiting out settle_s (an incremental read must look at them again)."""
    rows = session.scalars(select(KbFact.subject).where(KbFact.settling_since.is_not(None)))
    return sorted(set(rows))


def save(session: Session, facts: Sequence[Fact], probed: set[tuple[str, str]] | None = None,
         held: Sequence[Fact] = (), clock: datetime | None = None) -> None:
    """Upsert the read facts; `probed` marks the (subject, relation) pairs probed in this run;
    `held` facts (still settling) keep their stored state and record the new one, seen since `clock`."""
    now = utcnow()
    clock = clock or now
    probed = probed or set()
    held_keys = {(f.subject, f.relation) for f in held}
    rows = {(r.subject, r.relation): r for r in session.scalars(select(KbFact))}
    for fact in facts:
        key = (fact.subject, fact.relation)
        digest = fact.content_hash()
        row = rows.get(key)
        if row is not None and key in held_keys:
            if row.settling_hash != digest:
                row.settling_hash, row.settling_since = digest, clock
                row.settling_objects = {o: fact.object_labels.get(o, o) for o in fact.objects}
            row.last_seen = now
            continue
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
        row.why = {o: dict(w) for o, w in fact.why.items()} or None
        row.settling_hash = row.settling_since = row.settling_objects = None
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
