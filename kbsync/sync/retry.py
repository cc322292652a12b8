"""`kbsync retry`: put failed edit requests back in the queue (failed → pending).

A failed request is re-queued only while it still says what the KB says: one whose fact has
since changed in the KB, or whose (subject, relation) already has an open request, is left
failed and reported as skipped, so a retry never teaches a stale value twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from kbsync.errors import ConfigError
from kbsync.sources.catalogue import Catalogue
from kbsync.store.db import Database
from kbsync.store.events import record_event
from kbsync.store.models import Batch, EditRequestRow, KbFact
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
            raise ConfigError(f"there is no batch {batch_id}; `kbsync audit` lists the batches")
        rows = damage.open_damage(s, batch_id)
        queued = damage.requeue(s, rows, catalogue, run_id)
        report.requeued = sorted(queued.values())
        report.skipped = {d.id: "the KB no longer has this fact, or its relation is not in the catalogue"
                          for d in rows if d.id not in queued}
        record_event(s, "retry", run_id=run_id, config_hash=config_hash, ok=True, asked_by=asked_by,
                     damage_of=batch_id, requeued=report.requeued,
                     skipped={str(k): v for k, v in report.skipped.items()})
    return report
