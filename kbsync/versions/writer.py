"""Taking over one model for writing: what apply, rollback and verify share, by composition.

    with writer.locked(wait_s) as recovered:   the model's lock, then what a dead worker left
        (validate the arguments in SQL)         no model loaded yet: bad input fails in ms
        ctx = writer.open_current()             load the model, reconcile files, base ⊕ current

The model is loaded only when a job has work for it (`open_current`), so a second writer
or a rollback of a batch that does not exist fails before the ~30 s the model takes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kbsync.config import Settings
from kbsync.logs import get_logger
from kbsync.runtime import Stop
from kbsync.store.db import Database
from kbsync.store.recovery import recover_dead_worker
from kbsync.versions import registry
from kbsync.versions.context import EditingContext

log = get_logger(__name__)


@dataclass
class Recovered:
    returned: int = 0     # claims of a dead worker given back to the queue
    poisoned: int = 0     # ... failed as poison ([editing] max_attempts)


@dataclass
class ModelWriter:
    settings: Settings
    db: Database
    state_dir: Path
    model_key: str
    load: Callable[[], EditingContext]           # the model, loaded on first use
    run_id: str = ""
    worker: str = ""
    stop: Stop = field(default_factory=Stop)
    version_id: int | None = None                # the current version, once open_current ran
    _ctx: EditingContext | None = field(default=None, repr=False)

    @property
    def config_hash(self) -> str:
        return self.settings.hash()

    @contextlib.contextmanager
    def locked(self, wait_s: float = 0.0) -> Iterator[Recovered]:
        with registry.writer_lock(self.db, self.model_key, self.state_dir, wait_s):
            with self.db.session() as s:
                returned, poisoned = recover_dead_worker(s, self.model_key, self.settings.editing.max_attempts,
                                                         self.run_id)
            if returned or poisoned:
                log.warning("recovered", requests=returned, poisoned=poisoned)
            yield Recovered(returned, poisoned)

    def context(self) -> EditingContext:
        if self._ctx is None:
            self._ctx = self.load()
        return self._ctx

    def open_current(self) -> EditingContext:
        """Load the model (once), remove files no SQL row names, materialise the current version."""
        ctx = self.context()
        removed = registry.reconcile(self.db, ctx.store)
        if removed:
            log.warning("reconciled", removed_files=[str(p) for p in removed])
        self.version_id = registry.load_current(self.db, ctx.store)
        return ctx
