"""`merforge calibrate`: fit per-agent and consensus calibration from clips with known labels.

Truth comes from a CSV the curator supplies (`--labels FILE`, columns `file` or `clip`,
and `label`; a file's label applies to every clip cut from it) and from the workspace's
reviewed clips (accept: the consensus label was right; correct: the reviewer's label is
the truth; reject and skip say nothing about the label). Where both give a label, the CSV
wins. The fit (agents.calibration.fit_workspace_calibration) is saved as
`<workspace>/calibration.json` with its provenance (where the truth came from, its
digest, how many clips, when) and read by the judge stage, which routes with it; this
command re-runs the judge stage so the routes change at once.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from merforge.agents.aggregate import ABSTAINED, tabulate
from merforge.agents.calibration import CalibrationError, WorkspaceCalibration, fit_workspace_calibration
from merforge.agents.labels import LabelSpace, get_space
from merforge.errors import MerforgeError
from merforge.storage.records import Annotation, utc_now
from merforge.storage.workspace import Workspace, write_atomic

CALIBRATION_FILE = "calibration.json"


class LabelsFileError(MerforgeError):
    """The labels CSV cannot be read or matched to the workspace's clips."""


def read_labels_csv(path: Path) -> list[tuple[str, str, str]]:
    """Rows (kind "file" | "clip", key, label) of a labels CSV. Columns: `file` (also
    accepted: `path`) or `clip` (a clip id), and `label` (also accepted: `emotion`)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = {c.strip().lower(): c for c in reader.fieldnames or []}
            key_column = next((columns[c] for c in ("clip", "file", "path") if c in columns), None)
            label_column = next((columns[c] for c in ("label", "emotion") if c in columns), None)
            if key_column is None or label_column is None:
                raise LabelsFileError(f"{path}: needs a 'file' (or 'path') or 'clip' column and a 'label' (or "
                                      f"'emotion') column; found {', '.join(reader.fieldnames or []) or 'none'}")
            kind = "clip" if key_column == columns.get("clip") else "file"
            return [(kind, row[key_column].strip(), row[label_column].strip()) for row in reader
                    if row.get(key_column) and row.get(label_column)]
    except FileNotFoundError:
        raise LabelsFileError(f"labels file {path} not found") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise LabelsFileError(f"{path} is not a readable CSV ({error})") from None


def truth_from_rows(workspace: Workspace, rows: list[tuple[str, str, str]], space: LabelSpace
                    ) -> tuple[dict[str, str], list[str]]:
    """(clip id -> label, problems). A `file` key matches a source's path (as ingested,
    resolved), else its file name when only one source has that name."""
    clips = list(workspace.store.iter_clips())
    clip_ids = {c.id for c in clips}
    by_source: dict[str, list[str]] = {}
    for clip in clips:
        by_source.setdefault(clip.source_id, []).append(clip.id)
    by_path: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    for source in workspace.store.sources():
        by_path[str(Path(source.path).resolve())] = source.id
        by_name.setdefault(Path(source.path).name, []).append(source.id)
    truth: dict[str, str] = {}
    problems: list[str] = []
    for kind, key, raw in rows:
        label = space.normalise(raw)
        if label is None:
            problems.append(f"{key}: label {raw!r} is not in the {space.name} label space")
            continue
        if kind == "clip":
            if key in clip_ids:
                truth[key] = label
            else:
                problems.append(f"clip {key} is not in the workspace")
            continue
        source = by_path.get(str(Path(key).resolve()))
        if source is None and len(by_name.get(Path(key).name, [])) == 1:
            source = by_name[Path(key).name][0]
        if source is None:
            problems.append(f"file {key} matches no ingested source" if not by_name.get(Path(key).name)
                            else f"file name {Path(key).name} matches several sources; give its full path")
            continue
        for clip in by_source.get(source, []):
            truth[clip] = label
    return truth, problems


def truth_from_reviews(workspace: Workspace) -> dict[str, str]:
    """Clip id -> label from reviews that decided on a label (the latest decision per clip)."""
    from merforge.storage.records import ReviewDecision
    from merforge.storage.reviews import ReviewStore

    truth: dict[str, str] = {}
    for review in sorted(ReviewStore(workspace.store, workspace.config.review).reviews(),
                         key=lambda r: r.created_at):
        if review.decision == ReviewDecision.CORRECT and review.label:
            truth[review.clip_id] = review.label
        elif review.decision == ReviewDecision.ACCEPT:
            decided = workspace.store.consensus(review.clip_id)
            if decided is not None and decided.label:
                truth[review.clip_id] = decided.label
    return truth


def calibrate_workspace(workspace: Workspace, labels_file: Path | None = None, use_reviews: bool = True
                        ) -> tuple[WorkspaceCalibration, list[str]]:
    """Fit and save the workspace calibration (module docstring); returns it and the
    problems met while matching labels. Raises CalibrationError when too few labelled
    clips have answers."""
    config = workspace.config
    space = get_space(config.annotate.label_space)
    truth: dict[str, str] = {}
    problems: list[str] = []
    provenance: dict = {"label_space": space.name, "created_at": utc_now().isoformat(),
                        "target_precision": config.route.target_precision}
    if use_reviews:
        reviewed = truth_from_reviews(workspace)
        truth.update(reviewed)
        provenance["reviewed_clips"] = len(reviewed)
    if labels_file is not None:
        rows = read_labels_csv(labels_file)
        from_file, problems = truth_from_rows(workspace, rows, space)
        truth.update(from_file)
        provenance.update({"labels_file": str(Path(labels_file).resolve()), "labels_rows": len(rows),
                           "labels_sha256": hashlib.sha256(Path(labels_file).read_bytes()).hexdigest(),
                           "labelled_clips": len(from_file)})
    annotations_by_clip: dict[str, list[Annotation]] = {}
    for annotation in workspace.store.annotations():
        if annotation.clip_id in truth:
            annotations_by_clip.setdefault(annotation.clip_id, []).append(annotation)
    if not annotations_by_clip:
        raise CalibrationError("no labelled clip has annotations yet: run `merforge annotate` first, and check that "
                               "the labels file names the ingested files (or clip ids)"
                               + (f"; {problems[0]}" if problems else ""))
    calibration = fit_from_annotations(annotations_by_clip, truth, space, config.route.target_precision, provenance)
    save_calibration(workspace, calibration)
    return calibration, problems


def fit_from_annotations(annotations_by_clip: Mapping[str, list[Annotation]], truth: Mapping[str, str],
                         space: LabelSpace, target_precision: float, provenance: dict) -> WorkspaceCalibration:
    """The calibration of these answers against these true labels (clip id -> label)."""
    table = tabulate(annotations_by_clip, None, space)
    index = {label: k for k, label in enumerate(table.labels)}
    codes = np.array([index.get(truth.get(clip, ""), -1) for clip in table.clip_ids])
    provenance = dict(provenance, clips=int((codes >= 0).sum()))
    return fit_workspace_calibration(table.matrix, table.soft, table.state == ABSTAINED, table.annotator_ids,
                                     table.labels, codes, target_precision, provenance)


def save_calibration(workspace: Workspace, calibration: WorkspaceCalibration) -> Path:
    path = workspace.root / CALIBRATION_FILE
    write_atomic(path, json.dumps(calibration.to_json(), indent=1).encode())
    return path


def load_calibration(workspace: Workspace) -> WorkspaceCalibration | None:
    """The saved calibration, or None when `merforge calibrate` has not run (or
    route.use_calibration is off). A file for another label space is refused."""
    if not workspace.config.route.use_calibration:
        return None
    path = workspace.root / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        calibration = WorkspaceCalibration.from_json(json.loads(path.read_text()))
    except json.JSONDecodeError as error:
        raise CalibrationError(f"{path} is not valid JSON ({error}); run `merforge calibrate` again") from None
    space = get_space(workspace.config.annotate.label_space)
    if tuple(calibration.labels) != tuple(space.labels):
        raise CalibrationError(f"{path} was fitted for labels {', '.join(calibration.labels)}, but the workspace "
                               f"uses {space.name}; run `merforge calibrate` again")
    return calibration
