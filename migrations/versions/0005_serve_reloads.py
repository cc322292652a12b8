"""serve_reloads: each reload of the serving engine after a promote or rollback (issue 27)

What was exported for the engine (gguf, lora, hf), how it was told (a command, vLLM's adapter
endpoints), the outcome after its attempts, and what the served model then answered on the
version's edits.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "serve_reloads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_key", sa.String(length=128), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("how", sa.String(length=16), nullable=False),
        sa.Column("export", sa.String(length=8), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("probed", sa.Integer(), nullable=True),
        sa.Column("agreed", sa.Integer(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('ok', 'failed')", name=op.f("ck_serve_reloads_state")),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"],
                                name=op.f("fk_serve_reloads_model_version_id_model_versions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serve_reloads")),
    )
    op.create_index(op.f("ix_serve_reloads_model_key"), "serve_reloads", ["model_key"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_serve_reloads_model_key"), table_name="serve_reloads")
    op.drop_table("serve_reloads")
