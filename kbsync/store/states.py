"""The states of an edit request and of a batch, and the only legal moves between them.

    pending ──claim──▶ claimed ──apply──▶ applied ──verify──▶ verified ──rollback──▶ rolled_back
       │  ▲               │                  │                   │
       │  └──lease expired┘ (reaper)         └──verify fails──▶ failed ◀─ drift check fails
       │     or worker died (recovery)                           ▲
       │                  └── its worker died [editing] max_attempts times (poison) ┘
       └──newer KB value──▶ superseded

Every change goes through `kbsync.store.transitions`, which checks this table and writes a
timestamped row with the reason; the database itself rejects unknown states (CHECK).
"""

from __future__ import annotations

from enum import StrEnum


class RequestState(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    APPLIED = "applied"
    VERIFIED = "verified"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    ROLLED_BACK = "rolled_back"


OPEN_REQUEST_STATES = (RequestState.PENDING, RequestState.CLAIMED)

REQUEST_TRANSITIONS: dict[RequestState, frozenset[RequestState]] = {
    RequestState.PENDING: frozenset({RequestState.CLAIMED, RequestState.SUPERSEDED, RequestState.FAILED}),
    RequestState.CLAIMED: frozenset({RequestState.PENDING, RequestState.APPLIED, RequestState.FAILED}),
    RequestState.APPLIED: frozenset({RequestState.VERIFIED, RequestState.FAILED, RequestState.ROLLED_BACK}),
    RequestState.VERIFIED: frozenset({RequestState.FAILED, RequestState.ROLLED_BACK, RequestState.VERIFIED}),
    RequestState.FAILED: frozenset({RequestState.PENDING}),  # an operator may re-queue a failed request
    RequestState.SUPERSEDED: frozenset(),
    RequestState.ROLLED_BACK: frozenset(),
}


class BatchState(StrEnum):
    RUNNING = "running"        # claimed requests, computing the update
    APPLIED = "applied"        # delta in the log, model version written, verification pending
    VERIFIED = "verified"      # passed its thresholds: part of the current model
    FAILED = "failed"          # below thresholds or crashed: reverted, not in the log
    ROLLED_BACK = "rolled_back"  # removed from the log by `kbsync rollback`


BATCH_TRANSITIONS: dict[BatchState, frozenset[BatchState]] = {
    BatchState.RUNNING: frozenset({BatchState.APPLIED, BatchState.FAILED}),
    BatchState.APPLIED: frozenset({BatchState.VERIFIED, BatchState.FAILED, BatchState.ROLLED_BACK}),
    BatchState.VERIFIED: frozenset({BatchState.ROLLED_BACK}),
    BatchState.FAILED: frozenset(),
    BatchState.ROLLED_BACK: frozenset(),
}


def sql_in(values: type[StrEnum]) -> str:
    """`'a', 'b', ...` for a CHECK constraint."""
    return ", ".join(f"'{v.value}'" for v in values)
