"""Relational tables of the store (SQLAlchemy Core). Alembic migrations create them.

JSON columns hold nested record parts (media info, key frames, provenance); the
columns that queries filter on are real columns.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

sources = Table(
    "sources",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("path", Text, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("mtime", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("media", JSON, nullable=True),
    Column("license", Text, nullable=False, default=""),
    Column("consent", Text, nullable=False, default=""),
    Column("speaker", Text, nullable=False, default=""),
    Column("group_name", Text, nullable=False, default=""),
    Column("extra", JSON, nullable=False),
    Column("ingested_at", DateTime(timezone=True), nullable=False),
)

# Unusable files have no usable content hash worth trusting for identity across moves,
# but they are recorded by path so a re-run reports them without re-probing.
Index("ix_sources_path", sources.c.path)

clips = Table(
    "clips",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("source_id", String(64), ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
    Column("start_s", Float, nullable=False),
    Column("end_s", Float, nullable=False),
    Column("origin", String(16), nullable=False),
    Column("keyframes", JSON, nullable=False),
    Column("provenance", JSON, nullable=False),
)
Index("ix_clips_source", clips.c.source_id, clips.c.start_s)

stage_status = Table(
    "stage_status",
    metadata,
    Column("item_id", String(64), primary_key=True),
    Column("stage", String(32), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("config_hash", String(32), nullable=False, default=""),
    Column("details", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_stage_status_stage", stage_status.c.stage, stage_status.c.state)

clip_features = Table(
    "clip_features",
    metadata,
    Column("clip_id", String(64), ForeignKey("clips.id", ondelete="CASCADE"), primary_key=True),
    Column("source_id", String(64), nullable=False),
    Column("record", JSON, nullable=False),  # ClipFeatures as JSON
    Column("config_hash", String(32), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_clip_features_source", clip_features.c.source_id)

annotations = Table(
    "annotations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("clip_id", String(64), ForeignKey("clips.id", ondelete="CASCADE"), nullable=False),
    Column("annotator_id", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("label", String(64), nullable=True),
    Column("record", JSON, nullable=False),  # Annotation as JSON
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_annotations_clip", annotations.c.clip_id, annotations.c.annotator_id)

judge_scores = Table(
    "judge_scores",
    metadata,
    Column("annotation_id", String(64), primary_key=True),
    Column("judge", String(64), primary_key=True),
    Column("clip_id", String(64), ForeignKey("clips.id", ondelete="CASCADE"), nullable=False),
    Column("s_final", Float, nullable=True),
    Column("record", JSON, nullable=False),  # JudgeScores as JSON
)
Index("ix_judge_scores_clip", judge_scores.c.clip_id)

consensus = Table(
    "consensus",
    metadata,
    Column("clip_id", String(64), ForeignKey("clips.id", ondelete="CASCADE"), primary_key=True),
    Column("label", String(64), nullable=True),
    Column("confidence", Float, nullable=False),
    Column("route", String(16), nullable=False),
    Column("priority", Float, nullable=False),
    Column("record", JSON, nullable=False),  # Consensus as JSON
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_consensus_route", consensus.c.route, consensus.c.priority)

# -- review (issue: review UI) ------------------------------------------------------------
# Appended by migration 0005. Claims are the concurrency guard: (clip_id, slot) is the
# primary key, so one slot is held by one reviewer only; slot 1 for single-review clips,
# slots 1 and 2 for double-annotated ones. A reviewer holds at most one slot of a clip.

from sqlalchemy import Boolean, Integer, UniqueConstraint  # noqa: E402

reviewers = Table(
    "reviewers",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("password_hash", Text, nullable=False),  # argon2id, PHC string
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

claims = Table(
    "claims",
    metadata,
    Column("clip_id", String(64), ForeignKey("clips.id", ondelete="CASCADE"), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("reviewer", String(128), nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("clip_id", "reviewer", name="uq_claims_clip_reviewer"),
)
Index("ix_claims_reviewer", claims.c.reviewer, claims.c.expires_at)
Index("ix_claims_expires", claims.c.expires_at)

reviews = Table(
    "reviews",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("clip_id", String(64), ForeignKey("clips.id", ondelete="CASCADE"), nullable=False),
    Column("reviewer", String(128), nullable=False),
    Column("slot", Integer, nullable=False),  # claim slot it was made in; 0 for imported reviews
    Column("needed", Integer, nullable=False),  # decisions the clip needs: 1, or 2 when double-annotated
    Column("decision", String(16), nullable=False),
    Column("label", String(64), nullable=True),
    Column("blind", Boolean, nullable=False),
    Column("seconds_spent", Float, nullable=False, default=0.0),
    Column("record", JSON, nullable=False),  # Review as JSON
    Column("created_at", DateTime(timezone=True), nullable=False),
)
# One review per reviewer and clip (a later decision replaces that reviewer's SKIP).
Index("ix_reviews_clip", reviews.c.clip_id, reviews.c.reviewer, unique=True)
Index("ix_reviews_reviewer", reviews.c.reviewer, reviews.c.created_at)
