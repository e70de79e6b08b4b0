"""Ingest: find media, hash it, probe it, record it.

Inputs are files, folders (searched recursively by file ending) or a manifest CSV
with columns path, license, consent, speaker, group (extra columns are kept). A
source's id is the sha256 of its bytes, so re-ingesting is a no-op and a moved file is
recognised. A file that cannot be used is recorded with the reason and the run goes on.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from merforge.errors import MediaError, MerforgeError
from merforge.preprocess.media import probe_media
from merforge.progress import NoProgress, Progress
from merforge.storage.config import IngestConfig
from merforge.storage.records import Source, SourceStatus, StageState, StageStatus
from merforge.storage.workspace import Workspace

MANIFEST_COLUMNS = ("path", "license", "consent", "speaker", "group")
HASH_CHUNK = 1 << 20


class ManifestError(MerforgeError):
    """The manifest CSV cannot be read or lacks the path column."""


@dataclass(frozen=True)
class Candidate:
    path: Path
    fields: dict[str, str] = field(default_factory=dict)  # manifest columns for this file


@dataclass
class IngestItem:
    path: str
    outcome: str  # new | unchanged | moved | duplicate | updated | unusable | missing
    source_id: str = ""
    reason: str = ""


@dataclass
class IngestReport:
    items: list[IngestItem] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(item.outcome for item in self.items))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: Path) -> list[Candidate]:
    """Rows of a manifest CSV; relative paths are taken from the manifest's folder."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "path" not in [n.strip().lower() for n in reader.fieldnames]:
                raise ManifestError(f"manifest {path} has no 'path' column (columns: {reader.fieldnames})")
            rows = list(reader)
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ManifestError(f"cannot read manifest {path}: {error}") from None
    candidates = []
    for row in rows:
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not row.get("path"):
            continue
        media_path = Path(row.pop("path"))
        if not media_path.is_absolute():
            media_path = path.parent / media_path
        candidates.append(Candidate(path=media_path, fields=row))
    return candidates


def discover(inputs: Iterable[Path], config: IngestConfig) -> list[Candidate]:
    """Expand files, folders and manifest CSVs into media candidates (sorted, unique)."""
    endings = {e.lower() for e in (*config.video_extensions, *config.audio_extensions)}
    found: dict[Path, Candidate] = {}
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            for path in sorted(item.rglob("*")):
                if path.is_file() and path.suffix.lower() in endings and not path.name.startswith("."):
                    found.setdefault(path.resolve(), Candidate(path.resolve()))
        elif item.suffix.lower() == ".csv":
            for candidate in read_manifest(item):
                found[candidate.path.resolve()] = Candidate(candidate.path.resolve(), candidate.fields)
        else:
            found.setdefault(item.resolve(), Candidate(item.resolve()))
    return sorted(found.values(), key=lambda c: str(c.path))


def _manifest_values(fields: dict[str, str]) -> dict:
    return {
        "license": fields.get("license", ""),
        "consent": fields.get("consent", ""),
        "speaker": fields.get("speaker", ""),
        "group": fields.get("group", ""),
        "extra": {k: v for k, v in fields.items() if k not in MANIFEST_COLUMNS},
    }


def _path_failure_id(path: Path) -> str:
    # No bytes, so no content id: an ingest failure of a missing file is keyed by its path.
    return hashlib.sha256(f"path:{path}".encode()).hexdigest()


def ingest_one(workspace: Workspace, candidate: Candidate) -> IngestItem:
    item = _ingest_one(workspace, candidate)
    if item.outcome != "missing":
        workspace.store.clear_status(_path_failure_id(candidate.path), "ingest")
    return item


def _ingest_one(workspace: Workspace, candidate: Candidate) -> IngestItem:
    store = workspace.store
    path = candidate.path
    manifest = _manifest_values(candidate.fields) if candidate.fields else None
    try:
        stat = path.stat()
    except FileNotFoundError:
        return _missing(workspace, path, "file not found")
    except OSError as error:
        return _missing(workspace, path, f"cannot read it: {error.strerror}")

    known = store.source_by_path(str(path))
    if known and known.size_bytes == stat.st_size and known.mtime == stat.st_mtime:
        if manifest and any(getattr(known, k) != v for k, v in manifest.items()):
            store.upsert_source(known.model_copy(update=manifest))
            return IngestItem(str(path), "updated", known.id, "manifest fields changed")
        return IngestItem(str(path), "unchanged", known.id, known.reason)

    try:
        source_id = file_sha256(path)
    except OSError as error:
        return _missing(workspace, path, f"cannot read it: {error.strerror}")

    existing = store.get_source(source_id)
    if existing is not None:
        update = {"size_bytes": stat.st_size, "mtime": stat.st_mtime, **(manifest or {})}
        if existing.path == str(path):
            store.upsert_source(existing.model_copy(update=update))
            return IngestItem(str(path), "unchanged", source_id, existing.reason)
        if not Path(existing.path).exists():
            store.upsert_source(existing.model_copy(update={"path": str(path), **update}))
            return IngestItem(str(path), "moved", source_id, f"was {existing.path}")
        return IngestItem(str(path), "duplicate", source_id, f"same content as {existing.path}")

    values = manifest or _manifest_values({})
    try:
        media = probe_media(path)
        source = Source(id=source_id, path=str(path), size_bytes=stat.st_size, mtime=stat.st_mtime,
                        status=SourceStatus.OK, media=media, **values)
        outcome = IngestItem(str(path), "new", source_id)
    except MediaError as error:
        source = Source(id=source_id, path=str(path), size_bytes=stat.st_size, mtime=stat.st_mtime,
                        status=SourceStatus.UNUSABLE, reason=str(error), **values)
        outcome = IngestItem(str(path), "unusable", source_id, str(error))
    store.upsert_source(source)
    return outcome


def _missing(workspace: Workspace, path: Path, reason: str) -> IngestItem:
    item_id = _path_failure_id(path)
    workspace.store.set_status(
        StageStatus(item_id=item_id, stage="ingest", state=StageState.FAILED, reason=reason, details={"path": str(path)})
    )
    return IngestItem(str(path), "missing", "", reason)


def ingest(workspace: Workspace, inputs: Iterable[Path], progress: Progress | None = None) -> IngestReport:
    """Ingest every media file named by `inputs` into the workspace store."""
    progress = progress or NoProgress()
    candidates = discover(inputs, workspace.config.ingest)
    report = IngestReport()
    progress.start("ingest", len(candidates))
    for candidate in candidates:
        report.items.append(ingest_one(workspace, candidate))
        progress.advance(1)
    progress.finish()
    return report
