"""Named locks: a second holder is refused with a LockedError that names the first (pid, host, since)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from kbsync.errors import LockedError
from kbsync.store import db as store_db
from kbsync.store.locks import held_lock


# flock is per open file and advisory locks per session: a second taker in this process is refused too.
def test_second_holder_is_refused_and_told_who_holds_it(migrated: store_db.Database, tmp_path: Path) -> None:
    with held_lock(migrated, "writer:m", tmp_path, what="the test lock"):
        with pytest.raises(LockedError) as refused:
            with held_lock(migrated, "writer:m", tmp_path, what="the test lock"):
                pass
    message = str(refused.value)
    assert message.startswith("the test lock is held by another kbsync process (pid ")
    assert f"(pid {os.getpid()} on {socket.gethostname()[:10]}" in message
    with held_lock(migrated, "writer:m", tmp_path):   # released: free again
        pass
