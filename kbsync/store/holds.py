"""Fact holds: why a fact the model disagrees on is not queued again, and until what changes.

    hold(s, request, kind, reason, ...)   place one (rolled_back | failed | poison | refused)
    waiting(s, subject, relation, hash, now=...)  at queue time (`kbsync diff`): the active hold that
                                          still holds the fact (None: queue it); holds whose
                                          condition changed lapse here, with what changed
    release(s, ...)                       an operator lets held facts be queued again (audited)

A `failed` or `refused` hold lapses when the KB value, the model version or the settings
changed since it was placed, and not before its back-off (`not_before`: [editing]
retry_backoff_s doubled for each failure of the fact in a row). `rolled_back` and `poison`
holds wait for an operator, or for the KB value to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kbsync.store.models import FactHold, ModelVersion, as_utc, utcnow

WAIT_FOR_CHANGE = ("failed", "refused")     # lapse once something changed (and the back-off is over)
WAIT_FOR_OPERATOR = ("rolled_back", "poison")
MAX_BACKOFF_DOUBLINGS = 10                   # 2^10 x the base back-off at most


@dataclass(frozen=True)
class Now:
    """What a hold is compared with: the model's current version and the settings in use."""

    model_key: str
    model_version_id: int | None
    config_hash: str
    at: datetime


def now_for(s: Session, model_key: str, config_hash: str, at: datetime | None = None) -> Now:
    version = s.scalars(select(ModelVersion.id).where(ModelVersion.is_current, ModelVersion.model_key == model_key)
                        ).first() if model_key else None
    return Now(model_key, version, config_hash, at or utcnow())


def active(s: Session, subject: str, relation: str) -> FactHold | None:
    return s.scalars(select(FactHold).where(FactHold.subject == subject, FactHold.relation == relation,
                                            FactHold.state == "active").order_by(FactHold.id.desc())).first()


def hold(s: Session, *, subject: str, relation: str, content_hash: str, kind: str, reason: str, now: Now,
         backoff_s: int = 0, request_id: int | None = None, batch_id: int | None = None, run_id: str = "") -> FactHold:
    """Place a hold (an active one of the same fact is replaced: the newest reason counts). For
    `failed` and `refused` holds, `failures` counts the fact's failures in a row (same KB content)
    and `not_before` is now + backoff_s x 2^(failures - 1)."""
    previous = active(s, subject, relation)
    failures = 1
    if previous is not None:
        if previous.kind in WAIT_FOR_CHANGE and previous.content_hash == content_hash:
            failures = previous.failures + 1
        _close(previous, "lapsed", f"replaced by a newer hold ({kind})", "")
    elif kind in WAIT_FOR_CHANGE:
        failures = 1 + (s.scalar(select(func.max(FactHold.failures)).where(
            FactHold.subject == subject, FactHold.relation == relation, FactHold.content_hash == content_hash,
            FactHold.kind.in_(WAIT_FOR_CHANGE), FactHold.state == "lapsed",
            FactHold.resolved_reason.not_like("the KB value changed%"))) or 0)
    not_before = None
    if kind in WAIT_FOR_CHANGE and backoff_s > 0:
        not_before = now.at + timedelta(seconds=backoff_s * 2 ** min(failures - 1, MAX_BACKOFF_DOUBLINGS))
    row = FactHold(subject=subject, relation=relation, content_hash=content_hash, kind=kind, reason=reason,
                   request_id=request_id, batch_id=batch_id, model_key=now.model_key,
                   model_version_id=now.model_version_id, config_hash=now.config_hash, failures=failures,
                   not_before=not_before, run_id=run_id, created_at=now.at)
    s.add(row)
    s.flush()
    return row


def changed(h: FactHold, now: Now) -> str:
    """What changed since a hold was placed that it waits for ('' when nothing did)."""
    if h.model_key and now.model_key and h.model_key != now.model_key:
        return "a new base model"
    if h.model_version_id != now.model_version_id:
        return f"the model version changed ({h.model_version_id or 'base'} -> {now.model_version_id or 'base'})"
    if h.config_hash and now.config_hash and h.config_hash != now.config_hash:
        return "the settings changed"
    return ""


def waiting(s: Session, subject: str, relation: str, content_hash: str, now: Now) -> FactHold | None:
    """The active hold that keeps this fact from the queue now, else None (a hold whose condition
    changed lapses here, with the reason)."""
    h = active(s, subject, relation)
    if h is None:
        return None
    if h.content_hash != content_hash:
        _close(h, "lapsed", "the KB value changed", "", now.at)
        return None
    if h.kind in WAIT_FOR_OPERATOR:
        return h
    what = changed(h, now)
    if not what:
        return h
    if h.not_before is not None and as_utc(h.not_before) > now.at:  # type: ignore[operator]
        return h
    _close(h, "lapsed", what, "", now.at)
    return None


def why_waiting(h: FactHold, now: Now) -> str:
    """One line for status, diff and the dashboard: what the hold waits for."""
    if h.kind == "rolled_back":
        return f"rolled back (batch {h.batch_id}): held until the KB value changes or `kbsync release`"
    if h.kind == "poison":
        return "poison: waits for an operator (`kbsync retry` or `kbsync release`)"
    what = "a compaction, new settings or a new base" if h.kind == "refused" else \
        "a new KB value, model version or settings"
    after = f", not before {as_utc(h.not_before):%Y-%m-%d %H:%M} UTC" if h.not_before else ""
    return f"{h.kind} {h.failures}x: waits for {what}{after}"


def release(s: Session, holds: Sequence[FactHold], by: str, why: str = "released by an operator") -> int:
    for h in holds:
        _close(h, "released", why, by)
    return len(holds)


def _close(h: FactHold, state: str, why: str, by: str, at: datetime | None = None) -> None:
    h.state, h.resolved_reason, h.resolved_by, h.resolved_at = state, why, by, at or utcnow()


def active_counts(s: Session) -> dict[str, int]:
    """Active holds by kind (every kind present)."""
    counts = dict(s.execute(select(FactHold.kind, func.count()).where(FactHold.state == "active")
                            .group_by(FactHold.kind)).all())
    return {kind: int(counts.get(kind, 0)) for kind in (*WAIT_FOR_OPERATOR, *WAIT_FOR_CHANGE)}
