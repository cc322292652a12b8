"""Whether a model has room for more edits (`model_capacity`): `saturated` when the regression
gate refused a run's batches for lack of room and the run published nothing; `room` again when a
version is published. Status, the metrics and the dashboard show it with the headroom figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from kbsync.store.events import record_event
from kbsync.store.models import ModelCapacity, utcnow


@dataclass(frozen=True)
class Capacity:
    state: str              # room | saturated
    reason: str
    since: str              # ISO time the state began
    model_version_id: int | None

    @property
    def saturated(self) -> bool:
        return self.state == "saturated"


def read(s: Session, model_key: str) -> Capacity:
    row = s.get(ModelCapacity, model_key)
    if row is None:
        return Capacity("room", "", "", None)
    return Capacity(row.state, row.reason, row.since.isoformat() if row.since else "", row.model_version_id)


def mark(s: Session, model_key: str, state: str, reason: str, *, version_id: int | None, config_hash: str,
         run_id: str) -> bool:
    """Set the model's capacity; True (and a `capacity` event) when the state changed."""
    row = s.get(ModelCapacity, model_key)
    if row is None:
        row = ModelCapacity(model_key=model_key, state="room", reason="", config_hash=config_hash)
        s.add(row)
    changed = row.state != state
    if changed:
        row.since = utcnow()
    row.state, row.reason, row.model_version_id, row.config_hash = state, reason, version_id, config_hash
    row.updated_at = utcnow()
    if changed:
        record_event(s, "capacity", run_id=run_id, config_hash=config_hash, ok=state == "room", state=state,
                     reason=reason, model_version_id=version_id)
    return changed
