"""What every command shares: settings, run id, state directory, database."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kbsync.config import Settings
from kbsync.errors import StateError
from kbsync.store.db import Database, open_database


def ensure_state_dir(path: Path) -> Path:
    """Create the state directory if needed and prove it is writable (root ignores mode bits)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise StateError(
            f"state directory {path} is not writable ({exc.strerror or exc}); "
            "fix [state] dir (or KBSYNC_STATE__DIR) or its permissions"
        ) from exc
    return path


@dataclass
class App:
    settings: Settings
    run_id: str
    _db: Database | None = field(default=None, repr=False)

    @property
    def state_dir(self) -> Path:
        return ensure_state_dir(self.settings.state.dir)

    def database(self, require_current: bool = True) -> Database:
        """The database, refusing one behind its migrations unless asked not to."""
        if self._db is None:
            if not self.settings.database.url:
                _ = self.state_dir  # the default SQLite file lives there
            self._db = open_database(
                self.settings.database_url, self.settings.database.busy_timeout_s, require_current=require_current
            )
        elif require_current:
            self._db.check_current()
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()
            self._db = None


def worker_name() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"
