"""The dashboard's four actions, through the very functions the CLI commands call.

This is the dashboard's only door into kbsync/sync/: `kbsync rollback` → `rollback`,
`kbsync verify` → `verify`, `kbsync retry` → `retry_failed`, `kbsync release` → `release_holds`. Each action also leaves a
`dashboard_action` event whose actor is the name of the token that asked ([dashboard] tokens;
the one unnamed [dashboard] token is "operator"), with the client's address in its details,
beside the event the action itself records.

Actions run one at a time (a lock here; the model's writer lock against apply and the daemon).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbsync.config import Settings
from kbsync.errors import KbsyncError, RollbackError, SelectionError
from kbsync.logs import get_logger
from kbsync.store.db import Database
from kbsync.store.events import record_event
from kbsync.store.models import Batch

if TYPE_CHECKING:
    from kbsync.versions.writer import ModelWriter

log = get_logger(__name__)


@dataclass
class Outcome:
    ok: bool
    message: str
    status: int = 200       # what the page answers: 200 done, 404 no such batch, 409 refused or failed


@dataclass(frozen=True)
class Asker:
    """Who asked for an action: the token's name (the audit's actor) and the client's address."""

    name: str
    client: str

    @property
    def asked_by(self) -> str:
        return f"{self.name} (dashboard, {self.client})"


class Actions:
    def __init__(self, settings: Settings, db: Database, state_dir: Path, run_id: str) -> None:
        self.settings, self.db, self.state_dir, self.run_id = settings, db, state_dir, run_id
        self._one_at_a_time = threading.Lock()

    def _writer(self) -> ModelWriter:
        """What `kbsync rollback` and `kbsync verify` build (kbsync/cli/cmd_apply.py `_writer`)."""
        from kbsync.runtime import worker_name
        from kbsync.sync.from_settings import model_writer

        return model_writer(self.settings, self.db, self.state_dir, run_id=self.run_id, worker=worker_name())

    def rollback(self, batch_id: int, who: Asker) -> Outcome:
        from kbsync.sync.rollback import rollback

        def run() -> str:
            report = rollback(self._writer(), batch_id)
            return (f"rolled back batch {batch_id}: weights {report.weights_before[:12]} -> "
                    f"{report.weights_after[:12]}; {len(report.no_longer_hold)} remaining edits no longer hold")

        return self._run("rollback", who, run, batch_id=batch_id)

    def verify(self, batch_id: int | None, who: Asker) -> Outcome:
        from kbsync.sync.drift import verify

        def run() -> str:
            report = verify(self._writer(), batch_id)
            return f"checked {report.checked} edits: {report.still_hold} hold, {len(report.failed)} drifted"

        return self._run("verify", who, run, batch_id=batch_id)

    def retry(self, request_ids: list[int] | None, who: Asker) -> Outcome:
        from kbsync.sync.retry import retry_failed

        def run() -> str:
            report = retry_failed(self.db, request_ids, run_id=self.run_id, config_hash=self.settings.hash(),
                                  asked_by=who.asked_by)
            return f"re-queued {len(report.requeued)} failed requests; {len(report.skipped)} left as they were"

        return self._run("retry", who, run, requests=len(request_ids) if request_ids is not None else "all")

    def release(self, subject: str, relation: str, who: Asker) -> Outcome:
        """`kbsync release SUBJECT RELATION`: the fact's hold ends; the next diff may queue it."""
        from kbsync.sync.retry import release_holds

        def run() -> str:
            report = release_holds(self.db, facts=[(subject, relation)], run_id=self.run_id,
                                   config_hash=self.settings.hash(), asked_by=who.asked_by)
            if not report.released:
                raise SelectionError(f"{subject} {relation} is not held: nothing was released")
            kinds = ", ".join(r["kind"].replace("_", " ") for r in report.released)
            return (f"released {subject} {relation} ({kinds}): the next diff queues it again if the model "
                    "still disagrees with the KB")

        return self._run("release", who, run, subject=subject, relation=relation)

    def _run(self, action: str, who: Asker, run, **details: Any) -> Outcome:  # type: ignore[no-untyped-def]
        batch_id = details.pop("batch_id", None)
        with self._one_at_a_time:
            with self.db.session() as s:
                known = batch_id is None or s.get(Batch, batch_id) is not None
            try:
                if not known:   # refused before anything loads; the same words as `kbsync rollback 999`
                    raise RollbackError(f"there is no batch {batch_id}; list batches with `kbsync audit`")
                outcome = Outcome(True, run())
            except KbsyncError as exc:
                outcome = Outcome(False, exc.one_line(), 409 if known else 404)
            except Exception as exc:  # a bug or a crash: still shown, and still in the audit
                log.exception("dashboard_action_crashed", action=action)
                outcome = Outcome(False, f"{type(exc).__name__}: {exc}", 500)
        if not known:   # an event may only name a batch that exists (a foreign key): keep the number
            details["asked_batch"] = batch_id
        with self.db.session() as s:
            event = record_event(s, "dashboard_action", run_id=self.run_id, config_hash=self.settings.hash(),
                                 batch_id=batch_id if known else None, ok=outcome.ok, action=action,
                                 result=outcome.message, client=who.client, **details)
            event.actor = who.name[:128]
        return outcome
