"""Audit views: the questions users ask of the audit trail, as SQL both databases run.

The migrations create them from these strings; `kbsync audit` (`audit_rows`) and docs/audit-sql.md's
examples read them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text

from kbsync.errors import SelectionError
from kbsync.store.db import Database
from kbsync.store.models import as_utc

VIEWS: dict[str, str] = {
    # Every state change of every request, newest last: "what happened to this fact?"
    "v_fact_history": """
        SELECT t.id AS transition_id, r.subject, r.relation, r.subject_label, r.id AS request_id,
               r.target_old, r.target_old_source, r.target_new, t.from_state, t.to_state, t.reason,
               t.batch_id, t.at
        FROM request_transitions t JOIN edit_requests r ON r.id = t.request_id
    """,
    # One row per edit of a batch: "what did batch N change?"
    "v_batch_changes": """
        SELECT b.id AS batch_id, b.state AS batch_state, b.algorithm, b.started_at, b.finished_at,
               r.id AS request_id, r.subject, r.subject_label, r.relation,
               r.target_old, r.target_new, r.state AS request_state,
               b.version_before_id, b.version_after_id, b.delta_sha256
        FROM batches b JOIN edit_requests r ON r.batch_id = b.id
    """,
    # Failed requests with the reason and their failing checks: "what failed and why?"
    "v_failed_edits": """
        SELECT r.id AS request_id, r.subject, r.subject_label, r.relation, r.target_new,
               r.target_old, r.state_reason AS reason, r.batch_id, r.state_changed_at AS failed_at,
               (SELECT COUNT(*) FROM edit_checks c
                 WHERE c.request_id = r.id AND c.batch_id = r.batch_id AND NOT c.passed) AS failed_checks
        FROM edit_requests r WHERE r.state = 'failed'
    """,
    # What the KB says now and why (rank, start, end of each current and stale value):
    # "why did kbsync pick this value?"
    "v_kb_values": """
        SELECT f.subject, f.relation, f.subject_label, f.objects, f.why, f.last_changed, f.last_seen,
               f.settling_since
        FROM kb_facts f
    """,
    # Changes waiting out [kb] settle_s: "what will be queued once it has held?"
    "v_settling_facts": """
        SELECT f.subject, f.relation, f.subject_label, f.objects AS objects_before,
               f.settling_objects, f.settling_since
        FROM kb_facts f WHERE f.settling_since IS NOT NULL
    """,
    # Facts a batch broke (answered right before it, wrong after): "what did batch N damage?"
    "v_batch_damage": """
        SELECT d.id AS damage_id, d.batch_id, b.state AS batch_state, d.subject, d.subject_label,
               d.relation, d.prompt, d.expected, d.answer, d.found_by, d.state, d.request_id,
               d.model_version_id, d.found_at, d.resolved_at
        FROM damaged_facts d JOIN batches b ON b.id = d.batch_id
    """,
    # The regression gate's figures per model state: "what did each batch do to the rest of the model?"
    "v_gate_figures": """
        SELECT g.id AS figures_id, g.model_key, g.scope, g.batch_id, g.model_version_id, g.perplexity,
               g.known_acc, g.n_known, g.retention, g.n_retention, g.passed, g.reason, g.measured_at
        FROM gate_figures g
    """,
    # Facts kbsync does not queue again, and until what: "why is this fact not being edited?"
    "v_fact_holds": """
        SELECT h.id AS hold_id, h.subject, h.relation, h.kind, h.state, h.reason, h.request_id, h.batch_id,
               h.model_version_id, h.failures, h.not_before, h.created_at, h.resolved_at, h.resolved_reason,
               h.resolved_by
        FROM fact_holds h
    """,
}


def create_statements() -> list[str]:
    return [f"CREATE VIEW {name} AS {sql.strip()}" for name, sql in VIEWS.items()]


def drop_statements() -> list[str]:
    return [f"DROP VIEW IF EXISTS {name}" for name in VIEWS]


BATCHES_SQL = """
    SELECT id AS batch_id, state, algorithm, n_edits, started_at, finished_at, state_reason
    FROM batches ORDER BY id
"""


def audit_query(subject: str | None, relation: str | None, batch: int | None,
                failed: bool, damage: bool = False, held: bool = False) -> tuple[str, str, str, dict[str, Any]]:
    """(kind, title, sql, params) of the view that answers the question the filters ask."""
    where, params = [], {}
    for column, value in (("subject", subject), ("relation", relation), ("batch_id", batch)):
        if value is not None:
            where.append(f"{column} = :{column}")
            params[column] = value
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    if damage:
        return ("damage", "facts batches damaged (right before, wrong after)",
                f"SELECT * FROM v_batch_damage{clause} ORDER BY batch_id, damage_id", params)
    if held:
        clause = clause + (" AND " if clause else " WHERE ") + "state = 'active'"
        return ("holds", "facts held from the queue, and until what",
                f"SELECT * FROM v_fact_holds{clause} ORDER BY hold_id", params)
    if failed:
        return "failed", "failed edits and why", f"SELECT * FROM v_failed_edits{clause} ORDER BY request_id", params
    if batch is not None and subject is None and relation is None:
        return ("batch", f"what batch {batch} changed",
                f"SELECT * FROM v_batch_changes{clause} ORDER BY request_id", params)
    if where:
        return ("history", "history of the fact(s)",
                f"SELECT * FROM v_fact_history{clause} ORDER BY at, transition_id", params)
    return "batches", "batches", BATCHES_SQL, params


def audit_rows(db: Database, subject: str | None = None, relation: str | None = None, batch: int | None = None,
               failed: bool = False, damage: bool = False, held: bool = False) -> tuple[str, str, list[dict[str, Any]]]:
    """(kind, title, rows) of the audit view the filters select."""
    kind, title, sql, params = audit_query(subject, relation, batch, failed, damage, held)
    with db.session() as s:
        if batch is not None and s.scalar(text("SELECT count(*) FROM batches WHERE id = :b"), {"b": batch}) == 0:
            raise SelectionError(f"there is no batch {batch}; `kbsync audit` lists the batches")
        rows = [{k: _utc(k, v) for k, v in r._mapping.items()} for r in s.execute(text(sql), params)]
    return kind, title, rows


def _utc(column: str, value: Any) -> Any:
    """Times print as ISO 8601 UTC with the zone on SQLite (stored naive) and PostgreSQL alike."""
    if column != "at" and not column.endswith("_at"):
        return value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if not isinstance(value, datetime):
        return value
    return as_utc(value).isoformat()  # type: ignore[union-attr]
