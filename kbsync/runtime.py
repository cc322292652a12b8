"""What a running kbsync process shares, below both the CLI and the daemon: settings, run id,
state directory and database (`App`), the worker's name, and the two-stage stop (`Stop`).

Stopping (rq's warm and cold shutdown), one policy for `kbsync apply`, rollback and the daemon:

- first SIGTERM/SIGINT: finish the batch being computed, claim no other. Work that is not a
  batch (key statistics, reading the KB) has nothing to finish and stops at its next check.
- second: abort the batch at its next check; its requests go back to the queue (nothing of
  it was written, so nothing is lost).

The stop is explicit: code that may run for long calls the check it is given (`check_stop`,
passed down beside `progress`), which raises `Interrupted` when the stop applies to it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from kbsync.config import Settings
from kbsync.diskspace import disk_full, is_full
from kbsync.errors import StateError
from kbsync.logs import get_logger
from kbsync.store.db import Database, open_database

log = get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def ensure_state_dir(path: Path) -> Path:
    """Create the state directory if needed and prove it is writable (root ignores mode bits)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        if is_full(exc):
            raise disk_full(path, "making a file in the state directory") from None
        raise StateError(
            f"state directory {path} is not writable ({exc.strerror or exc}); "
            "fix [state] dir (or KBSYNC_STATE__DIR) or its permissions"
        ) from exc
    return path


@dataclass
class App:
    """The context every command and the daemon run in."""

    settings: Settings
    run_id: str
    _db: Database | None = field(default=None, repr=False)
    # status, audit and a read-only dashboard: they write nothing, so a state directory that cannot be
    # written (a mounted backup, a full disk) must not stop them; set before the first database()
    read_only: bool = False

    @property
    def state_dir(self) -> Path:
        if self.read_only:   # read as it is; a missing one has no database: "run `kbsync db upgrade`"
            return self.settings.state.dir
        return ensure_state_dir(self.settings.state.dir)

    def database(self, require_current: bool = True) -> Database:
        """The database, refusing one behind its migrations unless asked not to."""
        if self._db is None:
            if not self.settings.database.url:
                _ = self.state_dir  # the default SQLite file lives there
            self._db = open_database(
                self.settings.database_url, self.settings.database.busy_timeout_s, require_current=require_current,
                read_only=self.read_only,
            )
        elif require_current:
            self._db.check_current()
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()
            self._db = None


def worker_name() -> str:
    """host:pid, the name a worker claims requests under."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Interrupted(BaseException):
    """A stop signal, raised by a stop check: nothing of the current unit is written.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it; the
    apply worker gives an interrupted batch back to the queue."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process a signal ended."""
        return 128 + int(getattr(signal.Signals, self.signal_name, signal.SIGTERM))


class Stop:
    """The two-stage stop: `request` counts signals; the work loop and long computations check it."""

    def __init__(self, on_request: Callable[[int, str], None] | None = None) -> None:
        self.stage = 0              # 0 running, 1 finish the current batch, 2 abort it
        self.signal_name = ""
        self.on_request = on_request
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """Claim no further batch."""
        return self.stage >= 1

    def request(self, name: str) -> None:
        self.stage = min(self.stage + 1, 2)
        self.signal_name = name
        if self.stage == 1:
            log.warning("stop_requested", signal=name, then="finishing the current batch, then exit")
        else:
            log.warning("stop_now", signal=name, then="aborting the current batch; its requests go back to the queue")
        if self.on_request is not None:
            self.on_request(self.stage, name)

    def check_in_batch(self) -> None:
        """Inside a batch: only the second signal stops (raises Interrupted)."""
        if self.stage >= 2:
            raise Interrupted(self.signal_name)

    def check_outside_batch(self) -> None:
        """Work that is no batch (key statistics, reading the KB): the first signal stops."""
        if self.stage >= 1:
            raise Interrupted(self.signal_name)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request(signal.Signals(signum).name)

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[Stop]:
        """SIGTERM and SIGINT reach this stop for the duration (main thread only)."""
        previous = {sig: signal.signal(sig, self.on_signal) for sig in STOP_SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
