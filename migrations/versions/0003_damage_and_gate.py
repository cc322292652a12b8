"""damage and the regression gate (issue 13)

damaged_facts: facts a batch broke (answered right before it, wrong after), with who found
them (neighbour check, regression gate, diff) and what became of them; gate_figures: the
regression gate's perplexity, known-fact accuracy and retention per model state (the base
model measured once, versions, each batch's candidate); the views v_batch_damage and
v_gate_figures.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 07:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copies of kbsync/store/views.py at this revision.
VIEWS = {
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


def upgrade() -> None:
    op.create_table(
        "damaged_facts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("relation", sa.String(length=32), nullable=False),
        sa.Column("subject_label", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("expected", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("found_by", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('open', 'rolled_back', 'requeued', 'resolved')",
                           name=op.f("ck_damaged_facts_state")),
        sa.CheckConstraint("found_by IN ('neighbour', 'gate', 'diff')", name=op.f("ck_damaged_facts_found_by")),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"], name=op.f("fk_damaged_facts_batch_id_batches")),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"],
                                name=op.f("fk_damaged_facts_model_version_id_model_versions")),
        sa.ForeignKeyConstraint(["request_id"], ["edit_requests.id"],
                                name=op.f("fk_damaged_facts_request_id_edit_requests")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_damaged_facts")),
    )
    op.create_index("ix_damaged_facts_batch_id", "damaged_facts", ["batch_id"], unique=False)
    op.create_index("ix_damaged_facts_subject_relation", "damaged_facts", ["subject", "relation"], unique=False)
    op.create_table(
        "gate_figures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_key", sa.String(length=128), nullable=False),
        sa.Column("setup", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("perplexity", sa.Float(), nullable=True),
        sa.Column("known_acc", sa.Float(), nullable=True),
        sa.Column("n_known", sa.Integer(), nullable=False),
        sa.Column("retention", sa.Float(), nullable=True),
        sa.Column("n_retention", sa.Integer(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("scope IN ('base', 'version', 'batch')", name=op.f("ck_gate_figures_scope")),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"], name=op.f("fk_gate_figures_batch_id_batches")),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"],
                                name=op.f("fk_gate_figures_model_version_id_model_versions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_figures")),
    )
    op.create_index("ix_gate_figures_model_key", "gate_figures", ["model_key"], unique=False)
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql.strip()}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_index("ix_gate_figures_model_key", table_name="gate_figures")
    op.drop_table("gate_figures")
    op.drop_index("ix_damaged_facts_subject_relation", table_name="damaged_facts")
    op.drop_index("ix_damaged_facts_batch_id", table_name="damaged_facts")
    op.drop_table("damaged_facts")
