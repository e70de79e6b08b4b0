"""judge scores per annotation, consensus and route per clip

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "judge_scores",
        sa.Column("annotation_id", sa.String(64), primary_key=True),
        sa.Column("judge", sa.String(64), primary_key=True),
        sa.Column("clip_id", sa.String(64), sa.ForeignKey("clips.id", ondelete="CASCADE"), nullable=False),
        sa.Column("s_final", sa.Float, nullable=True),
        sa.Column("record", sa.JSON, nullable=False),
    )
    op.create_index("ix_judge_scores_clip", "judge_scores", ["clip_id"])
    op.create_table(
        "consensus",
        sa.Column("clip_id", sa.String(64), sa.ForeignKey("clips.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("label", sa.String(64), nullable=True),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("route", sa.String(16), nullable=False),
        sa.Column("priority", sa.Float, nullable=False),
        sa.Column("record", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_consensus_route", "consensus", ["route", "priority"])


def downgrade() -> None:
    op.drop_table("consensus")
    op.drop_table("judge_scores")
