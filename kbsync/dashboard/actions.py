"""The dashboard's three actions, through the very functions the CLI commands call.

This is the dashboard's only door into kbsync/sync/: `kbsync rollback` → `rollback`,
`kbsync verify` → `verify`, `kbsync retry` → `retry_failed`. Each action also leaves a
`dashboard_action` event whose actor is the person who asked (the name typed in the form
and the client's address), beside the event the action itself records.

Actions run one at a time (a lock here; the model's writer lock against apply and the daemon).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbsync.config import Settings
from kbsync.errors import KbsyncError
from kbsync.logs import get_logger
from kbsync.store.db import Database
from kbsync.store.events import record_event

if TYPE_CHECKING:
    from kbsync.versions.writer import ModelWriter

log = get_logger(__name__)


@dataclass
class Outcome:
    ok: bool
    message: str


class Actions:
    def __init__(self, settings: Settings, db: Database, state_dir: Path, run_id: str) -> None:
        self.settings, self.db, self.state_dir, self.run_id = settings, db, state_dir, run_id
        self._one_at_a_time = threading.Lock()

    def _writer(self) -> ModelWriter:
        """What `kbsync rollback` and `kbsync verify` build (kbsync/cli/cmd_apply.py `_writer`)."""
        from kbsync.runtime import worker_name
        from kbsync.sync.from_settings import model_writer

        return model_writer(self.settings, self.db, self.state_dir, run_id=self.run_id, worker=worker_name())

    def rollback(self, batch_id: int, who: str) -> Outcome:
        from kbsync.sync.rollback import rollback

        def run() -> str:
            report = rollback(self._writer(), batch_id)
            return (f"rolled back batch {batch_id}: weights {report.weights_before[:12]} -> "
                    f"{report.weights_after[:12]}; {len(report.no_longer_hold)} remaining edits no longer hold")

        return self._run("rollback", who, run, batch_id=batch_id)

    def verify(self, batch_id: int | None, who: str) -> Outcome:
        from kbsync.sync.drift import verify

        def run() -> str:
            report = verify(self._writer(), batch_id)
            return f"checked {report.checked} edits: {report.still_hold} hold, {len(report.failed)} drifted"

        return self._run("verify", who, run, batch_id=batch_id)

    def retry(self, request_ids: list[int] | None, who: str) -> Outcome:
        from kbsync.sync.retry import retry_failed

        def run() -> str:
            report = retry_failed(self.db, request_ids, run_id=self.run_id, config_hash=self.settings.hash(),
                                  asked_by=who)
            return f"re-queued {len(report.requeued)} failed requests; {len(report.skipped)} left as they were"

        return self._run("retry", who, run, requests=len(request_ids) if request_ids is not None else "all")

    def _run(self, action: str, who: str, run, **details: Any) -> Outcome:  # type: ignore[no-untyped-def]
        with self._one_at_a_time:
            try:
                outcome = Outcome(True, run())
            except KbsyncError as exc:
                outcome = Outcome(False, exc.one_line())
            except Exception as exc:  # a bug or a crash: still shown, and still in the audit
                log.exception("dashboard_action_crashed", action=action)
                outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
        batch_id = details.pop("batch_id", None)
        with self.db.session() as s:
            event = record_event(s, "dashboard_action", run_id=self.run_id, config_hash=self.settings.hash(),
                                 batch_id=batch_id, ok=outcome.ok, action=action,
                                 result=outcome.message, **details)
            event.actor = who[:128]
        return outcome
