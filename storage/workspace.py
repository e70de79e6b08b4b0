"""A workspace is a folder: merforge.toml, the database, key frames, media cache, releases.

    workspace/
      merforge.toml        validated configuration
      merforge.db          SQLite store (unless store.database_url names another database)
      keyframes/<source>/  key-frame JPEGs, named by clip and time
      media/               decoded 16 kHz mono audio per source (WAV), reused by later stages
      features/<source>/   Parquet: faces (sampling pass), per-clip timeline and word tables
      tmp/                 scratch space; files are written here and renamed into place
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from merforge.errors import WorkspaceError
from merforge.storage.config import CONFIG_FILENAME, DEFAULT_CONFIG_TOML, Config, load_config
from merforge.storage.store import Store, sqlite_url

DATABASE_FILENAME = "merforge.db"


@dataclass
class Workspace:
    root: Path
    config: Config
    _store: Store | None = field(default=None, repr=False)

    @classmethod
    def open(cls, root: Path | str) -> "Workspace":
        """Open an existing workspace; raises WorkspaceError or ConfigError with what to do."""
        root = Path(root).resolve()
        if not root.is_dir():
            raise WorkspaceError(f"workspace folder {root} does not exist; create it with `merforge init {root}`")
        if not (root / CONFIG_FILENAME).is_file():
            raise WorkspaceError(f"{root} is not a merforge workspace (no {CONFIG_FILENAME}); run `merforge init {root}`")
        return cls(root=root, config=load_config(root / CONFIG_FILENAME))

    @classmethod
    def init(cls, root: Path | str) -> "Workspace":
        """Create the folder and a commented default merforge.toml (an existing one is kept)."""
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        config_path = root / CONFIG_FILENAME
        if not config_path.exists():
            write_atomic(config_path, DEFAULT_CONFIG_TOML.encode())
        workspace = cls.open(root)
        workspace.store  # creates the database and its schema now, not on first use
        return workspace

    @property
    def database_url(self) -> str:
        return self.config.store.database_url or sqlite_url(self.root / DATABASE_FILENAME)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.database_url, self.config.store.busy_timeout_s)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def keyframe_dir(self, source_id: str) -> Path:
        return self.root / "keyframes" / source_id[:16]

    def features_dir(self, source_id: str) -> Path:
        """Per-source Parquet: faces from sampling, per-clip timelines and word tables."""
        return self.root / "features" / source_id[:16]

    def audio_cache_path(self, source_id: str) -> Path:
        return self.root / "media" / f"{source_id[:16]}.wav"

    def tmp_dir(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name beside `path`, fsync, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
