"""Label Studio round trip: export review clips as tasks, import finished annotations as reviews.

Export writes Label Studio's JSON task format: one task per clip, with the annotator agents'
answers as *predictions* (model_version = annotator id, score = the annotator's
probability of its label), so curators in Label Studio start from them. `label_config`
gives the matching labeling interface; its control names (`emotion`, `intensity`,
`transcript`) are what `import_annotations` reads back from Label Studio's JSON export.

Media: Label Studio serves local files under /data/local-files/?d=<path relative to
LOCAL_FILES_DOCUMENT_ROOT>. Pass that root as `local_files_root` and sources under it get
such URLs; other sources are given by absolute path (serve them yourself or mount them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from merforge.agents.labels import LabelSpace, get_space
from merforge.storage.records import AnnotationStatus, Review, ReviewDecision
from merforge.storage.reviews import ReviewError, ReviewStore
from merforge.storage.workspace import Workspace, write_atomic

EMOTION = "emotion"  # <Choices> name
INTENSITY = "intensity"  # <Rating> name
TRANSCRIPT = "transcript"  # <TextArea> name (the recognised transcript, editable)
MAX_RATING = 5


def label_config(space: LabelSpace | str, video: bool = True) -> str:
    """Label Studio labeling config (XML) for a label space: the clip's video (or audio only
    with video=False) and audio, its transcript, one emotion choice, an intensity rating."""
    space = get_space(space) if isinstance(space, str) else space
    target = "video" if video else "audio"
    media = ['  <Video name="video" value="$video" sync="audio"/>'] if video else []
    media.append('  <Audio name="audio" value="$audio"' + (' sync="video"' if video else "") + "/>")
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in space.labels)
    return "\n".join([
        "<View>",
        '  <Header value="Clip $clip_id: $start s to $end s of $source"/>',
        *media,
        f'  <TextArea name="{TRANSCRIPT}" toName="audio" value="$transcript" rows="3" editable="true" '
        'maxSubmissions="1" placeholder="transcript"/>',
        f'  <Choices name="{EMOTION}" toName="{target}" choice="single-radio" required="true" '
        'showInline="true">',
        choices,
        "  </Choices>",
        f'  <Rating name="{INTENSITY}" toName="{target}" maxRating="{MAX_RATING}" icon="star" size="medium"/>',
        "</View>",
        "",
    ])


def _media_url(path: str, local_files_root: Path | None) -> str:
    if local_files_root is not None:
        try:
            relative = Path(path).resolve().relative_to(Path(local_files_root).resolve())
        except ValueError:
            return str(Path(path).resolve())
        return "/data/local-files/?d=" + quote(relative.as_posix())
    return str(Path(path).resolve())


def export_tasks(workspace: Workspace, path: Path | str, route: Sequence[str] | str = ("review", "audit"),
                 local_files_root: Path | str | None = None) -> int:
    """Write the clips routed to `route` as Label Studio tasks (JSON list) to `path`,
    highest priority first. Returns the number of tasks. The file is written atomically."""
    store = workspace.store
    routes = (route,) if isinstance(route, str) else tuple(route)
    space = get_space(workspace.config.annotate.label_space)
    root = Path(local_files_root) if local_files_root is not None else None
    decisions = [c for r in routes for c in store.consensuses(route=r)]
    decisions.sort(key=lambda c: -c.priority)
    wanted = {c.clip_id for c in decisions}
    clips = {clip.id: clip for clip in store.iter_clips() if clip.id in wanted}
    sources: dict[str, Any] = {}
    target = "video"
    tasks = []
    for consensus in decisions:
        clip = clips.get(consensus.clip_id)
        if clip is None:
            continue
        if clip.source_id not in sources:
            sources[clip.source_id] = store.get_source(clip.source_id)
        source = sources[clip.source_id]
        has_video = bool(source and source.media and source.media.video)
        target = "video" if has_video else "audio"
        features = store.get_features(clip.id)
        url = _media_url(source.path, root) if source else ""
        data = {"clip_id": clip.id, "audio": url, "start": round(clip.start, 3), "end": round(clip.end, 3),
                "source": source.path if source else "", "transcript": features.transcript.text if features else "",
                "route": consensus.route.value, "priority": consensus.priority}
        if has_video:
            data["video"] = url
        predictions = []
        for annotation in store.annotations(clip.id):
            label = space.normalise(annotation.label) if annotation.label else None
            if annotation.status != AnnotationStatus.OK or label is None:
                continue
            result: list[dict[str, Any]] = [{"from_name": EMOTION, "to_name": target, "type": "choices",
                                             "value": {"choices": [label]}}]
            if annotation.intensity is not None:
                rating = 1 + round(max(0.0, min(1.0, annotation.intensity)) * (MAX_RATING - 1))
                result.append({"from_name": INTENSITY, "to_name": target, "type": "rating",
                               "value": {"rating": rating}})
            score = annotation.label_probabilities.get(annotation.label or "",
                                                       annotation.label_probabilities.get(label, 1.0))
            predictions.append({"model_version": annotation.annotator_id, "score": float(score), "result": result})
        tasks.append({"data": data, "predictions": predictions})
    write_atomic(Path(path), json.dumps(tasks, indent=1, ensure_ascii=False).encode())
    return len(tasks)


@dataclass
class ImportReport:
    """What `import_annotations` did: counts, and the annotations it left out with why."""

    imported: int = 0
    cancelled: list[str] = field(default_factory=list)  # "<clip>: annotation <id> by <who>"
    unknown_labels: list[str] = field(default_factory=list)  # "<clip>: <label as given>"
    unknown_clips: list[str] = field(default_factory=list)
    without_choice: list[str] = field(default_factory=list)  # completed, but no emotion chosen

    @property
    def skipped(self) -> int:
        return len(self.cancelled) + len(self.unknown_labels) + len(self.unknown_clips) + len(self.without_choice)


def import_annotations(workspace: Workspace, path: Path | str, reviewer_prefix: str = "ls:",
                       review_store: ReviewStore | None = None) -> ImportReport:
    """Read a Label Studio JSON export and store each completed annotation as a Review
    (origin "label-studio", reviewer "<prefix><completed_by>"): ACCEPT when its label equals
    the pipeline's consensus label, CORRECT otherwise. Labels are mapped into the workspace's
    label space; unknown labels, cancelled annotations and clips not in this workspace are
    reported, not imported. Re-importing replaces earlier imports of the same annotator."""
    try:
        tasks = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ReviewError(f"cannot read the Label Studio export {path}: {error}; export the project as JSON") from None
    if isinstance(tasks, dict):
        tasks = tasks.get("tasks", [tasks])
    if not isinstance(tasks, list):
        raise ReviewError(f"{path} is not a Label Studio JSON export (expected a list of tasks)")
    space = get_space(workspace.config.annotate.label_space)
    reviews = review_store or ReviewStore(workspace.store, workspace.config.review)
    report = ImportReport()
    for task in tasks:
        data = task.get("data", {}) if isinstance(task, dict) else {}
        clip_id = str(data.get("clip_id", ""))
        for annotation in task.get("annotations", []) if isinstance(task, dict) else []:
            who = _annotator(annotation.get("completed_by"))
            where = f"{clip_id}: annotation {annotation.get('id', '?')} by {who}"
            if annotation.get("was_cancelled"):
                report.cancelled.append(where)
                continue
            raw, rating, transcript = _answers(annotation.get("result", []))
            if raw is None:
                report.without_choice.append(where)
                continue
            label = space.normalise(raw)
            if label is None:
                report.unknown_labels.append(f"{clip_id}: {raw!r} (not in {space.name})")
                continue
            consensus = workspace.store.consensus(clip_id) if clip_id else None
            if consensus is None:
                report.unknown_clips.append(clip_id or "<task without data.clip_id>")
                continue
            decision = ReviewDecision.ACCEPT if label == consensus.label else ReviewDecision.CORRECT
            intensity = (rating - 1) / (MAX_RATING - 1) if rating is not None else None
            comment = f"transcript: {transcript}" if transcript and transcript != data.get("transcript") else ""
            review = Review(id="", clip_id=clip_id, reviewer=f"{reviewer_prefix}{who}", decision=decision,
                            label=label, labels=(label,), intensity=intensity, comment=comment,
                            seconds_spent=float(annotation.get("lead_time") or 0.0), blind=False,
                            origin="label-studio", created_at=_timestamp(annotation.get("created_at")))
            reviews.record_import(review)
            report.imported += 1
    return report


def _annotator(completed_by: Any) -> str:
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("id") or "unknown")
    return str(completed_by) if completed_by is not None else "unknown"


def _answers(result: list[dict[str, Any]]) -> tuple[str | None, int | None, str | None]:
    label = rating = transcript = None
    for item in result or []:
        value = item.get("value", {})
        if item.get("from_name") == EMOTION and value.get("choices"):
            label = str(value["choices"][0])
        elif item.get("from_name") == INTENSITY and value.get("rating") is not None:
            rating = max(1, min(MAX_RATING, int(value["rating"])))
        elif item.get("from_name") == TRANSCRIPT and value.get("text"):
            text = value["text"]
            transcript = " ".join(text) if isinstance(text, list) else str(text)
    return label, rating, transcript


def _timestamp(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    return datetime.now(timezone.utc)
