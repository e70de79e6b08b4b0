"""Release: a versioned, self-describing dataset folder built from the store.

    <workspace>/releases/<version>/
      data/<split>-00000-of-0000N.parquet   Parquet shards (field descriptions in the Arrow schema)
      data/<split>.jsonl                    the same rows as JSON lines
      private/test_labels.jsonl             test labels when `release.hide_test_labels` (keep private)
      media/<clip>.mp4|.flac, media/keyframes/<clip>_<i>.jpg   cut clip media (`release.cut_media`)
      diff.json                             against the previous version: added, removed, relabelled
      README.md                             dataset card with Hugging Face YAML front matter
      manifest.json                         sha256 and size of every other file, counts, provenance

Final label per clip: a reviewer's decision beats the pipeline (CORRECT gives the reviewer's
label, ACCEPT the accepted one; any REJECT leaves the clip out); clips with no review keep the
consensus when auto-accepted (or audited), and clips still waiting for review follow
`release.unreviewed` (include, mark, exclude). Clips whose source has no consent are left out.

The folder is built under a temporary name beside its final place and renamed at the end,
so an interrupted release leaves no half-written version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from merforge.errors import MerforgeError
from merforge.perf import gc_paused
from merforge.storage import tables
from merforge.storage.config import ReleaseConfig

NO_CONSENT = {"", "no", "false", "withdrawn", "0", "n"}
LABEL_STATUS_REVIEWED = "reviewed"
LABEL_STATUS_AUTO = "auto-accepted"
LABEL_STATUS_UNREVIEWED = "unreviewed"
PRIVATE_TEST_LABELS = "private/test_labels.jsonl"


class ReleaseError(MerforgeError):
    """A release cannot be built (version exists, nothing to release, media cannot be cut)."""


# -- schema: one list of (name, type, description, is_label) -----------------------------

_EVIDENCE = pa.struct([("modality", pa.string()), ("start", pa.float64()), ("end", pa.float64()),
                       ("claim", pa.string()), ("feature", pa.string())])
_ANSWER = pa.struct([("annotator_id", pa.string()), ("model", pa.string()), ("prompt_version", pa.string()),
                     ("status", pa.string()), ("label", pa.string()), ("s_rec", pa.float64()),
                     ("s_reason", pa.float64()), ("s_cot", pa.float64()), ("s_final", pa.float64())])
_REVIEW = pa.struct([("reviewer", pa.string()), ("decision", pa.string()), ("label", pa.string()),
                     ("blind", pa.bool_())])
_SPEAKER = pa.struct([("speaker", pa.string()), ("seconds", pa.float64())])

FIELDS: tuple[tuple[str, pa.DataType, str, bool], ...] = (
    ("id", pa.string(), "clip id: sha256 of source id and clip range (first 24 hex digits)", False),
    ("source_id", pa.string(), "sha256 of the source media file", False),
    ("start", pa.float64(), "clip start, seconds from the start of the source", False),
    ("end", pa.float64(), "clip end, seconds from the start of the source", False),
    ("duration", pa.float64(), "clip length, seconds", False),
    ("origin", pa.string(), "how the clip was cut: speech, shot or speech+shot", False),
    ("speaker", pa.string(), "speaker from the source manifest (may be empty)", False),
    ("group", pa.string(), "grouping key from the source manifest (may be empty)", False),
    ("license", pa.string(), "license of the source media, from the manifest", False),
    ("media", pa.string(), "cut clip media, relative to the release folder (empty when not cut)", False),
    ("keyframes", pa.list_(pa.string()), "key-frame images, relative to the release folder", False),
    ("transcript", pa.string(), "ASR transcript of the clip", False),
    ("speakers", pa.list_(_SPEAKER), "diarized speakers heard in the clip: label (S1, S2, ...; a speaker keeps its "
     "label in every clip of a source) and seconds spoken in the clip", False),
    ("label", pa.string(), "final primary emotion label", True),
    ("labels", pa.list_(pa.string()), "final multi-label set (includes label)", True),
    ("label_status", pa.string(), "reviewed, auto-accepted or unreviewed (marked)", True),
    ("intensity", pa.float64(), "emotion intensity, 0..1", True),
    ("valence", pa.float64(), "valence, -1..1", True),
    ("arousal", pa.float64(), "arousal, -1..1", True),
    ("confidence", pa.float64(), "consensus probability of the pipeline label, 0..1 (uncertainty = 1 - it)", True),
    ("entropy", pa.float64(), "normalised entropy of the consensus distribution, 0..1", True),
    ("distribution", pa.string(), "consensus probability per label, JSON object", True),
    ("rationale", pa.string(), "step-by-step rationale of the best-judged annotator agreeing with the label", True),
    ("evidence", pa.list_(_EVIDENCE), "modality evidence cited by that rationale, times in source seconds", True),
    ("annotations", pa.list_(_ANSWER), "QC: every annotator answer with its judge scores (0..1)", True),
    ("consensus_label", pa.string(), "QC: label chosen by the consensus before review", True),
    ("route", pa.string(), "QC: auto-accept, review or audit", True),
    ("conflict", pa.bool_(), "QC: audio-, visual- and text-led evidence disagree", True),
    ("reviews", pa.list_(_REVIEW), "QC: review decisions for the clip", True),
)
FIELD_NAMES = tuple(f[0] for f in FIELDS)
LABEL_FIELDS = tuple(f[0] for f in FIELDS if f[3])
PUBLIC_FIELDS = tuple(f[0] for f in FIELDS if not f[3])


def arrow_schema(names: Sequence[str] = FIELD_NAMES, metadata: Mapping[str, str] | None = None) -> pa.Schema:
    """The release schema (subset `names`), each field with a `description` in its metadata."""
    by_name = {f[0]: f for f in FIELDS}
    fields = [pa.field(n, by_name[n][1], metadata={"description": by_name[n][2]}) for n in names]
    return pa.schema(fields, metadata=dict(metadata or {}))


# -- final labels ------------------------------------------------------------------------


@dataclass
class FinalLabel:
    label: str | None
    labels: tuple[str, ...]
    status: str  # reviewed | auto-accepted | unreviewed
    intensity: float | None = None
    valence: float | None = None
    arousal: float | None = None


def final_label(consensus: Mapping[str, Any] | None, reviews: Sequence[Mapping[str, Any]],
                unreviewed: str = "mark") -> tuple[FinalLabel | None, str]:
    """(final label, "") or (None, why it is left out). Inputs are records as JSON dicts.

    A REJECT by any reviewer excludes the clip; otherwise the newest CORRECT, else the newest
    ACCEPT, decides. No review: auto-accept/audit keep the consensus; review-routed clips are
    included marked "unreviewed", included as auto-accepted ("include") or left out ("exclude")."""
    decided = [r for r in reviews if r.get("decision") in ("accept", "correct", "reject")]
    if any(r["decision"] == "reject" for r in decided):
        return None, "rejected"
    for decision in ("correct", "accept"):
        chosen = [r for r in decided if r["decision"] == decision]
        if chosen:
            review = chosen[-1]
            label = review.get("label") or (consensus or {}).get("label")
            if not label:
                return None, "no label"
            labels = tuple(review.get("labels") or ()) or (label,)
            base = consensus or {}
            pick = (lambda key: review.get(key) if review.get(key) is not None else base.get(key))
            return FinalLabel(label, labels, LABEL_STATUS_REVIEWED, pick("intensity"), pick("valence"),
                              pick("arousal")), ""
    if not consensus or not consensus.get("label"):
        return None, "no label"
    status = LABEL_STATUS_AUTO
    if consensus.get("route") == "review":
        if unreviewed == "exclude":
            return None, "unreviewed"
        status = LABEL_STATUS_UNREVIEWED if unreviewed == "mark" else LABEL_STATUS_AUTO
    label = consensus["label"]
    return FinalLabel(label, tuple(consensus.get("labels") or ()) or (label,), status, consensus.get("intensity"),
                      consensus.get("valence"), consensus.get("arousal")), ""


def has_consent(consent: str) -> bool:
    return consent.strip().lower() not in NO_CONSENT


# -- splits --------------------------------------------------------------------------------


def connected_groups(items: Sequence[str], keys: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """item -> group id, where items sharing any key (source, speaker, manifest group) are one
    group (union-find over the keys). Empty keys link nothing."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for item in items:
        for key in keys.get(item, ()):
            if key:
                a, b = find("i:" + item), find("k:" + key)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return {item: find("i:" + item) for item in items}


def assign_splits(items: Sequence[str], groups: Mapping[str, str], labels: Mapping[str, str | None],
                  fractions: Mapping[str, float], seed: int = 0) -> dict[str, str]:
    """item -> split. Whole groups go to one split; labels are stratified greedily.

    Groups are placed largest first (ties in a seed-dependent but fixed order); each goes to
    the split whose per-label and overall shortfall against `fractions` it fills best (the
    greedy rule of sklearn's StratifiedGroupKFold, with target sizes instead of equal folds).
    Deterministic for a given input and seed."""
    splits = [s for s, f in fractions.items() if f > 0] or list(fractions)
    members: dict[str, list[str]] = defaultdict(list)
    for item in items:
        members[groups[item]].append(item)
    label_totals = Counter(labels.get(i) for i in items)
    total = max(len(items), 1)
    target = {s: fractions[s] * total for s in splits}
    target_label = {s: {l: fractions[s] * n for l, n in label_totals.items()} for s in splits}
    size = dict.fromkeys(splits, 0)
    by_label: dict[str, Counter] = {s: Counter() for s in splits}

    def order(group: str) -> tuple[int, str]:
        return (-len(members[group]), hashlib.sha256(f"{seed}:{group}".encode()).hexdigest())

    result: dict[str, str] = {}
    for group in sorted(members, key=order):
        counts = Counter(labels.get(i) for i in members[group])
        n = len(members[group])

        def score(s: str) -> tuple[float, float]:
            # Relative shortfalls, so a small split still gets a group when there are few groups.
            fill = sum(c * (target_label[s][l] - by_label[s][l]) / max(target_label[s][l], 1e-9)
                       for l, c in counts.items())
            return (fill / n + (target[s] - size[s]) / max(target[s], 1e-9), target[s])

        best = max(splits, key=score)
        size[best] += n
        by_label[best].update(counts)
        for item in members[group]:
            result[item] = best
    return result


def leakage(split_of: Mapping[str, str], keys: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Grouping keys (source, speaker, group) found in more than one split: key -> splits. Empty is clean."""
    seen: dict[str, set[str]] = defaultdict(set)
    for item, split in split_of.items():
        for key in keys.get(item, ()):
            if key:
                seen[key].add(split)
    return {key: sorted(s) for key, s in sorted(seen.items()) if len(s) > 1}


# -- media ---------------------------------------------------------------------------------


def cut_media(source_path: Path, start: float, end: float, out: Path, audio_only: bool) -> None:
    """Cut [start, end) seconds of a source with ffmpeg, re-encoding so the cut is frame-accurate.
    Audio-only sources become FLAC. Raises ReleaseError with ffmpeg's message on failure."""
    import imageio_ffmpeg

    codec = ["-vn", "-c:a", "flac"] if audio_only else ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
                                                         "-pix_fmt", "yuv420p", "-c:a", "aac"]
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-ss", f"{start:.3f}",
               "-i", str(source_path), "-t", f"{max(end - start, 0.001):.3f}", *codec, str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        raise ReleaseError(f"ffmpeg could not cut {source_path} [{start:.2f}s, {end:.2f}s]: {done.stderr.strip()[-400:]}")


def _blur_boxes(image: Any, boxes: Sequence[Sequence[float]]) -> None:
    """Gaussian-blur each (x, y, w, h) box, padded by 15 %, in place."""
    import cv2

    height, width = image.shape[:2]
    for box in boxes:
        x, y, w, h = (float(v) for v in box)
        pad = 0.15
        x0, y0 = max(int(x - pad * w), 0), max(int(y - pad * h), 0)
        x1, y1 = min(int(x + w * (1 + pad)), width), min(int(y + h * (1 + pad)), height)
        if x1 > x0 and y1 > y0:
            kernel = max(31, (max(x1 - x0, y1 - y0) // 3) | 1)
            image[y0:y1, x0:x1] = cv2.GaussianBlur(image[y0:y1, x0:x1], (kernel, kernel), 0)


def blur_faces_in_image(path: Path, detector: Any) -> int:
    """Blur every face the detector finds in the image at `path`, in place. Returns faces blurred."""
    import cv2

    image = cv2.imread(str(path))
    if image is None:
        return 0
    faces = detector.detect(image)
    _blur_boxes(image, [face.box for face in faces])
    cv2.imwrite(str(path), image)
    return len(faces)


BLUR_DETECT_EVERY = 3  # frames; boxes are held in between (faces move little in 0.1 s)


def blur_faces_in_video(path: Path, detector: Any) -> int:
    """Blur faces in a cut clip, in place: detect every BLUR_DETECT_EVERY frames (boxes held
    in between, and the union with the previous detection kept so a face is not exposed for
    the frames where detection misses it), re-encode the video with libx264 and copy the
    audio back with ffmpeg. Returns the number of frames that had a face blurred."""
    import av
    import imageio_ffmpeg

    blurred_video = path.with_name(f".{path.stem}.blurred.mp4")
    frames_blurred = 0
    with av.open(str(path)) as source, av.open(str(blurred_video), "w") as target:
        in_stream = source.streams.video[0]
        out_stream = target.add_stream("libx264", rate=in_stream.average_rate or 25)
        out_stream.width, out_stream.height = in_stream.codec_context.width, in_stream.codec_context.height
        out_stream.pix_fmt = "yuv420p"
        out_stream.options = {"preset": "veryfast", "crf": "23"}
        boxes: list = []
        previous: list = []
        for index, frame in enumerate(source.decode(in_stream)):
            image = frame.to_ndarray(format="bgr24")
            if index % BLUR_DETECT_EVERY == 0:
                previous, boxes = boxes, [face.box for face in detector.detect(image)]
            if boxes or previous:
                _blur_boxes(image, list(boxes) + list(previous))
                frames_blurred += 1
            for packet in out_stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                target.mux(packet)
        for packet in out_stream.encode(None):
            target.mux(packet)
    merged = path.with_name(f".{path.stem}.merged.mp4")
    done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
                           "-i", str(blurred_video), "-i", str(path), "-map", "0:v", "-map", "1:a?",
                           "-c", "copy", str(merged)], capture_output=True, text=True)
    blurred_video.unlink(missing_ok=True)
    if done.returncode != 0:
        merged.unlink(missing_ok=True)
        raise ReleaseError(f"could not re-mux the blurred video {path.name}: {done.stderr.strip()[-300:]}")
    os.replace(merged, path)
    return frames_blurred


# -- reading the store -----------------------------------------------------------------------


def _json(value: Any) -> Any:
    """A JSON column read as raw text (SQLite) or already decoded by the driver (PostgreSQL)."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _load_rows(store: Any) -> dict[str, Any]:
    """Everything a release needs, as plain dicts, in a few queries (fast at 100k clips).

    JSON records are selected as raw text and decoded with json.loads directly (SQLAlchemy's
    per-row result processing costs more than the decoding itself); the cyclic collector is
    paused meanwhile, since the hundreds of thousands of dicts built here cannot form cycles."""
    engine = store.engine
    t = tables
    loads = json.loads

    def raw(column: Any) -> Any:
        return sa.type_coerce(column, sa.Text)

    with gc_paused(), engine.connect() as connection:
        sources = {r.id: r for r in connection.execute(sa.select(
            t.sources.c.id, t.sources.c.path, t.sources.c.license, t.sources.c.consent, t.sources.c.speaker,
            t.sources.c.group_name, t.sources.c.media, t.sources.c.status))}
        clips = list(connection.execute(sa.select(
            t.clips.c.id, t.clips.c.source_id, t.clips.c.start_s, t.clips.c.end_s, t.clips.c.origin)
            .order_by(t.clips.c.source_id, t.clips.c.start_s)))
        consensus = {clip_id: (loads(record) if isinstance(record, str) else record)
                     for clip_id, record in connection.execute(sa.select(t.consensus.c.clip_id,
                                                                         raw(t.consensus.c.record)))}
        annotations: dict[str, list[dict]] = defaultdict(list)
        for clip_id, record in connection.execute(
                sa.select(t.annotations.c.clip_id, raw(t.annotations.c.record))
                .order_by(t.annotations.c.clip_id, t.annotations.c.annotator_id)):
            annotations[clip_id].append(loads(record) if isinstance(record, str) else record)
        scores: dict[str, dict] = {}
        for annotation_id, record in connection.execute(sa.select(t.judge_scores.c.annotation_id,
                                                                  raw(t.judge_scores.c.record))):
            scores[annotation_id] = loads(record) if isinstance(record, str) else record
        reviews: dict[str, list[dict]] = defaultdict(list)
        for clip_id, record in connection.execute(sa.select(t.reviews.c.clip_id, raw(t.reviews.c.record))
                                                  .order_by(t.reviews.c.created_at, t.reviews.c.id)):
            reviews[clip_id].append(_json(record))
        transcripts: dict[str, str] = {}
        speakers: dict[str, list[dict]] = {}
        for clip_id, record in connection.execute(sa.select(t.clip_features.c.clip_id,
                                                            raw(t.clip_features.c.record))):
            features = _json(record) or {}
            transcripts[clip_id] = (features.get("transcript") or {}).get("text", "")
            speakers[clip_id] = seconds_by_speaker(features.get("speaker_turns") or ())
    return {"sources": sources, "clips": clips, "consensus": consensus, "annotations": annotations,
            "scores": scores, "reviews": reviews, "transcripts": transcripts, "speakers": speakers}


def seconds_by_speaker(turns: Iterable[Mapping[str, Any]]) -> list[dict]:
    """[{"speaker", "seconds"}] of a clip's speaker turns (dicts with start, end, speaker;
    seconds), in label order S1, S2, ..., S10."""
    spoken: dict[str, float] = defaultdict(float)
    for turn in turns:
        spoken[turn["speaker"]] += max(0.0, float(turn["end"]) - float(turn["start"]))
    order = sorted(spoken, key=lambda name: (len(name), name))
    return [{"speaker": name, "seconds": round(spoken[name], 3)} for name in order]


def _rationale(answers: list[dict], scores: Mapping[str, dict], label: str) -> tuple[str, list[dict]]:
    """Steps and evidence of the best-judged OK answer with the final label (else the best OK answer)."""
    ok = [a for a in answers if a.get("status", "ok") == "ok"]
    if not ok:
        return "", []
    agreeing = [a for a in ok if a.get("label") == label] or ok
    best = max(agreeing, key=lambda a: ((scores.get(a["id"]) or {}).get("s_final") or 0.0, a.get("annotator_id", "")))
    evidence = [{"modality": e.get("modality", ""), "start": float(e.get("start", 0.0)), "end": float(e.get("end", 0.0)),
                 "claim": e.get("claim", ""), "feature": e.get("feature", "")} for e in best.get("evidence") or ()]
    return "\n".join(best.get("steps") or ()), evidence


# -- the release -------------------------------------------------------------------------------


@dataclass
class ReleaseResult:
    version: str
    path: Path
    counts: dict[str, int]  # rows per split
    excluded: dict[str, int]  # reason -> clips left out
    leakage: dict[str, list[str]]
    diff: dict[str, Any]
    files: int
    timings: dict[str, float] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
            handle.write("\n")


def release_labels(release_dir: Path) -> dict[str, str | None]:
    """clip id -> label of an existing release (test labels from the private file when hidden)."""
    labels: dict[str, str | None] = {}
    for path in sorted((release_dir / "data").glob("*.jsonl")) + [release_dir / PRIVATE_TEST_LABELS]:
        if path.is_file():
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    row = json.loads(line)
                    if "label" in row:
                        labels[row["id"]] = row["label"]
    return labels


def _previous_release(releases: Path, version: str) -> Path | None:
    best: tuple[str, Path] | None = None
    for manifest in releases.glob("*/manifest.json"):
        if manifest.parent.name == version or manifest.parent.name.startswith("."):
            continue
        created = json.loads(manifest.read_text()).get("created_at", "")
        if best is None or created > best[0]:
            best = (created, manifest.parent)
    return best[1] if best else None


def release_diff(previous: Mapping[str, str | None], current: Mapping[str, str | None]) -> dict[str, Any]:
    """Clip ids added, removed and relabelled (old -> new label) between two releases."""
    added = sorted(set(current) - set(previous))
    removed = sorted(set(previous) - set(current))
    relabelled = [{"id": i, "from": previous[i], "to": current[i]} for i in sorted(set(current) & set(previous))
                  if previous[i] != current[i]]
    return {"added": added, "removed": removed, "relabelled": relabelled}


def build_release(workspace: Any, version: str, out_root: Path | None = None,
                  progress: Callable[[str], None] | None = None) -> ReleaseResult:
    """Build <out_root or workspace/releases>/<version>. Raises ReleaseError when the version exists
    or no clip qualifies. The folder appears complete or not at all."""
    import time

    if not version or "/" in version or version.startswith("."):
        raise ReleaseError(f"release version {version!r} is not a valid folder name; use e.g. v1 or 2024.06")
    config: ReleaseConfig = workspace.config.release
    releases = Path(out_root) if out_root else workspace.root / "releases"
    final = releases / version
    if final.exists():
        raise ReleaseError(f"release {version} already exists at {final}; choose a new version (releases are immutable)")
    releases.mkdir(parents=True, exist_ok=True)
    tmp = releases / f".{version}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        with gc_paused():
            result = _build(workspace, config, version, tmp, releases, progress or (lambda _m: None),
                            time.perf_counter)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.path = final
    return result


def _build(workspace: Any, config: ReleaseConfig, version: str, out: Path, releases: Path,
           progress: Callable[[str], None], clock: Callable[[], float]) -> ReleaseResult:
    timings: dict[str, float] = {}
    t0 = clock()
    data = _load_rows(workspace.store)
    timings["load"] = clock() - t0
    sources = data["sources"]

    t0 = clock()
    excluded: Counter = Counter()
    rows: list[dict[str, Any]] = []
    keys: dict[str, tuple[str, ...]] = {}
    for clip in data["clips"]:
        source = sources.get(clip.source_id)
        if source is None:
            excluded["no source"] += 1
            continue
        if config.require_consent and not has_consent(source.consent or ""):
            excluded["no consent"] += 1
            continue
        consensus = data["consensus"].get(clip.id)
        reviews = data["reviews"].get(clip.id, [])
        final, why = final_label(consensus, reviews, config.unreviewed)
        if final is None:
            excluded[why] += 1
            continue
        answers = data["annotations"].get(clip.id, [])
        rationale, evidence = _rationale(answers, data["scores"], final.label)
        qc = []
        for a in answers:
            s = data["scores"].get(a["id"]) or {}
            qc.append({"annotator_id": a.get("annotator_id", ""), "model": a.get("model", ""),
                       "prompt_version": a.get("prompt_version", ""), "status": a.get("status", "ok"),
                       "label": a.get("label"), "s_rec": s.get("s_rec"), "s_reason": s.get("s_reason"),
                       "s_cot": s.get("s_cot"), "s_final": s.get("s_final")})
        consensus = consensus or {}
        rows.append({
            "id": clip.id, "source_id": clip.source_id, "start": float(clip.start_s), "end": float(clip.end_s),
            "duration": float(clip.end_s - clip.start_s), "origin": clip.origin, "speaker": source.speaker or "",
            "group": source.group_name or "", "license": source.license or "", "media": "", "keyframes": [],
            "transcript": data["transcripts"].get(clip.id, ""), "speakers": data["speakers"].get(clip.id, []),
            "label": final.label, "labels": list(final.labels), "label_status": final.status,
            "intensity": final.intensity, "valence": final.valence, "arousal": final.arousal,
            "confidence": consensus.get("confidence"), "entropy": consensus.get("entropy"),
            "distribution": json.dumps(consensus.get("distribution") or {}, sort_keys=True),
            "rationale": rationale, "evidence": evidence, "annotations": qc,
            "consensus_label": consensus.get("label"), "route": consensus.get("route", ""),
            "conflict": bool(consensus.get("conflict", False)),
            "reviews": [{"reviewer": r.get("reviewer", ""), "decision": r.get("decision", ""), "label": r.get("label"),
                         "blind": bool(r.get("blind", False))} for r in reviews if r.get("decision") != "skip"],
        })
        group_keys = []
        if "source" in config.group_by:
            group_keys += ["source:" + clip.source_id, ("group:" + source.group_name) if source.group_name else ""]
        if "speaker" in config.group_by and source.speaker:
            group_keys.append("speaker:" + source.speaker)
        keys[clip.id] = tuple(k for k in group_keys if k)
    if not rows:
        raise ReleaseError(f"no clip qualifies for release (left out: {dict(excluded) or 'no clips in the store'}); "
                           "review clips, or check consent in the source manifest")
    timings["labels"] = clock() - t0

    t0 = clock()
    ids = [r["id"] for r in rows]
    groups = connected_groups(ids, keys)
    split_of = assign_splits(ids, groups, {r["id"]: r["label"] for r in rows}, config.splits, config.seed)
    leaks = leakage(split_of, keys)
    if leaks:  # cannot happen with connected groups; checked so a future change cannot leak silently
        raise ReleaseError(f"split leakage: {dict(list(leaks.items())[:5])}")
    timings["splits"] = clock() - t0

    t0 = clock()
    if config.cut_media:
        progress("cutting media")
        _cut_media(workspace, config, rows, sources, out)
    timings["media"] = clock() - t0

    t0 = clock()
    splits = [s for s in config.splits if any(split_of[i] == s for i in ids)]
    by_split = {s: [r for r in rows if split_of[r["id"]] == s] for s in splits}
    hidden = "test" in by_split and config.hide_test_labels
    data_dir = out / "data"
    data_dir.mkdir()
    for split, split_rows in by_split.items():
        names = PUBLIC_FIELDS if (hidden and split == "test") else FIELD_NAMES
        schema = arrow_schema(names, {"merforge_release": version, "split": split})
        shards = max(1, -(-len(split_rows) // config.shard_rows))
        for index in range(shards):
            chunk = split_rows[index * config.shard_rows:(index + 1) * config.shard_rows]
            table = pa.Table.from_pylist([{n: r[n] for n in names} for r in chunk], schema=schema)
            pq.write_table(table, data_dir / f"{split}-{index:05d}-of-{shards:05d}.parquet", compression="zstd")
        _jsonl(data_dir / f"{split}.jsonl", ({n: r[n] for n in names} for r in split_rows))
        if hidden and split == "test":
            _jsonl(out / PRIVATE_TEST_LABELS, ({n: r[n] for n in ("id",) + LABEL_FIELDS} for r in split_rows))
    timings["write"] = clock() - t0

    t0 = clock()
    current = {r["id"]: r["label"] for r in rows}
    previous_dir = _previous_release(releases, version)
    diff = release_diff(release_labels(previous_dir), current) if previous_dir else \
        {"added": sorted(current), "removed": [], "relabelled": []}
    diff["previous"] = previous_dir.name if previous_dir else None
    (out / "diff.json").write_text(json.dumps(diff, indent=1))
    timings["diff"] = clock() - t0

    t0 = clock()
    stats = _statistics(by_split, rows)
    label_space = _label_space(workspace)
    provenance = _provenance(workspace, data["annotations"])
    licenses = sorted({r["license"] for r in rows if r["license"]})
    (out / "README.md").write_text(_card(version, by_split, hidden, stats, excluded, leaks, diff, licenses,
                                         label_space, provenance, config))
    files = sorted(p for p in out.rglob("*") if p.is_file())
    manifest = {
        "name": "merforge release", "version": version, "created_at": datetime.now(timezone.utc).isoformat(),
        "label_space": label_space, "splits": {s: len(r) for s, r in by_split.items()},
        "test_labels_hidden": hidden, "excluded": dict(excluded), "leakage": leaks, "licenses": licenses,
        "provenance": provenance, "statistics": stats,
        "diff": {"previous": diff["previous"], "added": len(diff["added"]), "removed": len(diff["removed"]),
                 "relabelled": len(diff["relabelled"])},
        "files": {p.relative_to(out).as_posix(): {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in files},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    timings["card+manifest"] = clock() - t0
    return ReleaseResult(version, out, {s: len(r) for s, r in by_split.items()}, dict(excluded), leaks, diff,
                         len(files) + 1, timings)


def _cut_media(workspace: Any, config: ReleaseConfig, rows: list[dict], sources: Mapping[str, Any], out: Path) -> None:
    media_dir = out / "media"
    (media_dir / "keyframes").mkdir(parents=True, exist_ok=True)
    detector = None
    if config.blur_faces:
        from merforge.preprocess.faces import FaceMeshModel

        detector = FaceMeshModel()
    clip_keyframes = {}
    with workspace.store.engine.connect() as connection:
        for r in connection.execute(sa.select(tables.clips.c.id, tables.clips.c.keyframes)):
            clip_keyframes[r.id] = r.keyframes or []
    for row in rows:
        source = sources[row["source_id"]]
        media = source.media or {}
        audio_only = not media.get("video")
        if not media.get("video") and not media.get("audio"):
            continue
        source_path = Path(source.path)
        if not source_path.is_absolute():
            source_path = workspace.root / source_path
        if not source_path.is_file():
            raise ReleaseError(f"source media {source_path} is missing; restore it or re-ingest before releasing")
        target = media_dir / f"{row['id']}{'.flac' if audio_only else '.mp4'}"
        cut_media(source_path, row["start"], row["end"], target, audio_only)
        if detector is not None and not audio_only:
            blur_faces_in_video(target, detector)
        row["media"] = target.relative_to(out).as_posix()
        frames = []
        for index, keyframe in enumerate(clip_keyframes.get(row["id"], [])):
            origin = workspace.root / keyframe["path"]
            if origin.is_file():
                copy = media_dir / "keyframes" / f"{row['id']}_{index}{origin.suffix}"
                shutil.copyfile(origin, copy)
                if detector is not None:
                    blur_faces_in_image(copy, detector)
                frames.append(copy.relative_to(out).as_posix())
        row["keyframes"] = frames


def _label_space(workspace: Any) -> list[str]:
    try:
        from merforge.agents.labels import get_space

        return list(get_space(workspace.config.annotate.label_space).labels)
    except Exception:  # a missing or unknown space only loses the card's label list
        return []


def _provenance(workspace: Any, annotations: Mapping[str, list[dict]]) -> dict[str, Any]:
    models: set[tuple[str, str, str]] = set()
    for answers in annotations.values():
        for a in answers:
            models.add((a.get("annotator_id", ""), a.get("model", ""), a.get("prompt_version", "")))
    config = workspace.config
    names = list(type(config).model_fields)
    return {
        "annotators": [{"annotator_id": a, "model": m, "prompt_version": p} for a, m, p in sorted(models)],
        "config_hash": config.section_hash(*names),
        "judge_hash": config.judge_hash(),
        "annotate_hash": config.annotate_hash(),
        "release_config": config.release.model_dump(mode="json"),
    }


def _statistics(by_split: Mapping[str, list[dict]], rows: list[dict]) -> dict[str, Any]:
    stats: dict[str, Any] = {"splits": {}}
    for split, split_rows in by_split.items():
        durations = [r["duration"] for r in split_rows]
        stats["splits"][split] = {
            "clips": len(split_rows), "labels": dict(sorted(Counter(r["label"] for r in split_rows).items())),
            "hours": round(sum(durations) / 3600, 4),
            "mean_duration_s": round(sum(durations) / len(durations), 3) if durations else 0.0,
            "label_status": dict(Counter(r["label_status"] for r in split_rows)),
        }
    confidences = [r["confidence"] for r in rows if r["confidence"] is not None]
    unanimous = [len({a["label"] for a in r["annotations"] if a["status"] == "ok"}) == 1
                 for r in rows if any(a["status"] == "ok" for a in r["annotations"])]
    reviewed = [r for r in rows if r["label_status"] == LABEL_STATUS_REVIEWED]
    answers: dict[str, Counter] = {}
    for r in rows:
        for a in r["annotations"]:
            answers.setdefault(a["annotator_id"], Counter())[a["status"]] += 1
    # abstentions (nothing to judge: no words, no voice, no face) are counted, never voted
    stats["answers_per_agent"] = {agent: dict(sorted(counts.items())) for agent, counts in sorted(answers.items())}
    stats["agreement"] = {
        "mean_consensus_confidence": round(sum(confidences) / len(confidences), 4) if confidences else None,
        "annotators_unanimous_share": round(sum(unanimous) / len(unanimous), 4) if unanimous else None,
        "reviewed_clips": len(reviewed),
        "reviewer_kept_pipeline_label_share": round(sum(r["label"] == r["consensus_label"] for r in reviewed)
                                                    / len(reviewed), 4) if reviewed else None,
    }
    return stats


def _feature_yaml(name: str, dtype: pa.DataType) -> dict[str, Any]:
    if pa.types.is_list(dtype):
        inner = dtype.value_type
        if pa.types.is_struct(inner):
            return {"name": name, "list": [_feature_yaml(f.name, f.type) for f in inner]}
        return {"name": name, "list": {"dtype": _dtype(inner)}}
    return {"name": name, "dtype": _dtype(dtype)}


def _dtype(dtype: pa.DataType) -> str:
    return {"string": "string", "double": "float64", "bool": "bool"}.get(str(dtype), str(dtype))


def _card(version: str, by_split: Mapping[str, list[dict]], hidden: bool, stats: dict, excluded: Mapping[str, int],
          leaks: dict, diff: dict, licenses: list[str], label_space: list[str], provenance: dict,
          config: ReleaseConfig) -> str:
    import yaml

    labelled = [s for s in by_split if not (hidden and s == "test")]
    configs = [{"config_name": "default", "default": True,
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in labelled]}]
    if hidden:
        configs.append({"config_name": "test_public", "data_files": [{"split": "test", "path": "data/test-*.parquet"}]})
    schema = arrow_schema()
    front = {
        "license": licenses[0].lower() if len(licenses) == 1 else "other",
        "task_categories": ["audio-classification", "video-classification"],
        "tags": ["emotion-recognition", "multimodal", "merforge"],
        "pretty_name": f"merforge release {version}",
        "configs": configs,
        "dataset_info": {"features": [_feature_yaml(f.name, f.type) for f in schema],
                         "splits": [{"name": s, "num_examples": len(by_split[s])} for s in labelled]},
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
             f"# merforge release {version}", "",
             "Multimodal emotion-recognition clips labelled by annotator agents, checked by a judge, "
             "aggregated to a consensus and reviewed by people.", "", "## Splits and label distribution", "",
             "| split | clips | hours | mean duration (s) | labels |", "|---|---|---|---|---|"]
    for split, s in stats["splits"].items():
        shown = ", ".join(f"{k}: {v}" for k, v in s["labels"].items()) if not (hidden and split == "test") else \
            "(hidden; see private/test_labels.jsonl)"
        lines.append(f"| {split} | {s['clips']} | {s['hours']} | {s['mean_duration_s']} | {shown} |")
    agreement = stats["agreement"]
    lines += ["", "## Agreement", ""] + [f"- {k.replace('_', ' ')}: {v}" for k, v in agreement.items()]
    lines += ["", "## How it was built", "",
              f"- Label space: {', '.join(label_space) or 'see data'}.",
              "- Final label: a reviewer's correction or acceptance beats the pipeline; rejected clips are "
              f"left out; clips without a review follow `release.unreviewed = {config.unreviewed}` "
              "(column `label_status`).",
              f"- Splits {dict(config.splits)} grouped by {', '.join(config.group_by)} (no group in two splits), "
              f"stratified by label, seed {config.seed}. Leakage check: "
              f"{'clean' if not leaks else leaks}.",
              f"- Test labels: {'hidden (public test file without labels; labels in private/test_labels.jsonl)' if hidden else 'included'}.",
              f"- Left out: {dict(excluded) or 'nothing'}.",
              f"- Media: {'clips cut with ffmpeg (re-encoded)' if config.cut_media else 'not included'}"
              f"{'; faces blurred in the clip videos and key frames' if config.blur_faces else ''}.",
              "- Annotators: " + (", ".join(f"{a['annotator_id']} ({a['model'] or 'offline'}, prompt "
                                            f"{a['prompt_version'] or '-'})" for a in provenance["annotators"])
                                  or "none") + ".",
              "- Answers per agent (abstained: the agent had nothing to judge and did not vote): "
              + ("; ".join(f"{agent} " + ", ".join(f"{status} {n}" for status, n in counts.items())
                           for agent, counts in stats.get("answers_per_agent", {}).items()) or "none") + ".",
              f"- Config hash: {provenance['config_hash']}.", "",
              "## Changes since the previous version", "",
              f"Previous: {diff.get('previous') or 'none'}; added {len(diff['added'])}, removed "
              f"{len(diff['removed'])}, relabelled {len(diff['relabelled'])} (details in diff.json).", "",
              "## Fields", ""]
    lines += [f"- `{name}`: {description}{' (hidden in the public test file)' if is_label else ''}"
              for name, _t, description, is_label in FIELDS]
    lines += ["", "## Limitations", "",
              "- Labels come from model annotators; only reviewed clips (`label_status = reviewed`) carry a "
              "human decision. Unreviewed clips may be wrong more often.",
              "- Rationales and evidence are model-written and checked against measured features, not by people.",
              "- Speakers and groups come from the source manifest; sources without them are grouped by file only.",
              "- Licenses and consent are carried from the manifest as given; clips without consent are left out.", ""]
    return "\n".join(lines)
