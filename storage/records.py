"""Records passed between stages, defined once.

Times are seconds from the start of the source file; sizes are bytes; rates are Hz.
Later stages add their own records here (Transcript, Annotation, ...).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class Provenance(_Record):
    """Which code and model produced a record, with which config, and when."""

    backend: str
    model: str = ""
    version: str = ""
    config_hash: str = ""
    created_at: datetime = Field(default_factory=utc_now)
    note: str = ""  # plain words for the curator, e.g. why a step did not run


class SourceStatus(StrEnum):
    OK = "ok"
    UNUSABLE = "unusable"  # probed and rejected, with a reason


class VideoInfo(_Record):
    codec: str
    width: int
    height: int
    fps: float
    frames: int | None = None
    duration: float | None = None


class AudioInfo(_Record):
    codec: str
    sample_rate: int
    channels: int
    duration: float | None = None


class MediaInfo(_Record):
    """What probing a file found; durations in seconds."""

    container: str
    duration: float
    video: VideoInfo | None = None
    audio: AudioInfo | None = None

    @property
    def kind(self) -> str:
        if self.video and self.audio:
            return "audio+video"
        return "video" if self.video else "audio"


class Source(_Record):
    """One input media file. `id` is the sha256 of its bytes, so a moved file keeps its id."""

    id: str
    path: str
    size_bytes: int
    mtime: float
    status: SourceStatus
    reason: str = ""
    media: MediaInfo | None = None
    license: str = ""
    consent: str = ""
    speaker: str = ""
    group: str = ""
    extra: dict[str, str] = Field(default_factory=dict)
    ingested_at: datetime = Field(default_factory=utc_now)


class KeyFrame(_Record):
    time: float  # presentation time of the frame, seconds
    path: str  # relative to the workspace


class ClipOrigin(StrEnum):
    SPEECH = "speech"  # speech segment (audio-only files, or speech inside one shot)
    SHOT = "shot"  # a shot with no speech in it, or any shot in "shots" mode
    SPEECH_IN_SHOT = "speech+shot"  # speech segment cut at a shot boundary


class Clip(_Record):
    id: str
    source_id: str
    start: float
    end: float
    origin: ClipOrigin
    keyframes: tuple[KeyFrame, ...] = ()
    provenance: Provenance

    @property
    def duration(self) -> float:
        return self.end - self.start


def clip_id(source_id: str, start: float, end: float) -> str:
    """Content-derived clip id: the same source range always gets the same id."""
    key = f"{source_id}:{round(start * 1000)}:{round(end * 1000)}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


class StageState(StrEnum):
    DONE = "done"
    FAILED = "failed"


class StageStatus(_Record):
    """The outcome of one stage on one item (a source or a clip)."""

    item_id: str
    stage: str
    state: StageState
    reason: str = ""
    config_hash: str = ""
    details: dict[str, Any] = Field(default_factory=dict)
    updated_at: datetime = Field(default_factory=utc_now)


# -- preprocessing records (issue: ASR, speakers, prosody, faces, alignment) ---------


class Word(_Record):
    """One recognised word; times in seconds from the start of the source file."""

    start: float
    end: float
    text: str
    probability: float  # 0..1, the recogniser's confidence
    speaker: str = ""


class Transcript(_Record):
    """One clip's speech. `language` (ISO 639-1 code, "" when unknown) and
    `language_probability` (0..1; 1.0 when the language was given, not detected) are the
    clip's own (preprocess.asr explains how a window's decode applies to its clips).
    `translation` is Whisper's English translation for non-English speech ("" for English,
    for no words, or with asr.translate off); the features' provenance["translation"]
    names the model that made it."""

    language: str
    language_probability: float
    text: str
    words: tuple[Word, ...] = ()
    translation: str = ""


class SpeakerTurn(_Record):
    start: float  # seconds from the start of the source file
    end: float
    speaker: str  # "S1", "S2", ... within a source


class ProsodyStats(_Record):
    """Prosody of a span of speech. Hz, dB, seconds; None where nothing was voiced."""

    f0_mean: float | None = None
    f0_sd: float | None = None
    f0_range: float | None = None  # 5th..95th percentile span, Hz
    f0_slope: float | None = None  # Hz per second, least squares over voiced frames
    intensity_mean: float | None = None  # dB
    intensity_sd: float | None = None
    jitter_local: float | None = None  # fraction
    shimmer_local: float | None = None  # fraction
    hnr: float | None = None  # dB
    voiced_fraction: float = 0.0
    pause_count: int = 0
    pause_total: float = 0.0
    pause_longest: float = 0.0
    speech_rate_words: float | None = None  # words per second (from ASR)
    speech_rate_syllables: float | None = None  # syllable nuclei per second
    egemaps: dict[str, float] = Field(default_factory=dict)


class FaceObservation(_Record):
    """One face in one analysed frame. Box in pixels of the source frame (x, y, width, height)."""

    time: float
    track_id: int
    box: tuple[float, float, float, float]
    score: float
    aus: dict[str, float] = Field(default_factory=dict)  # AU name -> estimate (0..1 for geometry)
    head_pose: tuple[float, float, float] | None = None  # yaw, pitch, roll in degrees
    primary: bool = False
    # concept (anger, disgust, fear, happiness, neutral, sadness, surprise) -> probability from the
    # expression model (preprocess.expression), summing to 1; empty where it did not run
    expression: dict[str, float] = Field(default_factory=dict)


class FaceSummary(_Record):
    """Faces over a clip, from the frames analysed during sampling."""

    frames_analysed: int = 0
    presence: float = 0.0  # share of analysed frames with a face, 0..1
    tracks: int = 0
    primary_track: int | None = None
    mean_aus: dict[str, float] = Field(default_factory=dict)  # primary face, over the clip
    # primary face, over the clip: mean expression-model probability per concept (sums to 1); empty
    # where the model did not run
    mean_expression: dict[str, float] = Field(default_factory=dict)
    backend: str = ""  # the face models and AU backend that ran (the expression model included)


class ClipFeatures(_Record):
    """Everything preprocessing measured for one clip, with where each part came from."""

    clip_id: str
    source_id: str
    transcript: Transcript
    speaker_turns: tuple[SpeakerTurn, ...] = ()
    prosody: ProsodyStats = ProsodyStats()
    faces: FaceSummary = FaceSummary()
    timeline_path: str = ""  # Parquet, relative to the workspace
    words_path: str = ""
    provenance: dict[str, Provenance] = Field(default_factory=dict)  # per part: asr, diarization, ...
    config_hash: str = ""


# -- annotation records (issue: annotator agents) -------------------------------------


class AnnotationStatus(StrEnum):
    OK = "ok"
    INVALID = "invalid"  # answered, but not in the contract (bad JSON, label outside the space, ...)
    REFUSED = "refused"  # the model declined
    ERROR = "error"  # no usable answer: endpoint errors, timeouts, exhausted retries
    ABSTAINED = "abstained"  # nothing to judge (no words, no voiced speech, no face): no label, never a vote


class EvidenceItem(_Record):
    """One piece of evidence an annotator cites, tied to a time range of the source (s)."""

    modality: Literal["text", "audio", "visual"]
    start: float
    end: float
    claim: str  # what the annotator says it saw or heard
    feature: str = ""  # measured feature the claim rests on ("f0_mean", "AU12", "word"), if any
    value: float | None = None  # the measured value cited, if any


class Annotation(_Record):
    """One annotator's answer for one clip: {label, step-by-step rationale, modality evidence}."""

    id: str
    clip_id: str
    annotator_id: str
    model: str = ""
    endpoint: str = ""  # base URL for LLM agents; "offline" for specialist agents
    prompt_version: str = ""
    temperature: float | None = None
    label_space: str = ""
    label: str | None = None  # primary label, in the label space
    label_probabilities: dict[str, float] = Field(default_factory=dict)  # over the label space, sums to ~1
    labels: tuple[str, ...] = ()  # multi-label set (includes `label`)
    intensity: float | None = None  # 0..1
    valence: float | None = None  # -1..1
    arousal: float | None = None  # -1..1
    steps: tuple[str, ...] = ()  # "Step 1: ...", ..., the last one states the label
    evidence: tuple[EvidenceItem, ...] = ()
    raw_response: str = ""
    status: AnnotationStatus = AnnotationStatus.OK
    reason: str = ""
    # How much of the clip the answer's evidence covered, 0..1 (face presence, voiced share, word
    # confidence; see agents.coverage); None where it was not measured (LLM endpoints see everything).
    coverage: float | None = None
    coverage_detail: dict[str, float] = Field(default_factory=dict)  # the measures behind `coverage`
    injection_flag: bool = False  # instruction-like text found in the transcript
    injection_reason: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    cached: bool = False  # answered from the on-disk cache (no request sent)
    created_at: datetime = Field(default_factory=utc_now)


def annotation_id(clip_id: str, annotator_id: str, prompt_version: str) -> str:
    return hashlib.sha256(f"{clip_id}:{annotator_id}:{prompt_version}".encode()).hexdigest()[:24]


# -- judge, consensus and routing records (issue: judge, aggregation, routing) ----------


class ClaimCheck(_Record):
    """One claim of a rationale or evidence item checked against the measured features."""

    source: Literal["step", "evidence"]
    index: int  # step number (1-based) or evidence index (0-based)
    modality: str  # text | audio | visual | speaker | other
    claim: str
    verdict: Literal["supported", "contradicted", "unverifiable"]
    reason: str  # which measurement decided it, with the values


class JudgeScores(_Record):
    """The judge's scores for one annotation, each with its reasons. All scores 0..1."""

    annotation_id: str
    clip_id: str
    annotator_id: str
    judge: str  # "evidence" or "llm:<endpoint name>"
    status: Literal["ok", "unparseable", "error", "abstained"] = "ok"  # abstained: the answer had no label to score
    reason: str = ""
    s_rec: float | None = None
    s_reason: float | None = None
    s_cot: float | None = None
    s_final: float | None = None
    weights: tuple[float, float, float] = (0.4, 0.35, 0.25)  # a, b, c for S_rec, S_reason, S_cot
    checks: tuple[ClaimCheck, ...] = ()
    reasons: dict[str, str] = Field(default_factory=dict)  # "s_rec" / "s_reason" / "s_cot" -> why
    sufficient: bool | None = None  # does the cited evidence alone support the label?
    sufficiency_reason: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


class Route(StrEnum):
    AUTO_ACCEPT = "auto-accept"
    REVIEW = "review"
    AUDIT = "audit"  # auto-accepted, but drawn at random for review so its precision is measured
    NO_EVIDENCE = "no-evidence"  # every agent abstained and route.no_evidence = "mark": no label, not queued


class Consensus(_Record):
    """One decision per clip from all its annotations and their judge scores."""

    clip_id: str
    label: str | None  # chosen primary label
    labels: tuple[str, ...] = ()  # chosen set for multi-label spaces
    distribution: dict[str, float] = Field(default_factory=dict)  # consensus probability per label
    confidence: float = 0.0  # probability of `label` under the consensus distribution
    entropy: float = 0.0  # normalised entropy of the distribution, 0..1
    majority_label: str | None = None
    weighted_label: str | None = None  # S_final-weighted vote
    dawid_skene_label: str | None = None
    conflict: bool = False  # audio-, visual- and text-led evidence point different ways
    conflict_reason: str = ""
    route: Route = Route.REVIEW
    route_reasons: tuple[str, ...] = ()
    priority: float = 0.0  # review order: higher first (most informative)
    intensity: float | None = None
    valence: float | None = None
    arousal: float | None = None


# -- review records (issue: review UI) --------------------------------------------------


class ReviewDecision(StrEnum):
    ACCEPT = "accept"  # the pipeline's label is right
    CORRECT = "correct"  # the reviewer gives the right label(s)
    REJECT = "reject"  # the clip is unusable (no emotion to judge, broken media, ...)
    SKIP = "skip"  # no decision; the clip goes back to the queue


class Review(_Record):
    """A curator's decision on one clip. Double-annotated clips get two, made blind."""

    id: str
    clip_id: str
    reviewer: str
    decision: ReviewDecision
    label: str | None = None  # final primary label (the pipeline's on accept, the reviewer's on correct)
    labels: tuple[str, ...] = ()
    intensity: float | None = None  # 0..1
    valence: float | None = None  # -1..1
    arousal: float | None = None  # -1..1
    comment: str = ""
    seconds_spent: float = 0.0
    blind: bool = False  # made without seeing the pipeline's or another reviewer's choice
    origin: Literal["ui", "label-studio", "import"] = "ui"
    pipeline_label: str | None = None  # the consensus label at review time (for agreement reports)
    created_at: datetime = Field(default_factory=utc_now)


class Reviewer(_Record):
    name: str
    is_admin: bool = False
    created_at: datetime = Field(default_factory=utc_now)
