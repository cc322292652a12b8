"""kb time: why a value is current, settling changes, where target_old came from

kb_facts.why / settling_hash / settling_since / settling_objects (issue 10: the snapshot
records what was current and why; [kb] settle_s), edit_requests.target_old_source
("kb": the most recently ended KB value, "model": the model's answer), the views
v_kb_values and v_settling_facts, and v_fact_history with target_old_source; edit_checks
admits the kind 'paraphrase_acc' (the greedy answer to a paraphrase names the new value).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copies of kbsync/store/views.py at this revision.
FACT_HISTORY_0001 = """
        SELECT t.id AS transition_id, r.subject, r.relation, r.subject_label, r.id AS request_id,
               r.target_old, r.target_new, t.from_state, t.to_state, t.reason,
               t.batch_id, t.at
        FROM request_transitions t JOIN edit_requests r ON r.id = t.request_id
    """
FAILED_EDITS = """
        SELECT r.id AS request_id, r.subject, r.subject_label, r.relation, r.target_new,
               r.target_old, r.state_reason AS reason, r.batch_id, r.state_changed_at AS failed_at,
               (SELECT COUNT(*) FROM edit_checks c
                 WHERE c.request_id = r.id AND c.batch_id = r.batch_id AND NOT c.passed) AS failed_checks
        FROM edit_requests r WHERE r.state = 'failed'
    """
KINDS_0001 = "kind IN ('efficacy', 'efficacy_acc', 'paraphrase', 'neighbour')"
KINDS = "kind IN ('efficacy', 'efficacy_acc', 'paraphrase', 'paraphrase_acc', 'neighbour')"
VIEWS = {
    "v_fact_history": """
        SELECT t.id AS transition_id, r.subject, r.relation, r.subject_label, r.id AS request_id,
               r.target_old, r.target_old_source, r.target_new, t.from_state, t.to_state, t.reason,
               t.batch_id, t.at
        FROM request_transitions t JOIN edit_requests r ON r.id = t.request_id
    """,
    "v_kb_values": """
        SELECT f.subject, f.relation, f.subject_label, f.objects, f.why, f.last_changed, f.last_seen,
               f.settling_since
        FROM kb_facts f
    """,
    "v_settling_facts": """
        SELECT f.subject, f.relation, f.subject_label, f.objects AS objects_before,
               f.settling_objects, f.settling_since
        FROM kb_facts f WHERE f.settling_since IS NOT NULL
    """,
}


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_fact_history")  # SQLite's batch mode rebuilds tables a view reads
    with op.batch_alter_table("kb_facts") as batch:
        batch.add_column(sa.Column("why", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("settling_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("settling_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("settling_objects", sa.JSON(), nullable=True))
    with op.batch_alter_table("edit_requests") as batch:
        batch.add_column(sa.Column("target_old_source", sa.String(length=8), server_default="model", nullable=False))
    _check_kinds(KINDS)
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql.strip()}")


def _check_kinds(condition: str) -> None:
    op.execute("DROP VIEW IF EXISTS v_failed_edits")
    with op.batch_alter_table("edit_checks") as batch:
        batch.drop_constraint(op.f("ck_edit_checks_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_edit_checks_kind"), condition)
    op.execute(f"CREATE VIEW v_failed_edits AS {FAILED_EDITS.strip()}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    with op.batch_alter_table("edit_requests") as batch:
        batch.drop_column("target_old_source")
    with op.batch_alter_table("kb_facts") as batch:
        batch.drop_column("settling_objects")
        batch.drop_column("settling_since")
        batch.drop_column("settling_hash")
        batch.drop_column("why")
    op.execute("DELETE FROM edit_checks WHERE kind = 'paraphrase_acc'")
    _check_kinds(KINDS_0001)
    op.execute(f"CREATE VIEW v_fact_history AS {FACT_HISTORY_0001.strip()}")
