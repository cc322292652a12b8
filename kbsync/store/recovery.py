"""What a dead worker left behind, put right by the next holder of the model's lock.

    running batches of the model        -> failed ("stopped mid-batch (recovered)")
    claimed requests                    -> pending again, or failed as poison once they
                                           were recovered [editing] max_attempts times

The reaper (`store.queue.reap`, expired leases) uses the same return-or-poison rule. A
request "kills its worker" when its worker dies while holding it; the number of times that
happened is counted from `request_transitions` (claimed -> pending marked RECOVERED).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kbsync.store import holds
from kbsync.store.events import record_event
from kbsync.store.models import Batch, EditRequestRow, RequestTransition, utcnow
from kbsync.store.states import BatchState, RequestState
from kbsync.store.transitions import move_batch, move_request

RECOVERED = "(recovered)"  # the mark on a claimed -> pending move whose worker died


def recoveries(s: Session, request_id: int) -> int:
    """How often this request was taken back from a worker that died holding it."""
    return s.scalar(select(func.count()).select_from(RequestTransition).where(
        RequestTransition.request_id == request_id, RequestTransition.from_state == RequestState.CLAIMED.value,
        RequestTransition.to_state == RequestState.PENDING.value,
        RequestTransition.reason.like(f"%{RECOVERED}%"))) or 0


def return_or_poison(s: Session, row: EditRequestRow, why: str, max_attempts: int, run_id: str = "") -> bool:
    """Give a dead worker's claim back to the queue; True when it was failed as poison instead."""
    n = recoveries(s, row.id) + 1
    if n >= max_attempts:
        reason = (f"poison: {why}; its worker died {n} times while holding it ([editing] max_attempts "
                  f"{max_attempts}); fix the cause, then re-queue it")
        move_request(s, row, RequestState.FAILED, reason, run_id=run_id)
        holds.hold(s, subject=row.subject, relation=row.relation, content_hash=row.content_hash or "", kind="poison",
                   reason=reason, now=holds.Now("", None, "", utcnow()), request_id=row.id, run_id=run_id)
        return True
    move_request(s, row, RequestState.PENDING, f"{why} {RECOVERED}", run_id=run_id)
    return False


def recover_dead_worker(s: Session, model_key: str, max_attempts: int, run_id: str = "") -> tuple[int, int]:
    """Under the model's lock no other worker of it lives: (requests returned, requests poisoned)."""
    for batch in s.scalars(select(Batch).where(Batch.state == BatchState.RUNNING.value, Batch.model_key == model_key)):
        move_batch(s, batch, BatchState.FAILED, f"worker {batch.worker} stopped mid-batch {RECOVERED}")
        record_event(s, "batch_recovered", run_id=run_id, batch_id=batch.id, ok=False)
    returned = poisoned = 0
    for row in s.scalars(select(EditRequestRow).where(EditRequestRow.state == RequestState.CLAIMED.value)):
        if return_or_poison(s, row, f"worker {row.claimed_by} stopped", max_attempts, run_id):
            poisoned += 1
        else:
            returned += 1
    return returned, poisoned
