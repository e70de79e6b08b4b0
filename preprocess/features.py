"""The preprocessing stage: per clip, the evidence annotators and the judge will cite.

For each sampled source with clips that need work, `preprocess_source`:
  1. reads the 16 kHz audio cached by the sampling pass (optionally denoised),
  2. diarizes the source's speech once (speaker labels stay consistent across its clips),
  3. computes the 10 ms prosody track once,
transcribes neighbouring speech clips together in windows of up to ASR_WINDOW seconds
(Whisper keeps its context across a clip boundary, and memory stays bounded), and then
for each clip takes its words (those whose midpoint, else whose end, lies in it), with the clip's
own language and, for non-English speech, an English translation (preprocess.asr.transcribe_clips),
assigns speakers to
words, measures prosody over the clip, summarises the faces analysed during
sampling, and writes an aligned timeline (Parquet, `timeline.rate` rows per second)
and a word table with per-word prosody. Each clip's features and status are committed
together; a clip whose inputs and config are unchanged is skipped, and one clip's
failure is recorded with its reason while the others go on.

A corpus of short files is worked in groups (`plan_groups`, `preprocess_group`): the
speech clips of several short sources share ASR windows (`transcribe_packed`), then each
source is preprocessed as above with its transcripts already made.
"""

from __future__ import annotations

import io
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from merforge import __version__
from merforge.errors import MerforgeError, resource_error
from merforge.preprocess import asr as asr_module
from merforge.preprocess.media import AUDIO_RATE, read_wav
from merforge.preprocess.expression import EXPRESSION_CONCEPTS
from merforge.preprocess.timeline import (
    AU_NAMES,
    EXPRESSION_COLUMNS,
    assign_speakers,
    build_timeline,
    canonical_au,
    word_table,
)
from merforge.progress import NoProgress, Progress
from merforge.storage.records import (
    Clip,
    ClipFeatures,
    FaceObservation,
    FaceSummary,
    ProsodyStats,
    Provenance,
    Source,
    SpeakerTurn,
    StageState,
    StageStatus,
    Transcript,
)
from merforge.storage.workspace import Workspace, write_atomic

STAGE = "preprocess"
SAMPLE_STAGE = "sample"
ASR_WINDOW = 30.0  # seconds of audio per ASR call at most
ASR_JOIN_GAP = 1.0  # clips closer than this share an ASR window
# Sources whose speech clips add up to at most `asr.pack_seconds` are "short" (a corpus
# utterance): their clips are packed, several sources together, into shared ASR windows of
# at most that length, ASR_PACK_GAP seconds of silence apart (see `transcribe_packed`).
ASR_PACK_GAP = 1.0
PACK_GROUP_WINDOWS = 4  # shared ASR windows per group of short sources


def works_alone(clip_seconds: float, config) -> bool:
    """Whether a source with `clip_seconds` of clips to preprocess is a unit of work on its
    own (long media) rather than packed with other short sources (`plan_groups`)."""
    return clip_seconds > config.asr.pack_seconds


@dataclass
class PreprocessOutcome:
    clip_id: str
    source_path: str
    state: str  # done | skipped | failed
    reason: str = ""
    seconds: float = 0.0


@dataclass
class PreprocessReport:
    outcomes: list[PreprocessOutcome] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds of wall time per part

    def count(self, state: str) -> int:
        return sum(1 for o in self.outcomes if o.state == state)


def summarise(report: PreprocessReport) -> dict:
    return {"done": report.count("done"), "failed": report.count("failed"), "skipped": report.count("skipped"),
            "timings": {k: round(v, 3) for k, v in report.timings.items()}}


def stage_hash(workspace: Workspace) -> str:
    """Features depend on the preprocessing settings and on what sampling produced."""
    return workspace.config.preprocess_hash() + workspace.config.sampling_hash()[:8]


def needs_preprocessing(workspace: Workspace, clip: Clip) -> bool:
    status = workspace.store.get_status(clip.id, STAGE)
    return not (status and status.state == StageState.DONE and status.config_hash == stage_hash(workspace))


def _timed(timings: dict[str, float], key: str):
    import time

    class _Timer:
        def __enter__(self):
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - self.start

    return _Timer()


def read_faces(workspace: Workspace, source_id: str) -> tuple[list[FaceObservation], list[float], str]:
    """Face observations and analysed frame times written by the sampling pass."""
    folder = workspace.features_dir(source_id)
    faces_path, frames_path = folder / "faces.parquet", folder / "face_frames.parquet"
    if not frames_path.exists():
        return [], [], ""
    frames = pq.read_table(frames_path)
    backend = (frames.schema.metadata or {}).get(b"backend", b"").decode()
    times = [float(t) for t in frames.column("time").to_pylist()]
    observations = []
    if faces_path.exists():
        for row in pq.read_table(faces_path).to_pylist():
            aus = {name: row[name] for name in AU_NAMES if row.get(name) is not None}
            # files written before the expression model ran have no expr_ columns: empty
            expression = {concept: row[name] for concept, name in zip(EXPRESSION_CONCEPTS, EXPRESSION_COLUMNS)
                          if row.get(name) is not None}
            pose = (row["yaw"], row["pitch"], row["roll"]) if row.get("yaw") is not None else None
            observations.append(FaceObservation(time=row["time"], track_id=row["track_id"],
                                                box=(row["x"], row["y"], row["width"], row["height"]),
                                                score=row["score"], aus=aus, head_pose=pose, primary=row["primary"],
                                                expression=expression))
    return observations, times, backend


def write_faces(folder: Path, observations: list[FaceObservation], analysed_times: list[float], backend: str) -> None:
    """Persist the sampling pass's face results: one row per face, one row per analysed frame."""
    counts: dict[float, int] = {}
    for face in observations:
        counts[face.time] = counts.get(face.time, 0) + 1
    frames = pa.table({"time": analysed_times, "faces": [counts.get(t, 0) for t in analysed_times]})
    frames = frames.replace_schema_metadata({"backend": backend})
    rows: dict[str, list] = {k: [] for k in ("time", "track_id", "x", "y", "width", "height", "score", "primary",
                                             *AU_NAMES, *EXPRESSION_COLUMNS, "yaw", "pitch", "roll")}
    for face in observations:
        aus = {canonical_au(k): v for k, v in face.aus.items()}
        rows["time"].append(face.time)
        rows["track_id"].append(face.track_id)
        for key, value in zip(("x", "y", "width", "height"), face.box):
            rows[key].append(float(value))
        rows["score"].append(face.score)
        rows["primary"].append(face.primary)
        for name in AU_NAMES:
            rows[name].append(aus.get(name))
        for concept, name in zip(EXPRESSION_CONCEPTS, EXPRESSION_COLUMNS):
            rows[name].append(face.expression.get(concept))
        pose = face.head_pose or (None, None, None)
        for key, value in zip(("yaw", "pitch", "roll"), pose):
            rows[key].append(value)
    schema = pa.schema([("time", pa.float64()), ("track_id", pa.int64()), ("x", pa.float64()), ("y", pa.float64()),
                        ("width", pa.float64()), ("height", pa.float64()), ("score", pa.float64()),
                        ("primary", pa.bool_()), *[(n, pa.float64()) for n in AU_NAMES],
                        *[(n, pa.float64()) for n in EXPRESSION_COLUMNS],
                        ("yaw", pa.float64()), ("pitch", pa.float64()), ("roll", pa.float64())])
    _write_parquet(folder / "faces.parquet", pa.table(rows, schema=schema))
    _write_parquet(folder / "face_frames.parquet", frames)


def _write_parquet(path: Path, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    write_atomic(path, buffer.getvalue())


def summarise_faces(observations: list[FaceObservation], analysed: list[float], start: float, end: float,
                    backend: str) -> FaceSummary:
    times = [t for t in analysed if start <= t < end]
    inside = [f for f in observations if start <= f.time < end]
    if not times:
        return FaceSummary(backend=backend)
    with_face = {f.time for f in inside}
    tracks = {f.track_id for f in inside}
    primary = [f for f in inside if f.primary]
    primary_track = max(tracks, key=lambda t: sum(1 for f in primary if f.track_id == t)) if primary else None
    mean_aus: dict[str, float] = {}
    if primary:
        for name in AU_NAMES:
            values = [f.aus[k] for f in primary for k in f.aus if canonical_au(k) == name and f.aus[k] is not None]
            if values:
                mean_aus[name] = round(float(np.mean(values)), 4)
    # Mean of the primary face's expression probabilities over the frames where the model ran.
    expressed = [f.expression for f in primary if f.expression]
    mean_expression = {concept: round(float(np.mean([e.get(concept, 0.0) for e in expressed])), 4)
                       for concept in EXPRESSION_CONCEPTS} if expressed else {}
    return FaceSummary(frames_analysed=len(times), presence=round(len(with_face) / len(times), 4), tracks=len(tracks),
                       primary_track=primary_track, mean_aus=mean_aus, mean_expression=mean_expression,
                       backend=backend)


def _clip_turns(turns: list[SpeakerTurn], start: float, end: float) -> tuple[SpeakerTurn, ...]:
    clipped = []
    for turn in turns:
        lo, hi = max(turn.start, start), min(turn.end, end)
        if hi > lo:
            clipped.append(turn.model_copy(update={"start": round(lo, 3), "end": round(hi, 3)}))
    return tuple(clipped)


def _speech_overlaps(speech: list[list[float]], start: float, end: float) -> bool:
    return any(s < end and e > start for s, e in speech)


def asr_windows(clips: list[Clip], speech: list[list[float]]) -> list[tuple[float, float, list[Clip]]]:
    """Group time-ordered speech clips into (start, end, clips) windows of at most ASR_WINDOW s."""
    windows: list[tuple[float, float, list[Clip]]] = []
    for clip in sorted(clips, key=lambda c: c.start):
        if not _speech_overlaps(speech, clip.start, clip.end):
            continue
        if windows:
            start, end, members = windows[-1]
            if clip.start - end <= ASR_JOIN_GAP and max(end, clip.end) - start <= ASR_WINDOW:
                windows[-1] = (start, max(end, clip.end), members + [clip])
                continue
        windows.append((clip.start, clip.end, [clip]))
    return windows


def source_audio(workspace: Workspace, source: Source, timings: dict[str, float]) -> np.ndarray:
    """A source's 16 kHz audio as the sampling pass cached it (denoised when configured);
    empty for a source without audio. Raises MerforgeError when the cache is missing."""
    from merforge.preprocess import denoise as denoise_module

    if not (source.media and source.media.audio):
        return np.zeros(0, dtype=np.float32)
    audio_cache = workspace.audio_cache_path(source.id)
    if not audio_cache.exists():
        raise MerforgeError(f"audio cache {workspace.relative(audio_cache)} is missing; run `merforge sample --force`")
    with _timed(timings, "read audio"):
        samples = read_wav(audio_cache)
    if workspace.config.denoise.enabled:
        with _timed(timings, "denoise"):
            samples = denoise_module.denoise(samples, workspace.config.denoise)
    return samples


def _speech(workspace: Workspace, source_id: str) -> list[list[float]]:
    status = workspace.store.get_status(source_id, SAMPLE_STAGE)
    return status.details.get("speech", []) if status else []


@dataclass
class PackedAsr:
    """What `transcribe_packed` found: a Transcript per clip, the ASR failures (clip id ->
    reason) and the model's name."""

    transcripts: dict[str, Transcript] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    model: str = ""


def transcribe_packed(clips: list[tuple[Clip, np.ndarray]], config, timings: dict[str, float]) -> PackedAsr:
    """Transcribe the speech clips of short sources (several files) together.

    Whisper's encoder reads 30 s whatever the input, and on a 2-core machine one pass of
    Whisper base costs about 0.7 s: a corpus of 3 s utterances transcribed one file at a
    time spends most of its ASR time encoding silence padding. Here each clip's audio is
    laid one after another in one window (at most `asr.pack_seconds` of clips, ASR_PACK_GAP s
    of silence between them), transcribed as one `asr.transcribe_clips` call with one span
    per clip, and each clip's words are moved back to its own source's time. What that
    changes against transcribing each file alone: the language is detected on the
    window's speech (so on several files), and a clip whose words then come out unsure,
    or empty, detects its own language and is decoded alone in it (`asr` module, "Language,
    per clip"); when its own detection agrees it keeps the surer of the two probabilities.
    `clips`: (clip, its audio) in packing order."""
    result = PackedAsr()
    windows: list[list[tuple[Clip, np.ndarray]]] = []
    length = 0.0
    for clip, audio in clips:
        seconds = audio.size / AUDIO_RATE
        if not windows or length + ASR_PACK_GAP + seconds > config.asr.pack_seconds:
            windows.append([])
            length = -ASR_PACK_GAP
        windows[-1].append((clip, audio))
        length += ASR_PACK_GAP + seconds
    gap = np.zeros(int(ASR_PACK_GAP * AUDIO_RATE), dtype=np.float32)
    for members in windows:
        parts, spans, position = [], [], 0.0
        for clip, audio in members:
            if parts:
                parts.append(gap)
                position += gap.size / AUDIO_RATE
            parts.append(audio.astype(np.float32, copy=False))
            spans.append((position, position + audio.size / AUDIO_RATE))
            position += audio.size / AUDIO_RATE
        try:
            with _timed(timings, "asr"):
                window = asr_module.transcribe_clips(np.concatenate(parts), spans, config.asr, offset=0.0)
        except MerforgeError as error:
            result.failures.update((clip.id, str(error)) for clip, _ in members)
            continue
        result.model = window.model
        for (clip, _), (span_start, _), transcript in zip(members, spans, window.transcripts):
            shift = clip.start - span_start
            words = tuple(w.model_copy(update={"start": round(w.start + shift, 3), "end": round(w.end + shift, 3)})
                          for w in transcript.words)
            result.transcripts[clip.id] = transcript.model_copy(update={"words": words})
    return result


def plan_groups(workspace: Workspace, force: bool = False) -> tuple[list[list[tuple[str, list[str]]]], list[str]]:
    """The preprocessing work as groups of (source id, clip ids), and the ids of clips that
    are current (skipped). A source with more than `asr.pack_seconds` of clips is a
    group of its own; short sources are dealt, in workspace order, into groups whose speech
    clips fill shared ASR windows (`transcribe_packed`), up to a few windows per group so
    that a failed or interrupted group loses little."""
    by_source: dict[str, list[str]] = {}
    durations: dict[str, float] = {}
    skipped: list[str] = []
    store = workspace.store
    for clip in store.iter_clips():
        if force or needs_preprocessing(workspace, clip):
            by_source.setdefault(clip.source_id, []).append(clip.id)
            durations[clip.source_id] = durations.get(clip.source_id, 0.0) + clip.duration
        else:
            skipped.append(clip.id)
    groups: list[list[tuple[str, list[str]]]] = []
    packed: list[tuple[str, list[str]]] = []
    packed_seconds = 0.0
    config = workspace.config
    for source_id, clip_ids in by_source.items():
        if works_alone(durations[source_id], config):
            groups.append([(source_id, clip_ids)])
            continue
        if packed and packed_seconds + durations[source_id] > PACK_GROUP_WINDOWS * config.asr.pack_seconds:
            groups.append(packed)
            packed, packed_seconds = [], 0.0
        packed.append((source_id, clip_ids))
        packed_seconds += durations[source_id] + ASR_PACK_GAP
    if packed:
        groups.append(packed)
    return groups, skipped


def preprocess_group(workspace: Workspace, group: list[tuple[str, list[str]]], progress: Progress | None = None,
                     timings: dict[str, float] | None = None) -> list[PreprocessOutcome]:
    """Preprocess one group of `plan_groups`: a long source on its own, or short sources
    whose speech clips are transcribed together (`transcribe_packed`) before each source's
    own work (`preprocess_source`)."""
    timings = timings if timings is not None else {}
    store = workspace.store
    work: list[tuple[Source, list[Clip]]] = []
    for source_id, clip_ids in group:
        wanted = set(clip_ids)
        work.append((store.get_source(source_id), [c for c in store.clips(source_id) if c.id in wanted]))
    if len(work) == 1 and works_alone(sum(c.duration for c in work[0][1]), workspace.config):
        source, clips = work[0]
        return preprocess_source(workspace, source, clips, progress, timings)
    audio: dict[str, np.ndarray] = {}
    speech_clips: list[tuple[Clip, np.ndarray]] = []
    for source, clips in work:
        try:
            samples = source_audio(workspace, source, timings)
        except MerforgeError:
            continue  # preprocess_source reads it again and records the failure per clip
        audio[source.id] = samples
        speech = _speech(workspace, source.id)
        for clip in sorted(clips, key=lambda c: c.start):
            if samples.size and _speech_overlaps(speech, clip.start, clip.end):
                speech_clips.append((clip, samples[int(clip.start * AUDIO_RATE): int(clip.end * AUDIO_RATE)]))
    packed = transcribe_packed(speech_clips, workspace.config, timings) if speech_clips else PackedAsr()
    outcomes = []
    for source, clips in work:
        outcomes += preprocess_source(workspace, source, clips, progress, timings, samples=audio.get(source.id),
                                      packed=packed)
    return outcomes


def _diarization_model(config) -> str:
    if config.backend == "pyannote":
        return config.pyannote_model
    return "resemblyzer VoiceEncoder (weights in its wheel) + clustering"


def preprocess_source(workspace: Workspace, source: Source, clips: list[Clip], progress: Progress | None = None,
                      timings: dict[str, float] | None = None, samples: np.ndarray | None = None,
                      packed: PackedAsr | None = None) -> list[PreprocessOutcome]:
    """Preprocess the given clips of one source (see the module docstring). `samples`: its
    audio when the caller has read it already (`source_audio`); `packed`: transcripts made
    by `transcribe_packed` (its clips are not transcribed again)."""
    from merforge.preprocess import diarization, prosody

    progress = progress or NoProgress()
    timings = timings if timings is not None else {}
    config = workspace.config
    store = workspace.store
    config_hash = stage_hash(workspace)
    outcomes: list[PreprocessOutcome] = []

    def fail_all(reason: str) -> list[PreprocessOutcome]:
        for clip in clips:
            store.set_status(StageStatus(item_id=clip.id, stage=STAGE, state=StageState.FAILED, reason=reason,
                                         config_hash=config_hash, details={"path": source.path}))
            outcomes.append(PreprocessOutcome(clip.id, source.path, "failed", reason))
        return outcomes

    speech = _speech(workspace, source.id)
    provenance: dict[str, Provenance] = {}
    try:
        if samples is None:
            samples = source_audio(workspace, source, timings)
        if samples.size and config.denoise.enabled:
            provenance["denoise"] = Provenance(backend="noisereduce", config_hash=config.section_hash("denoise"))
        turns: list[SpeakerTurn] = []
        if speech:
            with _timed(timings, "diarization"):
                # once per source, so a speaker keeps its label in every clip; too little
                # speech to tell speakers apart is all S1, with the reason in the note
                diarized = diarization.diarize_speech(samples, [tuple(s) for s in speech], config.diarization)
            turns = diarized.turns
            model = "" if diarized.skipped_reason else _diarization_model(config.diarization)
            provenance["diarization"] = Provenance(backend=config.diarization.backend, model=model,
                                                   config_hash=config.section_hash("diarization"),
                                                   note=diarized.skipped_reason)
        with _timed(timings, "prosody track"):
            track = prosody.prosody_track(samples, config.prosody) if samples.size else None
        prosody_times = (np.asarray(track.times) if track is not None else np.zeros(0))
        f0 = np.asarray(track.f0) if track is not None else np.zeros(0)
        intensity = np.asarray(track.intensity) if track is not None else np.zeros(0)
        faces, face_times, face_backend = read_faces(workspace, source.id)
    except MerforgeError as error:
        return fail_all(str(error))

    face_interval = 1.0 / config.face.fps
    features_dir = workspace.features_dir(source.id)
    progress.start(f"preprocess {Path(source.path).name}", len(clips))
    packed = packed or PackedAsr()
    mine = {c.id for c in clips}
    transcripts: dict[str, Transcript] = {k: v for k, v in packed.transcripts.items() if k in mine}
    asr_failures: dict[str, str] = {k: v for k, v in packed.failures.items() if k in mine}
    if transcripts:
        provenance["asr"] = Provenance(backend=asr_module.BACKEND, model=packed.model,
                                       config_hash=config.section_hash("asr"))
    if samples.size:
        todo = [c for c in clips if c.id not in transcripts and c.id not in asr_failures]
        for start, end, members in asr_windows(todo, speech):
            try:
                with _timed(timings, "asr"):
                    # per clip: its words (by midpoint), its language, its English translation
                    result = asr_module.transcribe_clips(samples[int(start * AUDIO_RATE): int(end * AUDIO_RATE)],
                                                         [(c.start, c.end) for c in members], config.asr, offset=start)
            except MerforgeError as error:
                for clip in members:
                    asr_failures[clip.id] = str(error)
                continue
            provenance["asr"] = Provenance(backend=asr_module.BACKEND, model=result.model,
                                           config_hash=config.section_hash("asr"))
            transcripts.update((clip.id, transcript) for clip, transcript in zip(members, result.transcripts))
    for clip in clips:
        try:
            if clip.id in asr_failures:
                raise asr_module.AsrModelError(asr_failures[clip.id])
            window = samples[int(clip.start * AUDIO_RATE): int(clip.end * AUDIO_RATE)]
            transcript = transcripts.get(clip.id, Transcript(language="", language_probability=0.0, text=""))
            clip_turns = _clip_turns(turns, clip.start, clip.end)
            words = assign_speakers(transcript.words, clip_turns) if clip_turns else list(transcript.words)
            transcript = transcript.model_copy(update={"words": tuple(words)})
            with _timed(timings, "prosody stats"):
                stats = (prosody.prosody_stats(window, config.prosody, words=words, offset=clip.start)
                         if window.size else ProsodyStats())
            provenance["prosody"] = Provenance(backend="praat-parselmouth" + (" + opensmile eGeMAPSv02" if config.prosody.egemaps else ""),
                                               config_hash=config.section_hash("prosody"))
            if face_backend:
                provenance["faces"] = Provenance(backend=face_backend, config_hash=config.section_hash("face"))
            with _timed(timings, "alignment"):
                timeline = build_timeline(clip.start, clip.end, config.timeline.rate, words, clip_turns,
                                          prosody_times, f0, intensity, faces, face_times, face_interval)
                words_table = word_table(words, prosody_times, f0, intensity)
                timeline_path = features_dir / f"{clip.id}.timeline.parquet"
                words_path = features_dir / f"{clip.id}.words.parquet"
                _write_parquet(timeline_path, timeline)
                _write_parquet(words_path, words_table)
            clip_provenance = dict(provenance)
            if transcript.translation:
                clip_provenance["translation"] = Provenance(backend=asr_module.BACKEND,
                                                            model=provenance["asr"].model + ", task=translate",
                                                            config_hash=config.section_hash("asr"))
            features = ClipFeatures(
                clip_id=clip.id, source_id=source.id, transcript=transcript, speaker_turns=clip_turns, prosody=stats,
                faces=summarise_faces(faces, face_times, clip.start, clip.end, face_backend),
                timeline_path=workspace.relative(timeline_path), words_path=workspace.relative(words_path),
                provenance={**clip_provenance, "merforge": Provenance(backend="merforge.preprocess", version=__version__,
                                                                 config_hash=config_hash)},
                config_hash=config_hash,
            )
            store.save_features(features, StageStatus(item_id=clip.id, stage=STAGE, state=StageState.DONE,
                                                       config_hash=config_hash,
                                                       details={"path": source.path, "words": len(words)}))
            outcomes.append(PreprocessOutcome(clip.id, source.path, "done", seconds=clip.duration))
        except MerforgeError as error:
            reason = str(error)
            store.set_status(StageStatus(item_id=clip.id, stage=STAGE, state=StageState.FAILED, reason=reason,
                                         config_hash=config_hash, details={"path": source.path}))
            outcomes.append(PreprocessOutcome(clip.id, source.path, "failed", reason))
        except Exception as error:  # one clip's bug must not stop the others; keep the trace for the report
            if resource_error(error):  # a full disk or a locked database is not this clip's fault: stop
                raise resource_error(error) from error
            reason = f"{type(error).__name__}: {error}"
            store.set_status(StageStatus(item_id=clip.id, stage=STAGE, state=StageState.FAILED, reason=reason,
                                         config_hash=config_hash,
                                         details={"path": source.path, "trace": traceback.format_exc()[-2000:]}))
            outcomes.append(PreprocessOutcome(clip.id, source.path, "failed", reason))
        progress.advance(1)
    progress.finish()
    return outcomes


def preprocess_sources(workspace: Workspace, force: bool = False, progress: Progress | None = None) -> PreprocessReport:
    """Preprocess every sampled clip that is new or whose inputs or config changed."""
    groups, skipped = plan_groups(workspace, force)
    report = PreprocessReport(outcomes=[PreprocessOutcome(clip_id, "", "skipped") for clip_id in skipped])
    for group in groups:
        report.outcomes += preprocess_group(workspace, group, progress, report.timings)
    return report
