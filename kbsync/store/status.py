"""`kbsync status` as data: a stable JSON object (its keys are documented in README.md).

SQL only, so it sits below `versions/`: it reads the current version of each model
(`versions.registry.promote` is the only writer of `is_current`). `current_model_version` is
the given model's, else the only model's; `current_model_versions` lists every model's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from kbsync import __version__
from kbsync.config import mask_url
from kbsync.store.db import Database, current_revision, head_revision
from kbsync.store.models import Batch, EditRequestRow, Event, KbFact, ModelVersion
from kbsync.store.states import BatchState, RequestState

RUN_KINDS = ("diff", "apply", "rollback", "compact", "verify", "tick")


def status(db: Database, model_key: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"current": current_revision(db.engine), "head": head_revision()}
    schema["up_to_date"] = schema["current"] == schema["head"]
    with db.session() as s:
        queue = {state.value: 0 for state in RequestState}
        for state, count in s.execute(select(EditRequestRow.state, func.count()).group_by(EditRequestRow.state)):
            queue[state] = count
        batches = {state.value: 0 for state in BatchState}
        for state, count in s.execute(select(Batch.state, func.count()).group_by(Batch.state)):
            batches[state] = count
        currents = list(s.scalars(select(ModelVersion).where(ModelVersion.is_current).order_by(ModelVersion.id)))
        mine = [v for v in currents if model_key is None or v.model_key == model_key]
        version = mine[0] if len(mine) == 1 else None
        last_run = s.scalars(select(Event).where(Event.kind.in_(RUN_KINDS)).order_by(Event.id.desc())).first()
        last_tick = s.scalars(select(Event).where(Event.kind == "tick").order_by(Event.id.desc())).first()
        last_ok_tick = s.scalars(
            select(Event).where(Event.kind == "tick", Event.ok).order_by(Event.id.desc())
        ).first()
        facts = s.scalar(select(func.count()).select_from(KbFact)) or 0
        settling = [
            {"subject": f.subject, "relation": f.relation, "subject_label": f.subject_label,
             "objects_before": f.objects, "objects_new": f.settling_objects,
             "since": f.settling_since.isoformat() if f.settling_since else None}
            for f in s.scalars(
                select(KbFact).where(KbFact.settling_since.is_not(None)).order_by(KbFact.settling_since)
            )
        ]
    return {
        "kbsync_version": __version__,
        "database": mask_url(db.url),
        "schema": schema,
        "kb_facts": facts,
        "settling": settling,
        "queue": queue,
        "batches": batches,
        "current_model_version": _version(version),
        "current_model_versions": [_version(v) for v in currents],
        "last_run": _event(last_run),
        "last_tick": _event(last_tick),
        "last_successful_tick_at": last_ok_tick.at.isoformat() if last_ok_tick else None,
    }


def _version(version: ModelVersion | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return {"id": version.id, "model_key": version.model_key, "batch_ids": version.batch_ids,
            "weights_sha256": version.weights_sha256, "path": version.path,
            "created_at": version.created_at.isoformat()}


def _event(event: Event | None) -> dict[str, Any] | None:
    if event is None:
        return None
    return {"kind": event.kind, "at": event.at.isoformat(), "ok": event.ok, "run_id": event.run_id}
