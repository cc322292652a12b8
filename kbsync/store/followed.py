"""What the change-stream follower has seen (`followed_entities`) and where it is in the stream.

`note` records the newest revision of each watched item an event (or a RecentChanges
backfill) named: an event whose revision is not newer than the one stored is a duplicate or
came out of order, and changes nothing. `waiting` lists the items whose newest revision the
snapshot does not hold yet; `done` records that the snapshot holds it. The stream position
(the last event's id, the newest event time, a `since` to start from) is kept in sync_state and
is written by the caller in the same transaction as the rows its events caused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from kbsync.store import snapshot
from kbsync.store.models import FollowedEntity, KbFact, utcnow

LAST_EVENT_ID, LAST_DT, SINCE = "follow:last_event_id", "follow:last_dt", "follow:since"


def watched(session: Session, entities: Iterable[str], relations: Sequence[str], configured: set[str]) -> set[str]:
    """Those of `entities` the sync watches: a subject of one of `relations` in the snapshot, or configured."""
    wanted = sorted(set(entities))
    out = {e for e in wanted if e in configured}
    for start in range(0, len(wanted), 500):
        page = wanted[start:start + 500]
        out.update(session.scalars(select(KbFact.subject).where(KbFact.subject.in_(page),
                                                                KbFact.relation.in_(relations)).distinct()))
    return out


def watched_any(session: Session, relations: Sequence[str]) -> bool:
    return session.scalar(select(KbFact.id).where(KbFact.relation.in_(relations)).limit(1)) is not None


def note(session: Session, changes: Mapping[str, tuple[int, datetime | None]]) -> int:
    """Record entity -> (revision, edited at); returns how many were newer than what was stored."""
    if not changes:
        return 0
    stored: dict[str, int] = {e: r for e, r in session.execute(
        select(FollowedEntity.entity, FollowedEntity.revision).where(FollowedEntity.entity.in_(list(changes))))}
    newer = 0
    now = utcnow()
    for entity, (revision, at) in changes.items():
        if entity not in stored:
            session.add(FollowedEntity(entity=entity, revision=revision, done_revision=0, changed_at=at, seen_at=now))
        elif revision > stored[entity]:
            session.execute(update(FollowedEntity).where(FollowedEntity.entity == entity)
                            .values(revision=revision, changed_at=at, seen_at=now))
        else:
            continue
        newer += 1
    return newer


def waiting(session: Session, limit: int, after: str = "") -> list[tuple[str, int]]:
    """Up to `limit` (entity, revision) whose revision the snapshot does not hold, by entity after `after`."""
    rows = session.execute(select(FollowedEntity.entity, FollowedEntity.revision)
                           .where(FollowedEntity.revision > FollowedEntity.done_revision,
                                  FollowedEntity.entity > after)
                           .order_by(FollowedEntity.entity).limit(limit))
    return [(e, r) for e, r in rows]


def count_waiting(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(FollowedEntity)
                              .where(FollowedEntity.revision > FollowedEntity.done_revision)) or 0)


def done(session: Session, read: Sequence[tuple[str, int]]) -> None:
    """The snapshot now holds these (entity, revision read): a newer revision noted since stays waiting."""
    for entity, revision in read:
        session.execute(update(FollowedEntity).where(FollowedEntity.entity == entity,
                                                     FollowedEntity.done_revision < revision)
                        .values(done_revision=revision))


def position(session: Session) -> tuple[str | None, str | None, str | None]:
    """(last event id, newest event time ISO, since ISO): where the stream resumes."""
    return (snapshot.get_value(session, LAST_EVENT_ID) or None, snapshot.get_value(session, LAST_DT) or None,
            snapshot.get_value(session, SINCE) or None)


def set_position(session: Session, event_id: str | None, dt: str | None, since: str | None = None) -> None:
    snapshot.set_value(session, LAST_EVENT_ID, event_id or "")
    if dt:
        old = snapshot.get_value(session, LAST_DT)
        if not old or dt > old:
            snapshot.set_value(session, LAST_DT, dt)
    if since is not None:
        snapshot.set_value(session, SINCE, since)
