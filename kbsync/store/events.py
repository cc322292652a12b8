"""Append-only audit events: who/what/when, host, kbsync version, config hash."""

from __future__ import annotations

import getpass
import os
import socket
from typing import Any

from sqlalchemy.orm import Session

from kbsync import __version__
from kbsync.store.models import Event


def actor() -> str:
    try:
        return os.environ.get("KBSYNC_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def record_event(
    session: Session,
    kind: str,
    *,
    run_id: str,
    config_hash: str = "",
    batch_id: int | None = None,
    ok: bool = True,
    **details: Any,
) -> Event:
    event = Event(
        kind=kind,
        actor=actor(),
        host=socket.gethostname(),
        pid=os.getpid(),
        kbsync_version=__version__,
        config_hash=config_hash,
        run_id=run_id,
        batch_id=batch_id,
        ok=ok,
        details=details,
    )
    session.add(event)
    return event
