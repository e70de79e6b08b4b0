"""The sampling stage: one decode pass per source -> clips with key frames.

For each usable source, `sample_source` decodes the file once and feeds shot
detection, key-frame candidates, voice activity detection and the 16 kHz audio cache
from that pass, plans clips, picks diverse key frames per clip, and commits the
clips with the stage status in one transaction. `sample_sources` does that for every
source whose sampling config changed or that has not been sampled, recording a
failure with its reason and going on to the next.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from merforge import __version__
from merforge.errors import MediaError, MerforgeError
from merforge.preprocess import shots as shots_module
from merforge.preprocess import vad as vad_module
from merforge.preprocess.features import write_faces
from merforge.preprocess.ingest import file_sha256
from merforge.preprocess.keyframes import KeyframeCandidates, select_diverse
from merforge.preprocess.media import DecodeStats, WavWriter, decode_once
from merforge.preprocess.planner import plan_clips
from merforge.progress import NoProgress, Progress
from merforge.storage.records import (
    Clip,
    KeyFrame,
    Provenance,
    Source,
    SourceStatus,
    StageState,
    StageStatus,
    clip_id,
)
from merforge.storage.workspace import Workspace

STAGE = "sample"


@dataclass
class SampleOutcome:
    source_id: str
    path: str
    state: str  # done | skipped | failed
    clips: int = 0
    reason: str = ""
    seconds_of_media: float = 0.0
    warnings: list[str] = field(default_factory=list)


@dataclass
class SampleReport:
    outcomes: list[SampleOutcome] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for o in self.outcomes if o.state == state)


def _provenance(workspace: Workspace) -> Provenance:
    config = workspace.config
    model = f"{config.shots.detector} detector (PySceneDetect {shots_module.detector_version()}); silero-vad {vad_module.silero_version()}; key frames by {config.keyframes.method}"
    return Provenance(backend="merforge.sample", model=model, version=__version__, config_hash=config.sampling_hash())


def _check_unchanged(source: Source) -> str | None:
    """Why the file can no longer be sampled, or None if it is still the ingested file."""
    path = Path(source.path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return f"file disappeared since ingest: {path}"
    except OSError as error:
        return f"cannot read {path}: {error.strerror}"
    if stat.st_size != source.size_bytes:
        return f"file changed since ingest ({source.size_bytes} -> {stat.st_size} bytes); ingest it again"
    if stat.st_mtime != source.mtime and file_sha256(path) != source.id:
        return "file content changed since ingest; ingest it again"
    return None


def sample_source(workspace: Workspace, source: Source, progress: Progress | None = None) -> SampleOutcome:
    """Sample one source; commits its clips and status. Failures are recorded, not raised."""
    config = workspace.config
    store = workspace.store
    config_hash = config.sampling_hash()

    def fail(reason: str, warnings: list[str] | None = None) -> SampleOutcome:
        store.set_status(StageStatus(item_id=source.id, stage=STAGE, state=StageState.FAILED, reason=reason,
                                     config_hash=config_hash, details={"path": source.path}))
        return SampleOutcome(source.id, source.path, "failed", reason=reason, warnings=warnings or [])

    problem = _check_unchanged(source)
    if problem:
        return fail(problem)
    media = source.media
    assert media is not None, "usable sources always carry media info"

    tag = f"{source.id[:16]}-{os.getpid()}"
    spool = workspace.tmp_dir() / f"spool-{tag}"
    frame_consumers: list = []
    audio_consumers: list = []
    detector = candidates = speech = wav = None
    faces = None
    if media.video:
        detector = shots_module.ShotDetector(config.shots, media.video.fps)
        candidates = KeyframeCandidates(config.keyframes, spool)
        frame_consumers = [detector, candidates]
        if config.face.enabled:
            from merforge.preprocess.faces import FaceAnalyzer

            try:
                faces = FaceAnalyzer(config.face, source_path=Path(source.path), tiles=config.face.small_faces)
            except MerforgeError as error:
                return fail(f"face analysis cannot run: {error}")
            frame_consumers.append(faces)
    if media.audio:
        speech = vad_module.SpeechDetector(config.vad)
        wav = WavWriter(workspace.audio_cache_path(source.id))
        audio_consumers = [speech, wav]
    try:
        try:
            stats: DecodeStats = decode_once(
                Path(source.path), frame_consumers, audio_consumers,
                working_width=config.decode.working_width, threads=config.decode.threads, progress=progress,
            )
        except MediaError as error:
            if wav:
                wav.abort()
            return fail(str(error))
        duration = max(stats.video_end, stats.audio_seconds)
        if duration <= 0:
            return fail("nothing could be decoded from the file", stats.warnings)
        cuts = detector.cuts if detector else []
        segments = speech.segments if speech else []
        if faces is not None:
            # Now that speech is known, it can break ties between candidate primary faces.
            faces.assign_primary([(s.start, s.end) for s in segments])
            write_faces(workspace.features_dir(source.id), faces.observations, faces.analysed_times,
                        backend=_face_backend(config.face))
        plan = plan_clips(
            duration=duration,
            speech=[(s.start, s.end) for s in segments],
            cuts=[c.time for c in cuts],
            has_video=stats.video_frames > 0,
            config=config.planner,
        )
        clips = _materialise(workspace, source, plan.clips, candidates)
        details = {
            "path": source.path,
            "decoded_seconds": round(duration, 3),
            "video_frames": stats.video_frames,
            "cuts": [[c.frame, round(c.time, 3)] for c in cuts],
            "speech": [[round(s.start, 3), round(s.end, 3)] for s in segments],
            "dropped_short": plan.dropped_short,
            "warnings": stats.warnings,
            "audio_cache": workspace.relative(workspace.audio_cache_path(source.id)) if wav else "",
        }
        store.replace_clips(source.id, clips, StageStatus(item_id=source.id, stage=STAGE, state=StageState.DONE,
                                                          config_hash=config_hash, details=details))
        return SampleOutcome(source.id, source.path, "done", clips=len(clips), seconds_of_media=duration,
                             warnings=stats.warnings)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _face_backend(face_config) -> str:
    names = {"geometry": "mediapipe 0.10.21 face mesh (LiteRT) + geometric AU estimates",
             "pyfeat": "mediapipe face mesh (LiteRT) + py-feat AU detector",
             "openface-csv": "mediapipe face mesh (LiteRT) + OpenFace 2 CSV AUs"}
    if face_config.expression:
        from merforge.preprocess.expression import MODEL_NAME

        return f"{names[face_config.au_backend]} + expressions: {MODEL_NAME}"
    return names[face_config.au_backend]


def _materialise(workspace: Workspace, source: Source, planned, candidates: KeyframeCandidates | None) -> list[Clip]:
    """Choose key frames per clip, move their JPEGs into place atomically, build Clip records."""
    config = workspace.config.keyframes
    provenance = _provenance(workspace)
    final_dir = workspace.keyframe_dir(source.id)
    staging = final_dir.with_name(f".{final_dir.name}.new-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    clips = []
    for plan in planned:
        chosen = select_diverse(candidates.within(plan.start, plan.end), config.per_clip, config.method) if candidates else []
        keyframes = []
        for candidate in chosen:
            name = candidate.path.name
            target = staging / name
            if not target.exists():
                try:
                    os.link(candidate.path, target)
                except OSError:
                    shutil.copyfile(candidate.path, target)
            keyframes.append(KeyFrame(time=round(candidate.time, 6), path=f"{workspace.relative(final_dir)}/{name}"))
        clips.append(Clip(id=clip_id(source.id, plan.start, plan.end), source_id=source.id, start=plan.start,
                          end=plan.end, origin=plan.origin, keyframes=tuple(keyframes), provenance=provenance))
    # Swap the folders: readers see the old set or the new set, never half of one.
    retired = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
    if final_dir.exists():
        os.replace(final_dir, retired)
    os.replace(staging, final_dir)
    shutil.rmtree(retired, ignore_errors=True)
    return clips


def needs_sampling(workspace: Workspace, source: Source) -> bool:
    status = workspace.store.get_status(source.id, STAGE)
    return not (status and status.state == StageState.DONE and status.config_hash == workspace.config.sampling_hash())


def sample_sources(workspace: Workspace, force: bool = False, progress: Progress | None = None) -> SampleReport:
    """Sample every usable source that is new, failed before, or sampled with another config."""
    progress = progress or NoProgress()
    report = SampleReport()
    for source in workspace.store.sources(SourceStatus.OK):
        if not force and not needs_sampling(workspace, source):
            report.outcomes.append(SampleOutcome(source.id, source.path, "skipped"))
            continue
        report.outcomes.append(sample_source(workspace, source, progress))
    return report
