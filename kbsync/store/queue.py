"""The edit queue: enqueue (with supersede), count, claim under a lease, reap expired leases.

All state changes go through `kbsync.store.transitions`. Claiming uses
`SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL so two workers never take the same
request; SQLite has one writer at a time (the model lock of `kbsync.store.locks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kbsync.store.models import Batch, EditRequestRow, utcnow
from kbsync.store.recovery import return_or_poison
from kbsync.store.states import OPEN_REQUEST_STATES, BatchState, RequestState
from kbsync.store.transitions import enqueue, move_batch, move_request

OPEN = [s.value for s in OPEN_REQUEST_STATES]


@dataclass
class Enqueued:
    action: str                  # queued | superseded | unchanged | in_flight (| refresh: would_enqueue)
    request: EditRequestRow | None
    superseded: EditRequestRow | None = None


def open_requests(session: Session, subject: str, relation: str) -> list[EditRequestRow]:
    return list(
        session.scalars(
            select(EditRequestRow)
            .where(EditRequestRow.subject == subject, EditRequestRow.relation == relation, EditRequestRow.state.in_(OPEN))
            .order_by(EditRequestRow.id)
        )
    )


def enqueue_edit(session: Session, new: EditRequestRow, reason: str, run_id: str = "") -> Enqueued:
    """Queue `new` unless the same request is already open; supersede older pending values.

    - same (subject, relation, target, KB content) already open  -> unchanged (never queued twice)
    - a pending request for an older KB value                   -> superseded by the new one
    - a claimed request (a worker is applying it right now)      -> new one queued beside it
    """
    plan = would_enqueue(session, new)
    if plan.action == "refresh":
        # Same answer, newer KB revision: keep the queued one, refresh what it carries.
        old = plan.request
        assert old is not None
        old.content_hash, old.kb_revision = new.content_hash, new.kb_revision
        old.acceptable, old.target_new_id = new.acceptable, new.target_new_id
        return Enqueued("unchanged", old)
    if plan.action in ("unchanged", "in_flight"):
        return plan
    row = enqueue(session, new, reason, run_id)
    superseded = plan.superseded
    if superseded is not None:
        move_request(session, superseded, RequestState.SUPERSEDED, f"newer KB value {new.target_new!r} (request {row.id})", run_id=run_id)
        superseded.superseded_by = row.id
        return Enqueued("superseded", row, superseded)
    return Enqueued("queued", row)


def would_enqueue(session: Session, new: EditRequestRow) -> Enqueued:
    """What `enqueue_edit` would do with `new`, writing nothing (`kbsync diff --dry-run`): queued,
    superseded (an older pending value), unchanged (already open), refresh (the same answer is
    pending for an older KB revision) or in_flight (a worker is applying the same answer)."""
    superseded = None
    for old in open_requests(session, new.subject, new.relation):
        if old.target_new_id == new.target_new_id and old.content_hash == new.content_hash:
            return Enqueued("unchanged", old)
        if old.state == RequestState.CLAIMED.value:
            if old.target_new == new.target_new:
                return Enqueued("in_flight", old)
            continue
        if old.target_new == new.target_new:
            return Enqueued("refresh", old)
        superseded = old
    return Enqueued("superseded" if superseded is not None else "queued", None, superseded)


def count_pending(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(EditRequestRow)
                          .where(EditRequestRow.state == RequestState.PENDING.value)) or 0


def withdraw_pending(session: Session, subject: str, relation: str, keep: set[str], reason: str,
                     run_id: str = "") -> int:
    """Supersede the pending requests of a fact whose target is no longer a KB value (`keep`:
    the current object ids), e.g. when the KB moved on and the model already says the new value."""
    n = 0
    for old in open_requests(session, subject, relation):
        if old.state == RequestState.PENDING.value and old.target_new_id not in keep:
            move_request(session, old, RequestState.SUPERSEDED, reason, run_id=run_id)
            n += 1
    return n


SPREAD_WINDOW = 4  # pending requests looked at per claimed one, to find whole subjects or distinct ones


def claim(session: Session, limit: int, worker: str, lease_s: int, run_id: str = "",
          subjects_together: bool = True) -> list[EditRequestRow]:
    """Take up to `limit` pending requests, oldest first, under a lease. Several facts of one subject
    in a MEMIT batch pull the subject's key apart (MEMIT-Merge, 2025). With `subjects_together`
    (`[editing] merge_same_subject`: the editor gives them one shared target) a subject's pending
    requests are taken whole, in one batch; without it at most one per subject, the rest wait for the
    next batch. Measured on the bundled model (docs/benchmarks.md): merged in one batch beats spread over two."""
    query = (select(EditRequestRow).where(EditRequestRow.state == RequestState.PENDING.value)
             .order_by(EditRequestRow.id).limit(limit * SPREAD_WINDOW))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    pending = list(session.scalars(query))
    rows = whole_subjects(pending, limit) if subjects_together else one_per_subject(pending, limit)
    expires = utcnow() + timedelta(seconds=lease_s)
    for row in rows:
        move_request(session, row, RequestState.CLAIMED, f"claimed by {worker}", run_id=run_id)
        row.claimed_by, row.lease_expires_at = worker, expires
    return rows


def one_per_subject(rows: list[EditRequestRow], limit: int) -> list[EditRequestRow]:
    """The first `limit` rows whose subject no earlier row has."""
    seen: set[str] = set()
    out: list[EditRequestRow] = []
    for row in rows:
        if row.subject not in seen and len(out) < limit:
            seen.add(row.subject)
            out.append(row)
    return out


def whole_subjects(rows: list[EditRequestRow], limit: int) -> list[EditRequestRow]:
    """Subjects in the order of their oldest row, each with all its rows, while they fit in `limit`;
    a subject with more rows than `limit` alone fills a batch with its oldest ones."""
    groups: dict[str, list[EditRequestRow]] = {}
    for row in rows:
        groups.setdefault(row.subject, []).append(row)
    out: list[EditRequestRow] = []
    for group in groups.values():
        if not out and len(group) >= limit:
            return group[:limit]
        if len(out) + len(group) <= limit:
            out += group
    return out


def reap(session: Session, now: datetime | None = None, run_id: str = "", max_attempts: int | None = None) -> int:
    """Return claimed requests whose lease expired (their worker died) to pending, or fail them as
    poison after `max_attempts` recoveries (`store.recovery`); fail their batch."""
    now = now or utcnow()
    rows = list(
        session.scalars(
            select(EditRequestRow).where(
                EditRequestRow.state == RequestState.CLAIMED.value, EditRequestRow.lease_expires_at < now
            )
        )
    )
    batch_ids = set()
    for row in rows:
        worker = row.claimed_by
        if row.batch_id is not None:
            batch_ids.add(row.batch_id)
        why = f"lease expired (worker {worker} stopped)"
        if max_attempts is None:
            move_request(session, row, RequestState.PENDING, why, run_id=run_id)
        else:
            return_or_poison(session, row, why, max_attempts, run_id)
    for batch_id in batch_ids:
        batch = session.get(Batch, batch_id)
        if batch is not None and batch.state == BatchState.RUNNING.value:
            move_batch(session, batch, BatchState.FAILED, "worker stopped before the batch was applied")
    return len(rows)

