"""per-clip preprocessing features

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clip_features",
        sa.Column("clip_id", sa.String(64), sa.ForeignKey("clips.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("record", sa.JSON, nullable=False),
        sa.Column("config_hash", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_clip_features_source", "clip_features", ["source_id"])


def downgrade() -> None:
    op.drop_table("clip_features")
