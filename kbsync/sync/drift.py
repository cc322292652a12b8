"""`kbsync verify`: the drift re-check of applied edits on the current model (one batch or all);
an edit that drifted is failed (verification/recheck.py judges it).
"""

from __future__ import annotations

from dataclasses import dataclass

from kbsync.errors import RollbackError
from kbsync.store.events import record_event
from kbsync.store.log import expand_compactions
from kbsync.verification.checks import Check
from kbsync.verification.recheck import recheck, record_rechecks
from kbsync.versions import registry
from kbsync.versions.writer import ModelWriter


@dataclass
class VerifyReport:
    checked: int
    still_hold: int
    failed: list[int]


def verify(writer: ModelWriter, batch_id: int | None = None, *, lock_wait_s: float = 0.0) -> VerifyReport:
    """Re-run the checks of verified edits (one batch or all) on the current model; drift fails them."""
    with writer.locked(lock_wait_s):
        with writer.db.session() as s:
            current = registry.current_version(s, writer.model_key)
            ids = list(current.batch_ids) if current else []
            live = set(ids) | set(expand_compactions(s, ids))
        if batch_id is not None:
            if batch_id not in live:
                raise RollbackError(f"batch {batch_id} is not part of the current model; see `kbsync audit`")
            ids = [batch_id]
        checks: list[Check] = []
        owner: dict[int, int] = {}
        if ids:                       # the base model has nothing to check: no model to load
            writer.open_current()
            checks, owner = recheck(writer, ids)
        with writer.db.session() as s:
            failed = record_rechecks(s, checks, owner, "verify", writer.version_id,
                                     "drift: the edit no longer holds", writer.run_id, writer.settings.verify)
            record_event(s, "verify", run_id=writer.run_id, config_hash=writer.config_hash, batches=ids,
                         checked=len(owner), failed=failed, ok=not failed)
    return VerifyReport(len(owner), len(owner) - len(failed), failed)
