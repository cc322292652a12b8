"""What an operator puts back: `kbsync retry` (failed requests back in the queue, failed →
pending) and `kbsync release` (held facts free to be queued again by the next diff).

A failed request is re-queued only while it still says what the KB says: one whose fact has
since changed in the KB, or whose (subject, relation) already has an open request, is left
failed and reported as skipped, so a retry never teaches a stale value twice. A retried
request's fact is released from its hold (store/holds.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from kbsync.errors import SelectionError
from kbsync.sources.catalogue import Catalogue
from kbsync.store import holds
from kbsync.store.db import Database
from kbsync.store.events import record_event
from kbsync.store.models import Batch, EditRequestRow, FactHold, KbFact
from kbsync.store.queue import OPEN
from kbsync.store.states import RequestState
from kbsync.store.transitions import move_request
from kbsync.verification import damage


@dataclass
class RetryReport:
    requeued: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)   # request id -> why it stays as it is


def retry_failed(db: Database, request_ids: list[int] | None, *, run_id: str, config_hash: str = "",
                 asked_by: str = "") -> RetryReport:
    """Re-queue these failed requests (None: every failed request) and record a `retry` event."""
    report = RetryReport()
    with db.session() as s:
        query = select(EditRequestRow).where(EditRequestRow.state == RequestState.FAILED.value)
        if request_ids is not None:
            query = query.where(EditRequestRow.id.in_(request_ids))
            state = dict(s.execute(select(EditRequestRow.id, EditRequestRow.state)
                                   .where(EditRequestRow.id.in_(request_ids))).all())
            report.skipped |= {rid: f"is {state[rid]}, not failed" if rid in state else "no such request"
                               for rid in request_ids if state.get(rid) != RequestState.FAILED.value}
        for row in s.scalars(query.order_by(EditRequestRow.id)):
            why = _stays_failed(s, row)
            if why:
                report.skipped[row.id] = why
                continue
            move_request(s, row, RequestState.PENDING, f"retry asked by {asked_by or 'an operator'}", run_id=run_id)
            held = holds.active(s, row.subject, row.relation)
            if held is not None:
                holds.release(s, [held], asked_by or "an operator", f"request {row.id} retried by an operator")
            s.flush()
            report.requeued.append(row.id)
        record_event(s, "retry", run_id=run_id, config_hash=config_hash, ok=True, asked_by=asked_by,
                     requeued=report.requeued, skipped={str(k): v for k, v in report.skipped.items()})
    return report


def _stays_failed(s, row: EditRequestRow) -> str:  # type: ignore[no-untyped-def]
    other = s.scalars(select(EditRequestRow.id).where(
        EditRequestRow.subject == row.subject, EditRequestRow.relation == row.relation,
        EditRequestRow.state.in_(OPEN), EditRequestRow.id != row.id)).first()
    if other is not None:
        return f"request {other} for the same fact is already queued"
    kb = s.scalars(select(KbFact.content_hash).where(KbFact.subject == row.subject,
                                                     KbFact.relation == row.relation)).first()
    if kb is not None and kb != row.content_hash:
        return "the KB changed since this request was queued"
    return ""


def retry_damage(db: Database, batch_id: int, catalogue: Catalogue, *, run_id: str, config_hash: str = "",
                 asked_by: str = "") -> RetryReport:
    """Queue a re-edit of every fact `batch_id` damaged (open damage rows) to its KB value; the damage
    becomes `requeued`. `skipped`: damage id -> why it stays open."""
    report = RetryReport()
    with db.session() as s:
        if s.get(Batch, batch_id) is None:
            raise SelectionError(f"there is no batch {batch_id}; `kbsync audit` lists the batches")
        rows = damage.open_damage(s, batch_id)
        queued = damage.requeue(s, rows, catalogue, run_id)
        report.requeued = sorted(queued.values())
        report.skipped = {d.id: "the KB no longer has this fact, or its relation is not in the catalogue"
                          for d in rows if d.id not in queued}
        record_event(s, "retry", run_id=run_id, config_hash=config_hash, ok=True, asked_by=asked_by,
                     damage_of=batch_id, requeued=report.requeued,
                     skipped={str(k): v for k, v in report.skipped.items()})
    return report


@dataclass
class ReleaseReport:
    released: list[dict] = field(default_factory=list)   # {hold, subject, relation, kind, batch}


def release_holds(db: Database, *, facts: list[tuple[str, str]] | None = None, batch_id: int | None = None,
                  kind: str | None = None, run_id: str, config_hash: str = "", asked_by: str = "") -> ReleaseReport:
    """Release the active holds of these facts ((subject, relation)), or of one batch, or (neither)
    all of them, optionally of one kind; records a `release` event. The next diff queues a released
    fact if the model still disagrees with the KB."""
    report = ReleaseReport()
    with db.session() as s:
        if batch_id is not None and s.get(Batch, batch_id) is None:
            raise SelectionError(f"there is no batch {batch_id}; `kbsync audit` lists the batches")
        query = select(FactHold).where(FactHold.state == "active")
        if batch_id is not None:
            query = query.where(FactHold.batch_id == batch_id)
        if kind is not None:
            query = query.where(FactHold.kind == kind)
        rows = [h for h in s.scalars(query.order_by(FactHold.id))
                if facts is None or (h.subject, h.relation) in set(facts)]
        holds.release(s, rows, asked_by or "an operator")
        report.released = [{"hold": h.id, "subject": h.subject, "relation": h.relation, "kind": h.kind,
                            "batch": h.batch_id} for h in rows]
        record_event(s, "release", run_id=run_id, config_hash=config_hash, ok=True, asked_by=asked_by,
                     released=report.released, batch=batch_id, facts=[list(f) for f in facts or []], hold_kind=kind)
    return report
