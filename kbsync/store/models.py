"""SQLAlchemy 2.x models of the audit store (docs/audit-sql.md). Alembic's migrations create exactly this schema
(`tests/store/test_migrations.py` checks there is no autogenerate diff).

Constraints live in the schema: allowed states (CHECK), one open request per
(subject, relation, target) (a partial unique index), foreign keys.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kbsync.store.states import BatchState, RequestState, sql_in

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC instant that reads back with its zone on every database: SQLite stores datetimes
    without one, PostgreSQL as timestamptz. Same column type (no migration)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)


def as_utc(value: datetime | None) -> datetime | None:
    """An instant kbsync stored: naive ones (SQLite) are UTC by construction."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}


class KbFact(Base):
    """The last complete read of one (subject, relation) from the KB."""

    __tablename__ = "kb_facts"
    __table_args__ = (UniqueConstraint("subject", "relation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(64))
    relation: Mapped[str] = mapped_column(String(32))
    subject_label: Mapped[str] = mapped_column(Text)
    objects: Mapped[list[Any]] = mapped_column(JSON)          # acceptable object ids
    labels: Mapped[dict[str, Any]] = mapped_column(JSON)      # {subject_aliases, object_labels, object_aliases}
    content_hash: Mapped[str] = mapped_column(String(64))
    revision: Mapped[str | None] = mapped_column(String(64))
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_changed: Mapped[datetime] = mapped_column(default=utcnow)
    last_probed: Mapped[datetime | None] = mapped_column(nullable=True)
    # object id -> {status: current|ended|superseded, rank, start, end}: why these values
    why: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # A change waiting out [kb] settle_s: the new state's hash, since when the KB has shown
    # it, and its current values (id -> label). NULL when nothing is settling.
    settling_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    settling_since: Mapped[datetime | None] = mapped_column(nullable=True)
    settling_objects: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ModelVersion(Base):
    """A materialised model: base ⊕ the listed active deltas, in order."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_key: Mapped[str] = mapped_column(String(128), index=True)   # identity of the base model
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    batch_ids: Mapped[list[Any]] = mapped_column(JSON)                # active batches, in order
    weights_sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(Text, nullable=True)      # HF directory; NULL once pruned
    is_current: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str] = mapped_column(Text, default="")


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (CheckConstraint(f"state IN ({sql_in(BatchState)})", name="state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_key: Mapped[str] = mapped_column(String(128), index=True)
    state: Mapped[str] = mapped_column(String(16), default=BatchState.RUNNING.value)
    state_reason: Mapped[str] = mapped_column(Text, default="")
    algorithm: Mapped[str] = mapped_column(String(32))
    hparams: Mapped[dict[str, Any]] = mapped_column(JSON)
    n_edits: Mapped[int] = mapped_column(Integer)
    version_before_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    version_after_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    delta_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    delta_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    delta_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    delta_shapes: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    worker: Mapped[str] = mapped_column(String(128), default="")
    run_id: Mapped[str] = mapped_column(String(32), default="")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class EditRequestRow(Base):
    """One queued (subject, relation, target_new) edit and where it stands."""

    __tablename__ = "edit_requests"
    __table_args__ = (
        CheckConstraint(f"state IN ({sql_in(RequestState)})", name="state"),
        Index(
            "uq_edit_requests_open",
            "subject",
            "relation",
            "target_new",
            unique=True,
            sqlite_where=text("state IN ('pending', 'claimed')"),
            postgresql_where=text("state IN ('pending', 'claimed')"),
        ),
        Index("ix_edit_requests_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(64))
    relation: Mapped[str] = mapped_column(String(32))
    subject_label: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)                  # with "{}" for the subject
    target_new: Mapped[str] = mapped_column(Text)              # the KB's label
    target_new_id: Mapped[str] = mapped_column(String(64))     # the KB's object id
    target_old: Mapped[str] = mapped_column(Text)              # the stale answer the edit replaces
    # "kb": target_old is the most recently ended KB value; "model": the model's answer
    target_old_source: Mapped[str] = mapped_column(String(8), default="model", server_default="model")
    acceptable: Mapped[list[Any]] = mapped_column(JSON)        # labels + aliases of acceptable objects
    paraphrases: Mapped[list[Any]] = mapped_column(JSON)       # prompts with "{}"
    kb_revision: Mapped[str | None] = mapped_column(String(64), nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=RequestState.PENDING.value)
    state_reason: Mapped[str] = mapped_column(Text, default="")
    state_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), nullable=True)
    superseded_by: Mapped[int | None] = mapped_column(ForeignKey("edit_requests.id"), nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RequestTransition(Base):
    """Append-only: every state change of an edit request, with its reason."""

    __tablename__ = "request_transitions"
    __table_args__ = (
        CheckConstraint(f"to_state IN ({sql_in(RequestState)})", name="to_state"),
        Index("ix_request_transitions_request_id", "request_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("edit_requests.id"))
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), nullable=True)
    run_id: Mapped[str] = mapped_column(String(32), default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Probe(Base):
    """The model's answer to one fact's prompt at one moment."""

    __tablename__ = "probes"
    __table_args__ = (Index("ix_probes_subject_relation", "subject", "relation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(64))
    relation: Mapped[str] = mapped_column(String(32))
    prompt: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    agrees: Mapped[bool] = mapped_column(Boolean)
    kb_logprob: Mapped[float] = mapped_column(Float)
    answer_logprob: Mapped[float] = mapped_column(Float)
    content_hash: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    probed_at: Mapped[datetime] = mapped_column(default=utcnow)


CHECK_KINDS = ("efficacy", "efficacy_acc", "paraphrase", "paraphrase_acc", "held_out_acc", "neighbour", "neighbour_acc",
               "verdict")


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class EditCheck(Base):
    """One verification check of one edit: efficacy, accuracy, paraphrase or neighbour; and one
    `verdict` row per edit and check round saying which check decided (`expected`: that check's
    kind, or "passed"; `rival`: the reason; `passed`: the edit's verdict)."""

    __tablename__ = "edit_checks"
    __table_args__ = (
        CheckConstraint(f"kind IN ({_in(CHECK_KINDS)})", name="kind"),
        Index("ix_edit_checks_request_id", "request_id"),
        Index("ix_edit_checks_batch_id", "batch_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    request_id: Mapped[int] = mapped_column(ForeignKey("edit_requests.id"))
    phase: Mapped[str] = mapped_column(String(16))     # apply | verify | rollback
    kind: Mapped[str] = mapped_column(String(16))
    prompt: Mapped[str] = mapped_column(Text)
    expected: Mapped[str] = mapped_column(Text)        # the answer that must win
    rival: Mapped[str] = mapped_column(Text)           # the answer it must beat
    logprob_expected: Mapped[float] = mapped_column(Float)
    logprob_rival: Mapped[float] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean)
    run_id: Mapped[str] = mapped_column(String(32), default="")
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)


DAMAGE_STATES = ("open", "rolled_back", "requeued", "resolved")
DAMAGE_FOUND_BY = ("neighbour", "gate", "diff")
GATE_SCOPES = ("base", "version", "batch")
HOLD_KINDS = ("rolled_back", "failed", "poison", "refused")
HOLD_STATES = ("active", "released", "lapsed")
CAPACITY_STATES = ("room", "saturated")


class DamagedFact(Base):
    """A fact the model answered right before a batch and wrong after it, recorded against that batch.

    open: the batch is flagged, the fact is not queued as a KB disagreement while the batch is live;
    rolled_back: the batch was rolled back; requeued: a re-edit was queued (request_id);
    resolved: a later probe found the model right again."""

    __tablename__ = "damaged_facts"
    __table_args__ = (
        CheckConstraint(f"state IN ({_in(DAMAGE_STATES)})", name="state"),
        CheckConstraint(f"found_by IN ({_in(DAMAGE_FOUND_BY)})", name="found_by"),
        Index("ix_damaged_facts_batch_id", "batch_id"),
        Index("ix_damaged_facts_subject_relation", "subject", "relation"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    subject: Mapped[str] = mapped_column(String(64))
    relation: Mapped[str] = mapped_column(String(32))
    subject_label: Mapped[str] = mapped_column(Text, default="")
    prompt: Mapped[str] = mapped_column(Text)
    expected: Mapped[str] = mapped_column(Text)         # the KB answer the model gave before
    answer: Mapped[str] = mapped_column(Text)           # what it answers now
    found_by: Mapped[str] = mapped_column(String(16))   # neighbour | gate | diff
    state: Mapped[str] = mapped_column(String(16), default="open")
    request_id: Mapped[int | None] = mapped_column(ForeignKey("edit_requests.id"), nullable=True)  # the re-edit
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    run_id: Mapped[str] = mapped_column(String(32), default="")
    found_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(nullable=True)


class GateFigures(Base):
    """The regression gate's figures of one model state: the base model (measured once, with the
    fixed held-out texts and known facts in `details`), an existing version, or a batch's candidate."""

    __tablename__ = "gate_figures"
    __table_args__ = (
        CheckConstraint(f"scope IN ({_in(GATE_SCOPES)})", name="scope"),
        Index("ix_gate_figures_model_key", "model_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_key: Mapped[str] = mapped_column(String(128))
    setup: Mapped[str] = mapped_column(String(64))       # hash of the gate's fixed texts and facts
    scope: Mapped[str] = mapped_column(String(8))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), nullable=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    perplexity: Mapped[float | None] = mapped_column(Float, nullable=True)
    known_acc: Mapped[float | None] = mapped_column(Float, nullable=True)
    n_known: Mapped[int] = mapped_column(Integer, default=0)
    retention: Mapped[float | None] = mapped_column(Float, nullable=True)
    n_retention: Mapped[int] = mapped_column(Integer, default=0)
    passed: Mapped[bool] = mapped_column(Boolean, default=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    measured_at: Mapped[datetime] = mapped_column(default=utcnow)


class Event(Base):
    """Append-only audit log: who/what/when, host, kbsync version, config hash."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(48), index=True)
    actor: Mapped[str] = mapped_column(String(128))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    kbsync_version: Mapped[str] = mapped_column(String(32))
    config_hash: Mapped[str] = mapped_column(String(32))
    run_id: Mapped[str] = mapped_column(String(32))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), nullable=True)
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class SyncState(Base):
    """Small key/value facts about syncing (last complete read per source, rotating offset)."""

    __tablename__ = "sync_state"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class FollowedEntity(Base):
    """A watched item the change stream saw edited (issue 28): the newest revision seen and the
    one the snapshot holds; revision > done_revision: waiting to be fetched and diffed."""

    __tablename__ = "followed_entities"
    __table_args__ = (Index("ix_followed_entities_waiting", "revision", "done_revision"),)

    entity: Mapped[str] = mapped_column(String(64), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    done_revision: Mapped[int] = mapped_column(BigInteger, default=0)
    changed_at: Mapped[datetime | None] = mapped_column(nullable=True)  # the edit's time, from the event
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class FactHold(Base):
    """Why a fact the model disagrees on is not queued again (issue 25), until what changes:

    rolled_back  an operator rolled its edit back: held until the KB value changes or an operator
                 releases it (`kbsync release`, the dashboard)
    failed       its edit failed its own checks: waits for a change (KB value, model version,
                 settings), and then for `not_before` (back-off doubling with each failure)
    poison       its worker died with it [editing] max_attempts times: waits for an operator
    refused      the regression gate refused it for lack of room (the model is saturated): waits
                 for a compaction, new settings or a new base
    A hold is `active` until it is `released` (by an operator) or `lapsed` (what it waited for
    changed; `resolved_reason` says what)."""

    __tablename__ = "fact_holds"
    __table_args__ = (
        CheckConstraint(f"kind IN ({_in(HOLD_KINDS)})", name="kind"),
        CheckConstraint(f"state IN ({_in(HOLD_STATES)})", name="state"),
        Index("ix_fact_holds_subject_relation", "subject", "relation"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(64))
    relation: Mapped[str] = mapped_column(String(32))
    content_hash: Mapped[str] = mapped_column(String(64))     # the KB content it was placed for
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="active")
    reason: Mapped[str] = mapped_column(Text, default="")
    request_id: Mapped[int | None] = mapped_column(ForeignKey("edit_requests.id"), nullable=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), nullable=True)
    model_key: Mapped[str] = mapped_column(String(128), default="")
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    config_hash: Mapped[str] = mapped_column(String(32), default="")
    failures: Mapped[int] = mapped_column(Integer, default=1)  # failed/refused holds of this fact in a row
    not_before: Mapped[datetime | None] = mapped_column(nullable=True)
    run_id: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(nullable=True)
    resolved_reason: Mapped[str] = mapped_column(Text, default="")
    resolved_by: Mapped[str] = mapped_column(String(128), default="")


class ModelCapacity(Base):
    """Whether a model has room for more edits: `saturated` when the regression gate refused a
    run's batches for lack of room (known facts, perplexity or retention past their bounds), with
    the reason, the version and settings it was found on; `room` again after a compaction, new
    settings or a new base changed what the gate judges."""

    __tablename__ = "model_capacity"
    __table_args__ = (CheckConstraint(f"state IN ({_in(CAPACITY_STATES)})", name="state"),)

    model_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="room")
    reason: Mapped[str] = mapped_column(Text, default="")
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    config_hash: Mapped[str] = mapped_column(String(32), default="")
    since: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


SERVE_RELOAD_STATES = ("ok", "failed")


class ServeReload(Base):
    """One reload of the serving engine after a promote or a rollback ([serve], serving/reload.py):
    what was exported for it, how the engine was told, the outcome after `attempts` tries, and what
    the served model then answered on the version's edits (`agreed` of `probed`; null: not probed)."""

    __tablename__ = "serve_reloads"
    __table_args__ = (CheckConstraint(f"state IN ({_in(SERVE_RELOAD_STATES)})", name="state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_key: Mapped[str] = mapped_column(String(128), index=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    action: Mapped[str] = mapped_column(String(16))        # apply | rollback | compact | retry
    how: Mapped[str] = mapped_column(String(16))           # command | vllm
    export: Mapped[str] = mapped_column(String(8))         # gguf | lora | hf
    path: Mapped[str] = mapped_column(Text, default="")    # what the engine was given ("" : unload)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str] = mapped_column(Text, default="")  # the error, or the command's last output
    probed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    agreed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    run_id: Mapped[str] = mapped_column(String(32), default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)
