"""per-edit verdicts, fact holds and model capacity (issues 24, 25)

edit_checks: two more kinds, neighbour_acc (a neighbour's greedy answer still names its KB
value) and verdict (one row per edit and check round: which check decided); fact_holds: why a
fact is not queued again, until what changes (rolled back, failed with back-off, poison, refused
by a saturated model); model_capacity: whether the model has room for more edits; the view
v_fact_holds.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OLD_KINDS = "kind IN ('efficacy', 'efficacy_acc', 'paraphrase', 'paraphrase_acc', 'neighbour')"
NEW_KINDS = ("kind IN ('efficacy', 'efficacy_acc', 'paraphrase', 'paraphrase_acc', 'neighbour', 'neighbour_acc', "
             "'verdict')")

# Frozen copies of kbsync/store/views.py at this revision (SQLite rebuilds edit_checks to change its
# CHECK: the views are dropped first and created again after).
VIEWS_BEFORE = {
    "v_fact_history": """
        SELECT t.id AS transition_id, r.subject, r.relation, r.subject_label, r.id AS request_id,
               r.target_old, r.target_old_source, r.target_new, t.from_state, t.to_state, t.reason,
               t.batch_id, t.at
        FROM request_transitions t JOIN edit_requests r ON r.id = t.request_id
    """,
    "v_batch_changes": """
        SELECT b.id AS batch_id, b.state AS batch_state, b.algorithm, b.started_at, b.finished_at,
               r.id AS request_id, r.subject, r.subject_label, r.relation,
               r.target_old, r.target_new, r.state AS request_state,
               b.version_before_id, b.version_after_id, b.delta_sha256
        FROM batches b JOIN edit_requests r ON r.batch_id = b.id
    """,
    "v_failed_edits": """
        SELECT r.id AS request_id, r.subject, r.subject_label, r.relation, r.target_new,
               r.target_old, r.state_reason AS reason, r.batch_id, r.state_changed_at AS failed_at,
               (SELECT COUNT(*) FROM edit_checks c
                 WHERE c.request_id = r.id AND c.batch_id = r.batch_id AND NOT c.passed) AS failed_checks
        FROM edit_requests r WHERE r.state = 'failed'
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
    "v_batch_damage": """
        SELECT d.id AS damage_id, d.batch_id, b.state AS batch_state, d.subject, d.subject_label,
               d.relation, d.prompt, d.expected, d.answer, d.found_by, d.state, d.request_id,
               d.model_version_id, d.found_at, d.resolved_at
        FROM damaged_facts d JOIN batches b ON b.id = d.batch_id
    """,
    "v_gate_figures": """
        SELECT g.id AS figures_id, g.model_key, g.scope, g.batch_id, g.model_version_id, g.perplexity,
               g.known_acc, g.n_known, g.retention, g.n_retention, g.passed, g.reason, g.measured_at
        FROM gate_figures g
    """,
}
VIEW_ADDED = {"v_fact_holds": """
        SELECT h.id AS hold_id, h.subject, h.relation, h.kind, h.state, h.reason, h.request_id, h.batch_id,
               h.model_version_id, h.failures, h.not_before, h.created_at, h.resolved_at, h.resolved_reason,
               h.resolved_by
        FROM fact_holds h
    """}


def upgrade() -> None:
    for name in VIEWS_BEFORE:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    with op.batch_alter_table("edit_checks", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_edit_checks_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_edit_checks_kind"), NEW_KINDS)
    op.create_table(
        "fact_holds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("relation", sa.String(length=32), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("model_key", sa.String(length=128), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("config_hash", sa.String(length=32), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_reason", sa.Text(), nullable=False),
        sa.Column("resolved_by", sa.String(length=128), nullable=False),
        sa.CheckConstraint("kind IN ('rolled_back', 'failed', 'poison', 'refused')", name=op.f("ck_fact_holds_kind")),
        sa.CheckConstraint("state IN ('active', 'released', 'lapsed')", name=op.f("ck_fact_holds_state")),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"], name=op.f("fk_fact_holds_batch_id_batches")),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"],
                                name=op.f("fk_fact_holds_model_version_id_model_versions")),
        sa.ForeignKeyConstraint(["request_id"], ["edit_requests.id"],
                                name=op.f("fk_fact_holds_request_id_edit_requests")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fact_holds")),
    )
    op.create_index("ix_fact_holds_subject_relation", "fact_holds", ["subject", "relation"], unique=False)
    op.create_table(
        "model_capacity",
        sa.Column("model_key", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("config_hash", sa.String(length=32), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('room', 'saturated')", name=op.f("ck_model_capacity_state")),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"],
                                name=op.f("fk_model_capacity_model_version_id_model_versions")),
        sa.PrimaryKeyConstraint("model_key", name=op.f("pk_model_capacity")),
    )
    for name, sql in (VIEWS_BEFORE | VIEW_ADDED).items():
        op.execute(f"CREATE VIEW {name} AS {sql.strip()}")


def downgrade() -> None:
    for name in VIEWS_BEFORE | VIEW_ADDED:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("model_capacity")
    op.drop_index("ix_fact_holds_subject_relation", table_name="fact_holds")
    op.drop_table("fact_holds")
    with op.batch_alter_table("edit_checks", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_edit_checks_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_edit_checks_kind"), OLD_KINDS)
    for name, sql in VIEWS_BEFORE.items():
        op.execute(f"CREATE VIEW {name} AS {sql.strip()}")
