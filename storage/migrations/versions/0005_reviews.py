"""review accounts, claims and reviews

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reviewers",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "claims",
        sa.Column("clip_id", sa.String(64), sa.ForeignKey("clips.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("clip_id", "reviewer", name="uq_claims_clip_reviewer"),
    )
    op.create_index("ix_claims_reviewer", "claims", ["reviewer", "expires_at"])
    op.create_index("ix_claims_expires", "claims", ["expires_at"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("clip_id", sa.String(64), sa.ForeignKey("clips.id", ondelete="CASCADE"), nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("needed", sa.Integer, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("label", sa.String(64), nullable=True),
        sa.Column("blind", sa.Boolean, nullable=False),
        sa.Column("seconds_spent", sa.Float, nullable=False),
        sa.Column("record", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_reviews_clip", "reviews", ["clip_id", "reviewer"], unique=True)
    op.create_index("ix_reviews_reviewer", "reviews", ["reviewer", "created_at"])


def downgrade() -> None:
    op.drop_table("reviews")
    op.drop_table("claims")
    op.drop_table("reviewers")
