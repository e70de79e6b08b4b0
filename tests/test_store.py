"""The store on SQLite and on PostgreSQL: migrations, records, atomic replacement."""

import sqlalchemy as sa

from merforge.storage.records import (
    Clip,
    ClipOrigin,
    KeyFrame,
    MediaInfo,
    Provenance,
    Source,
    SourceStatus,
    StageState,
    StageStatus,
    VideoInfo,
    clip_id,
)
from merforge.storage.store import Store


def _source(source_id="a" * 64, path="/media/a.mp4"):
    media = MediaInfo(container="mp4", duration=3.0, video=VideoInfo(codec="h264", width=640, height=360, fps=25.0))
    return Source(id=source_id, path=path, size_bytes=123, mtime=1.5, status=SourceStatus.OK, media=media,
                  license="CC BY", consent="yes", speaker="s1", group="g1", extra={"origin": "test"})


def _clip(source_id, start, end):
    return Clip(id=clip_id(source_id, start, end), source_id=source_id, start=start, end=end, origin=ClipOrigin.SHOT,
                keyframes=(KeyFrame(time=start + 0.5, path="keyframes/x/1.jpg"),),
                provenance=Provenance(backend="test", config_hash="h"))


def _head() -> str:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    from merforge.storage.store import MIGRATIONS_DIR

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def test_migrations_reach_head_and_reopen_is_a_no_op(database_url):
    store = Store.open(database_url)
    assert store.schema_revision() == _head()
    store.close()
    store = Store.open(database_url)
    assert store.schema_revision() == _head()
    assert set(sa.inspect(store.engine).get_table_names()) >= {"sources", "clips", "stage_status", "clip_features", "alembic_version"}
    store.close()


def test_source_round_trip_and_update(database_url):
    store = Store.open(database_url)
    source = _source()
    store.upsert_source(source)
    assert store.get_source(source.id) == source
    assert store.source_by_path("/media/a.mp4") == source
    moved = source.model_copy(update={"path": "/media/moved.mp4"})
    store.upsert_source(moved)
    assert store.get_source(source.id).path == "/media/moved.mp4"
    assert len(store.sources()) == 1
    store.close()


def test_replace_clips_swaps_the_set_and_records_status(database_url):
    store = Store.open(database_url)
    source = _source()
    store.upsert_source(source)
    done = StageStatus(item_id=source.id, stage="sample", state=StageState.DONE, config_hash="h1")
    store.replace_clips(source.id, [_clip(source.id, 0, 1), _clip(source.id, 1, 2)], done)
    assert [c.start for c in store.clips(source.id)] == [0, 1]
    store.replace_clips(source.id, [_clip(source.id, 0.5, 2.5)], done.model_copy(update={"config_hash": "h2"}))
    clips = store.clips(source.id)
    assert [(c.start, c.end) for c in clips] == [(0.5, 2.5)]
    assert clips[0].keyframes[0].time == 1.0
    assert store.get_status(source.id, "sample").config_hash == "h2"
    assert store.stage_counts() == {"sample": {"done": 1}}
    store.close()


def test_a_failed_transaction_leaves_the_old_clips(database_url):
    store = Store.open(database_url)
    source = _source()
    store.upsert_source(source)
    status = StageStatus(item_id=source.id, stage="sample", state=StageState.DONE)
    store.replace_clips(source.id, [_clip(source.id, 0, 1)], status)
    duplicate = _clip(source.id, 2, 3)
    try:
        store.replace_clips(source.id, [duplicate, duplicate], status)  # primary-key clash mid-way
    except sa.exc.IntegrityError:
        pass
    else:
        raise AssertionError("a duplicate clip id must be refused")
    assert [(c.start, c.end) for c in store.clips(source.id)] == [(0, 1)]
    store.close()


def test_failures_are_kept_with_reasons(database_url):
    store = Store.open(database_url)
    store.set_status(StageStatus(item_id="b" * 64, stage="sample", state=StageState.FAILED, reason="file disappeared"))
    failed = store.statuses(state=StageState.FAILED)
    assert [(f.stage, f.reason) for f in failed] == [("sample", "file disappeared")]
    store.close()


def test_sqlite_runs_in_wal_mode(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'w.db'}")
    with store.engine.connect() as connection:
        assert connection.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    store.close()


def test_unreachable_database_gives_a_clear_error():
    import pytest

    from merforge.errors import StoreError

    with pytest.raises(StoreError, match="cannot open the database"):
        Store.open("postgresql+psycopg://nobody@127.0.0.1:1/none")
