"""The relational store: SQLite (WAL) by default, PostgreSQL by URL.

`Store.open(url)` connects and brings the schema to the newest Alembic revision.
All writes are transactional: a stage's results for one item land together or not
at all, so an interrupted run loses nothing already committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from merforge.errors import StoreError
from merforge.storage import tables
from merforge.storage.records import (
    Annotation,
    Clip,
    Consensus,
    JudgeScores,
    ClipFeatures,
    ClipOrigin,
    KeyFrame,
    MediaInfo,
    Provenance,
    Source,
    SourceStatus,
    StageState,
    StageStatus,
)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _make_engine(url: str, busy_timeout_s: float = 30.0) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": busy_timeout_s})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets the review UI read while the pipeline writes; FULL sync makes a
            # committed decision survive a crash right after the reply.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _describe_url(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


class Store:
    """Records in a relational database. Use `Store.open(url)`; close with `close()`."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def open(cls, url: str, busy_timeout_s: float = 30.0) -> "Store":
        try:
            engine = _make_engine(url, busy_timeout_s)
        except (SQLAlchemyError, ImportError) as error:
            raise StoreError(f"cannot use database URL {_describe_url(url)}: {error}") from None
        store = cls(engine)
        store.migrate()
        return store

    def migrate(self) -> None:
        """Bring the schema to the newest revision (no-op when it is current)."""
        alembic_config = AlembicConfig()
        alembic_config.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self.engine.begin() as connection:
                alembic_config.attributes["connection"] = connection
                command.upgrade(alembic_config, "head")
        except OperationalError as error:
            raise StoreError(
                f"cannot open the database at {_describe_url(str(self.engine.url))}: {error.orig}"
            ) from None

    def schema_revision(self) -> str | None:
        with self.engine.connect() as connection:
            return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    def close(self) -> None:
        self.engine.dispose()

    # -- sources -------------------------------------------------------------------

    def upsert_source(self, source: Source) -> None:
        with self.engine.begin() as connection:
            self._upsert_source(connection, source)

    def _upsert_source(self, connection: Connection, source: Source) -> None:
        row = _source_row(source)
        exists = connection.execute(
            sa.select(tables.sources.c.id).where(tables.sources.c.id == source.id)
        ).first()
        if exists:
            connection.execute(tables.sources.update().where(tables.sources.c.id == source.id).values(**row))
        else:
            connection.execute(tables.sources.insert().values(**row))

    def get_source(self, source_id: str) -> Source | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(tables.sources).where(tables.sources.c.id == source_id)).first()
        return _source_from_row(row) if row else None

    def source_by_path(self, path: str) -> Source | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(tables.sources).where(tables.sources.c.path == path).limit(1)
            ).first()
        return _source_from_row(row) if row else None

    def sources(self, status: SourceStatus | None = None) -> list[Source]:
        query = sa.select(tables.sources).order_by(tables.sources.c.path)
        if status is not None:
            query = query.where(tables.sources.c.status == status.value)
        with self.engine.connect() as connection:
            return [_source_from_row(row) for row in connection.execute(query)]

    # -- clips ---------------------------------------------------------------------

    def replace_clips(self, source_id: str, clips: Iterable[Clip], status: StageStatus) -> None:
        """Swap a source's clips for a new set and record the stage status, in one transaction."""
        with self.engine.begin() as connection:
            connection.execute(tables.clips.delete().where(tables.clips.c.source_id == source_id))
            rows = [_clip_row(clip) for clip in clips]
            if rows:
                connection.execute(tables.clips.insert(), rows)
            self._set_status(connection, status)

    def clips(self, source_id: str | None = None) -> list[Clip]:
        return list(self.iter_clips(source_id))

    def iter_clips(self, source_id: str | None = None) -> Iterator[Clip]:
        query = sa.select(tables.clips).order_by(tables.clips.c.source_id, tables.clips.c.start_s)
        if source_id is not None:
            query = query.where(tables.clips.c.source_id == source_id)
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                yield _clip_from_row(row)

    def count_clips(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(tables.clips)).scalar_one()

    # -- clip features -------------------------------------------------------------

    def save_features(self, features: ClipFeatures, status: StageStatus) -> None:
        """Store a clip's features and its stage status in one transaction."""
        table = tables.clip_features
        row = {"clip_id": features.clip_id, "source_id": features.source_id,
               "record": features.model_dump(mode="json"), "config_hash": features.config_hash,
               "updated_at": status.updated_at}
        with self.engine.begin() as connection:
            key = table.c.clip_id == features.clip_id
            if connection.execute(sa.select(table.c.clip_id).where(key)).first():
                connection.execute(table.update().where(key).values(**row))
            else:
                connection.execute(table.insert().values(**row))
            self._set_status(connection, status)

    def get_features(self, clip_id: str) -> ClipFeatures | None:
        table = tables.clip_features
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(table.c.record).where(table.c.clip_id == clip_id)).first()
        return ClipFeatures.model_validate(row.record) if row else None

    def count_features(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(tables.clip_features)).scalar_one()

    # -- annotations ---------------------------------------------------------------

    def save_annotations(self, clip_id: str, annotations: Iterable[Annotation], status: StageStatus) -> None:
        """Replace a clip's annotations by the given set and record the stage status, atomically."""
        table = tables.annotations
        rows = [{"id": a.id, "clip_id": clip_id, "annotator_id": a.annotator_id, "status": a.status.value,
                 "label": a.label, "record": a.model_dump(mode="json"), "created_at": a.created_at}
                for a in annotations]
        with self.engine.begin() as connection:
            self._replace_clip_rows(connection, table, clip_id, rows)
            self._set_status(connection, status)

    def annotations(self, clip_id: str | None = None) -> list[Annotation]:
        table = tables.annotations
        return self._records(table, Annotation, (table.c.clip_id, table.c.annotator_id), clip_id)

    def _records(self, table, model, order, clip_id: str | None) -> list:
        """The JSON `record` column of `table` as `model` records, optionally for one clip."""
        query = sa.select(table.c.record).order_by(*order)
        if clip_id is not None:
            query = query.where(table.c.clip_id == clip_id)
        with self.engine.connect() as connection:
            return [model.model_validate(row.record) for row in connection.execute(query)]

    @staticmethod
    def _replace_clip_rows(connection: Connection, table, clip_id: str, rows: list[dict]) -> None:
        connection.execute(table.delete().where(table.c.clip_id == clip_id))
        if rows:
            connection.execute(table.insert(), rows)

    def annotation_counts(self) -> dict[str, dict[str, int]]:
        """{annotator_id: {status: count}}."""
        table = tables.annotations
        query = sa.select(table.c.annotator_id, table.c.status, sa.func.count()).group_by(table.c.annotator_id,
                                                                                         table.c.status)
        counts: dict[str, dict[str, int]] = {}
        with self.engine.connect() as connection:
            for annotator, status, count in connection.execute(query):
                counts.setdefault(annotator, {})[status] = count
        return counts

    # -- judge scores and consensus -------------------------------------------------

    def save_judgement(self, clip_id: str, scores: Iterable[JudgeScores], consensus: Consensus,
                       status: StageStatus) -> None:
        """Replace a clip's judge scores and consensus, with its stage status, atomically."""
        from datetime import datetime, timezone

        scores_table, consensus_table = tables.judge_scores, tables.consensus
        rows = [{"annotation_id": s.annotation_id, "judge": s.judge, "clip_id": clip_id, "s_final": s.s_final,
                 "record": s.model_dump(mode="json")} for s in scores]
        row = {"clip_id": clip_id, "label": consensus.label, "confidence": consensus.confidence,
               "route": consensus.route.value, "priority": consensus.priority,
               "record": consensus.model_dump(mode="json"), "updated_at": datetime.now(timezone.utc)}
        with self.engine.begin() as connection:
            self._replace_clip_rows(connection, scores_table, clip_id, rows)
            self._replace_clip_rows(connection, consensus_table, clip_id, [row])
            self._set_status(connection, status)

    def judge_scores(self, clip_id: str | None = None) -> list[JudgeScores]:
        table = tables.judge_scores
        return self._records(table, JudgeScores, (table.c.clip_id, table.c.annotation_id), clip_id)

    def consensus(self, clip_id: str) -> Consensus | None:
        table = tables.consensus
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(table.c.record).where(table.c.clip_id == clip_id)).first()
        return Consensus.model_validate(row.record) if row else None

    def consensuses(self, route: str | None = None) -> list[Consensus]:
        table = tables.consensus
        query = sa.select(table.c.record).order_by(table.c.priority.desc(), table.c.clip_id)
        if route is not None:
            query = query.where(table.c.route == route)
        with self.engine.connect() as connection:
            return [Consensus.model_validate(row.record) for row in connection.execute(query)]

    def route_counts(self) -> dict[str, int]:
        table = tables.consensus
        with self.engine.connect() as connection:
            return {route: count for route, count in connection.execute(
                sa.select(table.c.route, sa.func.count()).group_by(table.c.route))}

    # -- stage status --------------------------------------------------------------

    def set_status(self, status: StageStatus) -> None:
        with self.engine.begin() as connection:
            self._set_status(connection, status)

    def _set_status(self, connection: Connection, status: StageStatus) -> None:
        table = tables.stage_status
        row = {
            "item_id": status.item_id,
            "stage": status.stage,
            "state": status.state.value,
            "reason": status.reason,
            "config_hash": status.config_hash,
            "details": status.details,
            "updated_at": status.updated_at,
        }
        key = (table.c.item_id == status.item_id) & (table.c.stage == status.stage)
        if connection.execute(sa.select(table.c.item_id).where(key)).first():
            connection.execute(table.update().where(key).values(**row))
        else:
            connection.execute(table.insert().values(**row))

    def clear_status(self, item_id: str, stage: str) -> None:
        table = tables.stage_status
        with self.engine.begin() as connection:
            connection.execute(table.delete().where((table.c.item_id == item_id) & (table.c.stage == stage)))

    def get_status(self, item_id: str, stage: str) -> StageStatus | None:
        table = tables.stage_status
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(table).where((table.c.item_id == item_id) & (table.c.stage == stage))
            ).first()
        return _status_from_row(row) if row else None

    def statuses(self, stage: str | None = None, state: StageState | None = None) -> list[StageStatus]:
        table = tables.stage_status
        query = sa.select(table).order_by(table.c.stage, table.c.item_id)
        if stage is not None:
            query = query.where(table.c.stage == stage)
        if state is not None:
            query = query.where(table.c.state == state.value)
        with self.engine.connect() as connection:
            return [_status_from_row(row) for row in connection.execute(query)]

    def stage_counts(self) -> dict[str, dict[str, int]]:
        """{stage: {state: count}} over every recorded item."""
        table = tables.stage_status
        query = sa.select(table.c.stage, table.c.state, sa.func.count()).group_by(table.c.stage, table.c.state)
        counts: dict[str, dict[str, int]] = {}
        with self.engine.connect() as connection:
            for stage, state, count in connection.execute(query):
                counts.setdefault(stage, {})[state] = count
        return counts


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything merforge writes is UTC.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _source_row(source: Source) -> dict[str, Any]:
    return {
        "id": source.id,
        "path": source.path,
        "size_bytes": source.size_bytes,
        "mtime": source.mtime,
        "status": source.status.value,
        "reason": source.reason,
        "media": source.media.model_dump(mode="json") if source.media else None,
        "license": source.license,
        "consent": source.consent,
        "speaker": source.speaker,
        "group_name": source.group,
        "extra": source.extra,
        "ingested_at": source.ingested_at,
    }


def _source_from_row(row: Any) -> Source:
    return Source(
        id=row.id,
        path=row.path,
        size_bytes=row.size_bytes,
        mtime=row.mtime,
        status=SourceStatus(row.status),
        reason=row.reason,
        media=MediaInfo.model_validate(row.media) if row.media else None,
        license=row.license,
        consent=row.consent,
        speaker=row.speaker,
        group=row.group_name,
        extra=row.extra or {},
        ingested_at=_aware(row.ingested_at),
    )


def _clip_row(clip: Clip) -> dict[str, Any]:
    return {
        "id": clip.id,
        "source_id": clip.source_id,
        "start_s": clip.start,
        "end_s": clip.end,
        "origin": clip.origin.value,
        "keyframes": [kf.model_dump(mode="json") for kf in clip.keyframes],
        "provenance": clip.provenance.model_dump(mode="json"),
    }


def _clip_from_row(row: Any) -> Clip:
    return Clip(
        id=row.id,
        source_id=row.source_id,
        start=row.start_s,
        end=row.end_s,
        origin=ClipOrigin(row.origin),
        keyframes=tuple(KeyFrame.model_validate(kf) for kf in row.keyframes),
        provenance=Provenance.model_validate(row.provenance),
    )


def _status_from_row(row: Any) -> StageStatus:
    return StageStatus(
        item_id=row.item_id,
        stage=row.stage,
        state=StageState(row.state),
        reason=row.reason,
        config_hash=row.config_hash,
        details=row.details or {},
        updated_at=_aware(row.updated_at),
    )
