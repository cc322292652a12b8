"""`kbsync status` as data: a stable JSON object (its keys are documented in docs/reference.md).

SQL only, so it sits below `versions/`: it reads the current version of each model
(`versions.registry.promote` is the only writer of `is_current`). `current_model_version` is
the given model's, else the only model's; `current_model_versions` lists every model's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kbsync import __version__
from kbsync.config import GateSettings, mask_url
from kbsync.store import capacity, holds
from kbsync.store.db import Database, current_revision, head_revision
from kbsync.store.log import expand_compactions
from kbsync.store.models import (
    DAMAGE_STATES,
    Batch,
    DamagedFact,
    EditRequestRow,
    Event,
    GateFigures,
    KbFact,
    ModelCapacity,
    ModelVersion,
    ServeReload,
)
from kbsync.store.states import BatchState, RequestState

RUN_KINDS = ("diff", "apply", "rollback", "compact", "verify", "tick")


def status(db: Database, model_key: str | None = None, gate: GateSettings | None = None) -> dict[str, Any]:
    """`gate` ([gate] settings) gives the headroom its floor and ceiling; without it they are null."""
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
        last_outage = s.scalars(select(Event).where(Event.kind == "database_outage").order_by(Event.id.desc())).first()
        last_ok_tick = s.scalars(
            select(Event).where(Event.kind == "tick", Event.ok).order_by(Event.id.desc())
        ).first()
        facts = s.scalar(select(func.count()).select_from(KbFact)) or 0
        key = version.model_key if version is not None else model_key or _only_model(s, currents)
        figures = _gate(s, version, key)
        damage = _damage(s)
        room = _capacity(s, key, version, figures, gate)
        held = holds.active_counts(s)
        serving = _serving(s, key)
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
        "gate": figures,
        "capacity": room,
        "holds": held,
        "damage": damage,
        "serving": serving,
        "last_run": _event(last_run),
        "last_tick": _event(last_tick),
        "last_successful_tick_at": last_ok_tick.at.isoformat() if last_ok_tick else None,
        "last_database_outage": last_outage.details if last_outage else None,   # since, until, seconds, reason
    }


def _serving(s: Session, model_key: str | None) -> dict[str, Any] | None:
    """The latest reload of the serving engine ([serve]), and the latest successful one; null: none yet."""
    q = select(ServeReload).order_by(ServeReload.id.desc())
    if model_key is not None:
        q = q.where(ServeReload.model_key == model_key)
    last = s.scalars(q).first()
    if last is None:
        return None
    ok = last if last.state == "ok" else s.scalars(q.where(ServeReload.state == "ok")).first()
    return {"last": _reload(last), "last_ok": _reload(ok)}


def _reload(row: ServeReload | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"id": row.id, "model_version_id": row.model_version_id, "action": row.action, "how": row.how,
            "export": row.export, "path": row.path, "state": row.state, "attempts": row.attempts,
            "detail": row.detail, "probed": row.probed, "agreed": row.agreed, "at": row.at.isoformat()}


def _version(version: ModelVersion | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return {"id": version.id, "model_key": version.model_key, "batch_ids": version.batch_ids,
            "weights_sha256": version.weights_sha256, "path": version.path,
            "created_at": version.created_at.isoformat()}


def _gate(s: Session, version: ModelVersion | None, model_key: str | None) -> dict[str, Any]:
    """The regression gate's figures of the base model and of the current version (null: not measured)."""
    key = version.model_key if version is not None else model_key
    base = None if key is None else s.scalars(
        select(GateFigures).where(GateFigures.model_key == key, GateFigures.scope == "base")
        .order_by(GateFigures.id.desc())).first()
    current = None if version is None else s.scalars(
        select(GateFigures).where(GateFigures.model_version_id == version.id).order_by(GateFigures.id.desc())).first()
    last_refused = s.scalars(select(GateFigures).where(GateFigures.scope == "batch", GateFigures.passed.is_(False))
                             .order_by(GateFigures.id.desc())).first()
    return {"base": _figures(base), "current": _figures(current), "last_refused": _figures(last_refused)}


def _only_model(s: Session, currents: list[ModelVersion]) -> str | None:
    """The one model this database edits (by its versions, else its capacity rows), if there is one."""
    keys = {v.model_key for v in currents} or set(s.scalars(select(ModelCapacity.model_key)))
    return next(iter(keys)) if len(keys) == 1 else None


def _capacity(s: Session, model_key: str | None, version: ModelVersion | None, figures: dict[str, Any],
              bounds: GateSettings | None) -> dict[str, Any]:
    """The model's room for more edits: `saturated` (with why and since) or `room`, and the headroom:
    the current version's known-fact accuracy against its floor, perplexity against its ceiling
    (the base's figures and [gate]'s bounds), retention, and the edits the version holds."""
    cap = capacity.read(s, model_key) if model_key else capacity.Capacity("room", "", "", None)
    base, now = figures["base"] or {}, figures["current"] or figures["base"] or {}
    known_floor = ppl_ceiling = None
    if bounds is not None and base.get("known_acc") is not None:
        known_floor = max(0.0, base["known_acc"] - bounds.max_known_drop_base)
    if bounds is not None and base.get("perplexity") is not None:
        ppl_ceiling = base["perplexity"] * (1 + bounds.max_perplexity_rise_base)
    log = expand_compactions(s, list(version.batch_ids)) if version is not None else []
    edits = s.scalar(select(func.count()).select_from(EditRequestRow).where(
        EditRequestRow.batch_id.in_(log), EditRequestRow.state == RequestState.VERIFIED.value)) if log else 0
    return {"state": cap.state, "reason": cap.reason or None, "since": cap.since or None,
            "headroom": {"known_acc": now.get("known_acc"), "known_acc_floor": known_floor,
                         "perplexity": now.get("perplexity"), "perplexity_ceiling": ppl_ceiling,
                         "retention": now.get("retention"),
                         "retention_floor": bounds.min_retention if bounds is not None else None,
                         "edits_applied": edits or 0}}


def _figures(row: GateFigures | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"perplexity": row.perplexity, "known_acc": row.known_acc, "n_known": row.n_known,
            "retention": row.retention, "n_retention": row.n_retention, "batch_id": row.batch_id,
            "model_version_id": row.model_version_id, "passed": row.passed, "reason": row.reason,
            "measured_at": row.measured_at.isoformat()}


def _damage(s: Session) -> dict[str, Any]:
    """Damaged facts by state, and the applied batches flagged with open damage (batch id -> facts)."""
    states = {state: 0 for state in DAMAGE_STATES}
    for state, count in s.execute(select(DamagedFact.state, func.count()).group_by(DamagedFact.state)):
        states[state] = count
    flagged = s.execute(select(DamagedFact.batch_id, func.count()).join(Batch, Batch.id == DamagedFact.batch_id)
                        .where(DamagedFact.state == "open", Batch.state == BatchState.VERIFIED.value)
                        .group_by(DamagedFact.batch_id).order_by(DamagedFact.batch_id))
    return {"facts": states, "flagged_batches": {str(b): n for b, n in flagged}}


def _event(event: Event | None) -> dict[str, Any] | None:
    if event is None:
        return None
    return {"kind": event.kind, "at": event.at.isoformat(), "ok": event.ok, "run_id": event.run_id}
