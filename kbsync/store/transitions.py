"""The one place where edit requests and batches change state.

Each move is checked against `kbsync.store.states` and leaves a timestamped row with its
reason in `request_transitions` (batches keep `state_reason` and an event).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from kbsync.errors import IllegalTransitionError
from kbsync.store.models import Batch, EditRequestRow, RequestTransition, utcnow
from kbsync.store.states import BATCH_TRANSITIONS, REQUEST_TRANSITIONS, BatchState, RequestState


def enqueue(session: Session, request: EditRequestRow, reason: str, run_id: str = "") -> EditRequestRow:
    """Add a new request in state pending (its first transition row records why)."""
    request.state = RequestState.PENDING.value
    request.state_reason = reason
    request.state_changed_at = utcnow()
    session.add(request)
    session.flush()
    session.add(
        RequestTransition(
            request_id=request.id, from_state=None, to_state=request.state, reason=reason, run_id=run_id, at=utcnow()
        )
    )
    return request


def move_request(
    session: Session,
    request: EditRequestRow,
    to: RequestState,
    reason: str,
    *,
    batch_id: int | None = None,
    run_id: str = "",
    at: datetime | None = None,
) -> None:
    current = RequestState(request.state)
    if to not in REQUEST_TRANSITIONS[current]:
        raise IllegalTransitionError(
            f"edit request {request.id} cannot go from {current.value} to {to.value}; "
            f"allowed: {', '.join(sorted(s.value for s in REQUEST_TRANSITIONS[current])) or 'none (final state)'}"
        )
    at = at or utcnow()
    request.state = to.value
    request.state_reason = reason
    request.state_changed_at = at
    if to is RequestState.CLAIMED:
        request.attempts += 1
    if to is not RequestState.CLAIMED:
        request.claimed_by = None
        request.lease_expires_at = None
    if batch_id is not None:
        request.batch_id = batch_id
    session.add(
        RequestTransition(
            request_id=request.id,
            from_state=current.value,
            to_state=to.value,
            reason=reason,
            batch_id=batch_id if batch_id is not None else request.batch_id,
            run_id=run_id,
            at=at,
        )
    )


def move_batch(session: Session, batch: Batch, to: BatchState, reason: str) -> None:
    current = BatchState(batch.state)
    if to not in BATCH_TRANSITIONS[current]:
        raise IllegalTransitionError(
            f"batch {batch.id} cannot go from {current.value} to {to.value}; "
            f"allowed: {', '.join(sorted(s.value for s in BATCH_TRANSITIONS[current])) or 'none (final state)'}"
        )
    batch.state = to.value
    batch.state_reason = reason
    if to is not BatchState.APPLIED:
        batch.finished_at = utcnow()
    session.add(batch)
