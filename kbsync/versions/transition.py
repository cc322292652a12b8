"""One owner for a batch's fate: publish the model as it now is as the current version, or
abandon it. apply, rollback and compact all end here, so the crash-safe order is written once.

    with BatchTransition(writer, batch_id, request_ids) as t:   the live model holds the log before
        ... put the candidate weights in the live model (store.push / store.materialise)
        t.publish(tag, reason, delta=..., record=...)           or t.abandon(reason, requeue=...)
    an exception before either: abandon (requests back to the queue), then the exception goes on

Publish, in this order; a kill between two steps leaves SQL naming only complete files, and
`registry.reconcile` removes the rest (and repoints `current`) on the next run:

    1. the batch's delta file, when it brings one                 crash point "delta_written"
    2. the weights' sha256; the version directory                  crash point "version_written"
    3. one transaction: `registry.promote`, the delta's row,       crash point "before_commit" first
       the flow's own rows (`record`)
    4. the store's `current` pointer                               crash point "committed" first

Abandon: the live model goes back to the log it had before; the batch row (if any) fails with
the reason; its requests go back to the queue (`requeue`) or fail, each with its own reason.

Crash points are fault injection for the kill tests (tests/sync/test_processes.py): the
process dies with SIGKILL at the point KBSYNC_CRASH_AT names.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sqlalchemy.orm import Session

from kbsync.editing.delta import Delta
from kbsync.logs import get_logger
from kbsync.store.events import record_event
from kbsync.store.models import Batch, EditRequestRow, ModelVersion
from kbsync.store.states import BatchState, RequestState
from kbsync.store.transitions import move_batch, move_request
from kbsync.versions import registry
from kbsync.versions.writer import ModelWriter

log = get_logger(__name__)

CRASH_ENV = "KBSYNC_CRASH_AT"
CRASH_POINTS = ("targets", "delta_written", "version_written", "before_commit", "committed")


def crash_point(name: str) -> None:
    """Die here (SIGKILL, no clean-up) when KBSYNC_CRASH_AT names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def crashing_in(name: str, check_stop: Callable[[], None]) -> Callable[[], None]:
    """`check_stop`, dying at its first call when KBSYNC_CRASH_AT names `name`: a kill in the middle
    of a computation, at a step it really reaches (a timer could fire after the batch committed)."""
    if os.environ.get(CRASH_ENV) != name:
        return check_stop

    def check() -> None:
        crash_point(name)
        check_stop()
    return check


@dataclass(frozen=True)
class Published:
    version_id: int
    weights_sha256: str
    path: Path | None
    delta_sha256: str | None


Record = Callable[[Session, ModelVersion], None]      # the flow's rows, in the promote's transaction
RecordFailure = Callable[[Session], None]             # ... in the abandon's transaction


class BatchTransition:
    def __init__(self, writer: ModelWriter, batch_id: int | None = None, request_ids: list[int] | None = None):
        self.writer, self.batch_id = writer, batch_id
        self.request_ids = list(request_ids or [])
        self.store = writer.context().store
        self.before = list(self.store.active)            # the log to go back to
        self.published: Published | None = None
        self.abandoned = False
        self.weights_sha256 = ""                     # set by publish before the flow's rows are written
        self.delta_sha256: str | None = None

    def __enter__(self) -> BatchTransition:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None or self.abandoned:
            return
        if self.published is not None or self._committed():
            return  # SQL names the new version; only the pointer may lag: `reconcile` repoints it
        reason = f"not applied: {type(exc).__name__}: {exc}"
        writer = self.writer

        def record(s: Session) -> None:  # the audit says why, not only the log
            record_event(s, "batch_failed", run_id=writer.run_id, config_hash=writer.config_hash,
                         batch_id=self.batch_id, ok=False, reason=reason, error=type(exc).__name__,
                         requeued=sorted(self.request_ids))

        self.abandon(reason, requeue=True, record=record)

    @property
    def log_ids(self) -> list[int]:
        return [b for b, _ in self.store.active]

    # --- publish -------------------------------------------------------------------------
    def publish(self, tag: str, reason: str, *, delta: Delta | None = None, record: Record | None = None) -> Published:
        """The live model becomes the current version: files, hash, directory, promote and the
        flow's rows in one transaction, then the pointer. `tag` prefixes the version's name."""
        store, writer = self.store, self.writer
        if delta is not None:
            assert self.batch_id is not None, "a delta belongs to a batch"
            self.delta_sha256 = delta.save(store.delta_path(self.batch_id))
            crash_point("delta_written")
        self.weights_sha256 = weights = store.weights_sha256()
        path = store.write_version(f"{tag}-{weights[:12]}") if self.log_ids else None  # the base: no directory
        crash_point("version_written")
        crash_point("before_commit")
        with writer.db.session() as s:
            version = registry.promote(s, writer.model_key, batch_ids=self.log_ids, weights_sha256=weights,
                                       path=path, reason=reason)
            if delta is not None:
                batch = s.get(Batch, self.batch_id)
                assert batch is not None
                batch.version_after_id = version.id
                registry.record_delta(batch, delta, store.delta_path(self.batch_id), self.delta_sha256 or "")  # type: ignore[arg-type]
            if record is not None:
                record(s, version)
            version_id = version.id
        crash_point("committed")
        writer.version_id = store.loaded.version_id = version_id
        self.published = Published(version_id, weights, path, self.delta_sha256)
        store.set_current(path)
        return self.published

    def _committed(self) -> bool:
        """True when SQL already names a version with this batch (a failure after the commit)."""
        if self.batch_id is None:
            return False
        with self.writer.db.session() as s:
            row = s.get(Batch, self.batch_id)
            return row is not None and row.version_after_id is not None

    # --- abandon -------------------------------------------------------------------------
    def abandon(self, reason: str, *, requeue: bool | Collection[int], per_request: dict[int, str] | None = None,
                metrics: dict | None = None, record: RecordFailure | None = None) -> None:
        """The live model back to the log before; the batch failed; its requests back to the queue
        (`requeue`: all, none, or those named) or failed, a request's own reason (`per_request`)
        after the batch's.

        The rows move even when the weights cannot be put back (the error is raised after them):
        a batch never stays `running`, nor its requests `claimed`, waiting for a lease to run out."""
        try:
            self.store.materialise(self.before)
            self.store.loaded.version_id = self.writer.version_id      # the version it was before
        except BaseException:    # the live weights are unknown: every run's open_current rebuilds them
            self._move_rows(reason, requeue, per_request, metrics, record)
            raise
        self._move_rows(reason, requeue, per_request, metrics, record)

    def _move_rows(self, reason: str, requeue: bool | Collection[int], per_request: dict[int, str] | None,
                   metrics: dict | None, record: RecordFailure | None) -> None:
        per_request = per_request or {}
        back = set(self.request_ids) if requeue is True else set() if requeue is False else set(requeue)
        writer = self.writer
        with writer.db.session() as s:
            if self.batch_id is not None:
                batch = s.get(Batch, self.batch_id)
                assert batch is not None
                if metrics is not None:
                    batch.metrics = metrics
                move_batch(s, batch, BatchState.FAILED, reason)
            for rid in self.request_ids:
                row = s.get(EditRequestRow, rid)
                assert row is not None
                why = f"batch {self.batch_id} {reason}" if self.batch_id is not None else reason
                if rid in back:
                    move_request(s, row, RequestState.PENDING, why, run_id=writer.run_id)
                else:
                    mine = per_request.get(rid)
                    own = f"; this edit: {mine}" if mine and mine != reason else ""  # said once
                    move_request(s, row, RequestState.FAILED, why + own, batch_id=self.batch_id, run_id=writer.run_id)
            if record is not None:
                record(s)
        self.abandoned = True
        log.warning("batch_abandoned", batch=self.batch_id, reason=reason, requeued=len(back))


__all__ = ["CRASH_POINTS", "BatchTransition", "Published", "crash_point", "crashing_in"]
