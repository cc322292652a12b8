"""the change-stream follower's table (issue 28)

followed_entities: one row per watched Wikidata item the change stream (or a RecentChanges
backfill) saw edited: the newest revision seen, the revision whose state the snapshot holds
(done_revision), and when. A row whose revision is newer than its done_revision is waiting to be
fetched and diffed. The stream's position (Last-Event-ID, the newest event time) lives in
sync_state, written in the same transaction as these rows.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "followed_entities",
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("done_revision", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("entity", name=op.f("pk_followed_entities")),
    )
    op.create_index("ix_followed_entities_waiting", "followed_entities", ["revision", "done_revision"])


def downgrade() -> None:
    op.drop_index("ix_followed_entities_waiting", table_name="followed_entities")
    op.drop_table("followed_entities")
