"""Speaker diarization: who spoke when, as `SpeakerTurn`s ("S1", "S2", ... per source).

Two backends behind `diarize(samples, speech, config)`; the preprocessing stage calls
`diarize_speech`, which first asks whether the speech can be told apart at all:

- "resemblyzer" (offline default). d-vectors from Resemblyzer's GE2E speaker encoder
  (Wan et al., "Generalized End-to-End Loss for Speaker Verification", ICASSP 2018;
  weights ship in the wheel) over sliding windows inside the VAD's speech segments,
  embedded once per source, clustered by spectral clustering of the cosine affinity with
  the refinements of Wang et al., "Speaker Diarization with LSTM", ICASSP 2018 (row-wise
  thresholding, symmetrisation, diffusion). When `num_speakers` is 0 the count is the
  eigengap of the refined affinity's normalised Laplacian (von Luxburg, "A Tutorial on
  Spectral Clustering", 2007, section 8.3; nothing fitted), then clusters whose mean
  voices are closer than SPEAKER_MERGE_DISTANCE (`speaker_distance`) are merged.
  Window labels become frame labels (10 ms), short flips are smoothed away and equal
  neighbours merged into turns. One speaker at a time: overlapped speech is attributed
  to one of its speakers. ~6 ms of CPU per second of audio after the first call.
- "pyannote": a pyannote.audio 4 pipeline (Bredin, "pyannote.audio 2.1 speaker
  diarization pipeline", Interspeech 2023), an optional extra. It needs torch 2.14.1
  and torchaudio 2.11, so it is imported lazily and a missing install is a
  `DiarizationBackendError` with what to do.

What is fitted on what, and measured on what (benchmarks/diarization_bench.py; the cases
are defined once in benchmarks/diarization_sets.py): two constants are fitted, on the
FITTING set only: AMI debug dev00, pyAudioAnalysis diarizationExample (4 speakers), and
two-speaker conversations and one-speaker monologues built from EMOVO's 6 actors (real
acted emotional voices, turns of 0.4-7 s, a quarter of the changes overlapping).
SPEAKER_MERGE_DISTANCE = 0.20 minimises the mean DER of the one-speaker and multi-speaker
fitting cases (half each; flat from 0.17 to 0.23, the middle is taken);
MIN_SPEECH_SECONDS = 16 is the shortest amount of speech from which diarizing excerpts
of the fitting cases beat calling everything one speaker at every longer length measured
(2-20 s). The HELD-OUT set, on which nothing was chosen: AMI dev01 and tst00,
diarizationExample2 (6 speakers), whisper's jfk.flac, 9 RAVDESS conversations (3
female/female, 3 male/male, 3 mixed) and 5 RAVDESS monologues. Held-out DER (collar 0.25 s
total, overlap scored): mean 0.25 over the 18 cases (the replaced criterion, agglomerative
clustering stopped at a cosine distance of 0.325 tuned on all five recordings: 0.51);
conversations 0.30 (0.62), monologues 0.07 (0.42), dev01 0.43 (0.23: its two speakers are
merged), tst00 0.73 (0.75), diarizationExample2 0.17 (0.17, 5 of 6 speakers). The limit
is the d-vectors: one actor's angry and sad voices lie as far apart as two actors of the
same gender, so same-gender conversations are often found as one speaker, and AMI's two
speakers (distant microphones) lie closer than one emotional voice's extremes.

`diarization_error_rate` scores turns with pyannote.metrics (NIST DER with a forgiveness
collar, overlap scored).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from merforge.errors import MerforgeError
from merforge.preprocess.media import AUDIO_RATE
from merforge.storage.config import DiarizationConfig
from merforge.storage.records import SpeakerTurn

FRAME = 0.01  # seconds per label frame; also Resemblyzer's mel hop
# Speech segments shorter than this carry too little voice for a usable d-vector; they take
# the label of the nearest embedded window instead.
MIN_EMBED_SECONDS = 0.5
# Runs of one label shorter than this (seconds) inside a segment are speaker-change noise
# from a single window; they are relabelled with their neighbours'.
MIN_TURN_SECONDS = 0.5
# Resemblyzer's volume target (its hparams.audio_norm_target_dBFS), applied to the speech.
TARGET_DBFS = -30.0
# Spectral refinement (Wang et al. 2018): share of each affinity row kept, and the factor
# applied to the rest.
ROW_KEEP = 0.2
ROW_FLOOR = 0.01
# Clusters closer than this (`speaker_distance`) are one speaker when the count is estimated.
# Fitted by benchmarks/diarization_bench.py on its fitting set only (module docstring); the
# benchmark says whether a re-fit still gives it.
SPEAKER_MERGE_DISTANCE = 0.20
# Less speech than this (seconds, all VAD segments together) is not diarized by
# `diarize_speech`: all of it is S1. On excerpts of the fitting set holding 4-12 s of speech,
# diarizing gave DER 0.18-0.26 on one voice (0.05-0.08 calling it one speaker) and 0.25-0.32
# on two or more (0.34-0.42): worse on balance at every length but 8 s; from 16 s on it is
# better at every length measured. Fitted by the benchmark (shortest such length).
MIN_SPEECH_SECONDS = 16.0
CLUSTERING = "spectral"


@dataclass(frozen=True)
class DiarizationResult:
    """What `diarize_speech` found: the speaker turns, and why diarization did not run when
    it was skipped (plain words for the curator; empty when it ran)."""

    turns: list[SpeakerTurn]
    skipped_reason: str = ""


class DiarizationError(MerforgeError):
    """Diarization could not run on this input or with this configuration."""


class DiarizationBackendError(DiarizationError):
    """The configured diarization backend is not installed or its model cannot be loaded."""


# -- resemblyzer backend ---------------------------------------------------------


@lru_cache(maxsize=1)
def _voice_encoder():
    """The GE2E encoder, loaded once per process (~17 MB of weights from the wheel)."""
    try:
        from resemblyzer import VoiceEncoder
    except ImportError as error:  # webrtcvad needs pkg_resources (setuptools < 81)
        raise DiarizationBackendError(
            f"resemblyzer cannot be imported ({error}); install merforge's dependencies "
            "(resemblyzer, and setuptools<81 for webrtcvad)"
        ) from None
    encoder = VoiceEncoder("cpu", verbose=False)
    encoder.eval()
    return encoder


def _mel_frames(samples: np.ndarray) -> np.ndarray:
    """Resemblyzer's 40-band mel power spectrogram, (frames, 40), one frame per 10 ms."""
    from resemblyzer.audio import wav_to_mel_spectrogram

    return wav_to_mel_spectrogram(samples)


def _windows(speech: Sequence[tuple[float, float]], window: float, hop: float) -> list[tuple[float, float]]:
    """Embedding windows (start, end) in seconds: a sliding window inside each segment;
    a segment shorter than `window` (but at least MIN_EMBED_SECONDS) is one window."""
    spans = []
    for start, end in speech:
        length = end - start
        if length < MIN_EMBED_SECONDS:
            continue
        if length <= window:
            spans.append((start, end))
            continue
        count = int(np.floor((length - window) / hop)) + 1
        starts = start + hop * np.arange(count)
        # The last window is aligned to the segment end so its tail is covered too.
        if starts[-1] + window < end - 1e-6:
            starts = np.append(starts, end - window)
        spans.extend((float(s), float(s) + window) for s in starts)
    return spans


def speaker_embeddings(samples: np.ndarray, spans: Sequence[tuple[float, float]]) -> np.ndarray:
    """L2-normalised 256-d GE2E d-vectors, one per (start, end) span in seconds.

    The mel spectrogram is computed once for the whole signal and sliced per span; spans
    of equal length are embedded in one batch (the LSTM's final state is the embedding).
    """
    import torch

    if not spans:
        return np.zeros((0, 256), dtype=np.float32)
    encoder = _voice_encoder()
    mel = _mel_frames(samples)
    bounds = [(int(round(s / FRAME)), max(int(round(s / FRAME)) + 1, int(round(e / FRAME)))) for s, e in spans]
    out = np.zeros((len(spans), 256), dtype=np.float32)
    by_length: dict[int, list[int]] = {}
    for index, (a, b) in enumerate(bounds):
        by_length.setdefault(min(b, mel.shape[0]) - a, []).append(index)
    with torch.inference_mode():
        for length, indices in by_length.items():
            if length <= 0:
                continue
            batch = np.stack([mel[bounds[i][0] : bounds[i][0] + length] for i in indices])
            out[indices] = encoder(torch.from_numpy(batch)).numpy()
    return out


def _refined_affinity(embeddings: np.ndarray) -> np.ndarray:
    """Cosine affinity refined as in Wang et al. 2018 (section 2.3): each row keeps its
    strongest 20 % (at least 2) of entries and scales the rest by 0.01, then the matrix is
    symmetrised and diffused (A A^T) and rows are max-normalised. On a few dozen windows
    the paper's 95th percentile leaves one neighbour per row and splits speakers, hence 20 %."""
    affinity = np.clip(embeddings @ embeddings.T, 0.0, 1.0)
    n = affinity.shape[0]
    # Self-similarity is trivially 1; use the row's best other match instead.
    np.fill_diagonal(affinity, 0.0)
    np.fill_diagonal(affinity, affinity.max(axis=1))
    keep = min(n, max(2, int(round(ROW_KEEP * n))))
    threshold = -np.sort(-affinity, axis=1)[:, keep - 1 : keep]
    affinity = np.where(affinity >= threshold, affinity, affinity * ROW_FLOOR)
    affinity = np.maximum(affinity, affinity.T)
    affinity = affinity @ affinity.T
    affinity = affinity / affinity.max(axis=1, keepdims=True)
    return (affinity + affinity.T) / 2.0


def _eigenvalues(affinity: np.ndarray, count: int) -> np.ndarray:
    """The `count` smallest eigenvalues (ascending) of the symmetric normalised Laplacian
    I - D^-1/2 A D^-1/2 of an affinity matrix (von Luxburg 2007, section 3.2)."""
    degree = np.sqrt(affinity.sum(axis=1))
    normalised = affinity / degree[:, None] / degree[None, :]
    n = normalised.shape[0]
    count = min(count, n)
    if n <= 500:
        top = np.linalg.eigvalsh(normalised)[::-1][:count]
    else:  # Lanczos for the few largest: 1 s instead of 13 s for the 4,800 windows of an hour
        from scipy.sparse.linalg import eigsh

        top = np.sort(eigsh(normalised, k=count, which="LA", return_eigenvectors=False, v0=np.ones(n)))[::-1]
    return 1.0 - top


def estimate_speaker_count(embeddings: np.ndarray, max_speakers: int, affinity: np.ndarray | None = None) -> int:
    """Number of speakers (1..max_speakers) by the eigengap heuristic (von Luxburg 2007,
    section 8.3): k where the gap between the k-th and (k+1)-th smallest eigenvalues of the
    normalised Laplacian of the refined affinity is largest. No parameter is fitted here;
    `cluster_embeddings` then merges clusters that are too close to be two speakers.
    `affinity`: the refined affinity when the caller has it already."""
    n = embeddings.shape[0]
    if n < 3 or max_speakers == 1:
        return 1
    affinity = _refined_affinity(embeddings) if affinity is None else affinity
    return int(np.argmax(np.diff(_eigenvalues(affinity, min(max_speakers, n - 1) + 1)))) + 1


def speaker_distance(sum_a: np.ndarray, count_a: int, sum_b: np.ndarray, count_b: int) -> float:
    """Cosine distance between the mean voices of two clusters of unit d-vectors, given each
    cluster's vector sum and size: 1 - mean cross-cluster cosine / sqrt(product of the
    mean within-cluster cosines over distinct pairs). Leaving out each window's similarity
    with itself removes the bias of the plain centroid cosine, whose norm (and so distance)
    grows as clusters get small: with a few windows a single voice looks like two. A
    one-window cluster counts its within-cosine as 1."""

    def within(total: np.ndarray, count: int) -> float:
        if count < 2:
            return 1.0
        return max(1e-9, (float(total @ total) - count) / (count * (count - 1)))

    cross = float(sum_a @ sum_b) / (count_a * count_b)
    return 1.0 - cross / np.sqrt(within(sum_a, count_a) * within(sum_b, count_b))


def merge_close_speakers(embeddings: np.ndarray, labels: np.ndarray, distance: float) -> np.ndarray:
    """Labels after merging, closest pair first, clusters less than `distance` apart by
    `speaker_distance`; labels renumbered 0..k-1 in order of first appearance."""
    labels = np.asarray(labels).copy()
    while True:
        ids = list(dict.fromkeys(labels.tolist()))
        if len(ids) < 2:
            break
        sums = {i: embeddings[labels == i].sum(axis=0, dtype=np.float64) for i in ids}
        counts = {i: int(np.sum(labels == i)) for i in ids}
        gap, a, b = min((speaker_distance(sums[a], counts[a], sums[b], counts[b]), a, b)
                        for x, a in enumerate(ids) for b in ids[x + 1:])
        if gap >= distance:
            break
        labels[labels == b] = a
    _, first = np.unique(labels, return_index=True)
    order = {value: rank for rank, value in enumerate(labels[np.sort(first)])}
    return np.array([order[v] for v in labels], dtype=int)


def cluster_embeddings(embeddings: np.ndarray, num_speakers: int, max_speakers: int, method: str = CLUSTERING,
                       merge_distance: float = SPEAKER_MERGE_DISTANCE) -> np.ndarray:
    """Cluster labels (0..k-1) for L2-normalised d-vectors.

    `num_speakers` > 0: exactly that many clusters (fewer only when there are fewer windows).
    0: k from `estimate_speaker_count`, then clusters closer than `merge_distance`
    (`speaker_distance`) are merged. `method`: "spectral" (refined affinity) or
    "agglomerative" (average linkage, cosine)."""
    n = embeddings.shape[0]
    if n == 0:
        return np.zeros(0, dtype=int)
    affinity = _refined_affinity(embeddings) if n >= 3 else None  # shared by the count and spectral clustering
    k = num_speakers or estimate_speaker_count(embeddings, max_speakers, affinity)
    k = max(1, min(k, n))
    if k == 1:
        return np.zeros(n, dtype=int)
    if method == "spectral":
        from sklearn.cluster import SpectralClustering

        model = SpectralClustering(n_clusters=k, affinity="precomputed", assign_labels="cluster_qr", random_state=0)
        labels = model.fit_predict(affinity if affinity is not None else _refined_affinity(embeddings))
    else:
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average").fit_predict(embeddings)
    return labels if num_speakers else merge_close_speakers(embeddings, labels, merge_distance)


def _frame_labels(
    speech: Sequence[tuple[float, float]], spans: Sequence[tuple[float, float]], labels: np.ndarray, total: int
) -> np.ndarray:
    """A label per 10 ms frame (-1 outside speech): each speech frame takes the label of
    the window whose centre is nearest."""
    frames = np.full(total, -1, dtype=int)
    centres = np.array([(s + e) / 2.0 for s, e in spans])
    order = np.argsort(centres)
    centres, ordered = centres[order], labels[order]
    for start, end in speech:
        a, b = int(round(start / FRAME)), min(total, int(round(end / FRAME)))
        if b <= a:
            continue
        times = (np.arange(a, b) + 0.5) * FRAME
        right = np.clip(np.searchsorted(centres, times), 0, len(centres) - 1)
        left = np.clip(right - 1, 0, len(centres) - 1)
        nearest = np.where(np.abs(centres[left] - times) <= np.abs(centres[right] - times), left, right)
        frames[a:b] = ordered[nearest]
    return frames


def _runs(values: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, end, value) runs of equal values, end exclusive."""
    if values.size == 0:
        return []
    change = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [values.size]])
    return [(int(s), int(e), int(values[s])) for s, e in zip(starts, ends)]


def _smooth(frames: np.ndarray, min_frames: int) -> np.ndarray:
    """Relabel runs shorter than `min_frames` that sit between speech of other labels with
    the longer neighbour's label (shortest runs first), so one odd window does not make
    a turn."""
    frames = frames.copy()
    changed = True
    while changed:
        changed = False
        runs = _runs(frames)
        candidates = [
            (e - s, i) for i, (s, e, v) in enumerate(runs) if v >= 0 and e - s < min_frames
        ]
        for _, i in sorted(candidates):
            s, e, v = runs[i]
            neighbours = [runs[j] for j in (i - 1, i + 1) if 0 <= j < len(runs) and runs[j][2] >= 0]
            if not neighbours:
                continue
            best = max(neighbours, key=lambda run: run[1] - run[0])
            if best[2] != v:
                frames[s:e] = best[2]
                changed = True
                break
    return frames


def turns_from_frames(frames: np.ndarray) -> list[SpeakerTurn]:
    """Contiguous turns from 10 ms labels; speakers renamed S1, S2... by first appearance."""
    names: dict[int, str] = {}
    turns: list[SpeakerTurn] = []
    for s, e, v in _runs(frames):
        if v < 0:
            continue
        name = names.setdefault(v, f"S{len(names) + 1}")
        turns.append(SpeakerTurn(start=round(s * FRAME, 3), end=round(e * FRAME, 3), speaker=name))
    return turns


def _speech_inside(speech: Sequence[tuple[float, float]], duration: float) -> list[tuple[float, float]]:
    """Speech regions clipped to [0, duration] s; empty ones dropped."""
    return [(max(0.0, s), min(duration, e)) for s, e in speech if min(duration, e) > max(0.0, s)]


def speaker_windows(samples: np.ndarray, speech: Sequence[tuple[float, float]], window: float,
                    hop: float) -> tuple[list[tuple[float, float]], np.ndarray]:
    """The embedding windows (start, end) in seconds inside `speech` and their d-vectors,
    (windows, 256); computed once per signal. Resemblyzer's mel is a power spectrogram, so
    loudness moves the embedding: the speech is first brought to the level its encoder was
    trained at (TARGET_DBFS)."""
    if not speech:
        return [], np.zeros((0, 256), dtype=np.float32)
    voiced = np.concatenate([samples[int(s * AUDIO_RATE): int(e * AUDIO_RATE)] for s, e in speech])
    rms = float(np.sqrt(np.mean(np.square(voiced, dtype=np.float64)))) if voiced.size else 0.0
    if rms > 1e-6:
        samples = (samples * (10 ** (TARGET_DBFS / 20) / rms)).astype(np.float32)
    spans = _windows(speech, window, hop)
    return spans, speaker_embeddings(samples, spans)


def turns_from_labels(speech: Sequence[tuple[float, float]], spans: Sequence[tuple[float, float]],
                      labels: np.ndarray, duration: float) -> list[SpeakerTurn]:
    """Turns from one label per embedding window: each 10 ms speech frame takes the label of
    the nearest window, runs shorter than MIN_TURN_SECONDS are smoothed away, equal
    neighbours merged. No windows (only very short speech): every region is S1."""
    if not spans:
        spans, labels = list(speech), np.zeros(len(speech), dtype=int)
    frames = _frame_labels(speech, spans, np.asarray(labels), int(np.ceil(duration / FRAME)))
    return turns_from_frames(_smooth(frames, int(round(MIN_TURN_SECONDS / FRAME))))


def _diarize_resemblyzer(samples: np.ndarray, speech: Sequence[tuple[float, float]], config: DiarizationConfig) -> list[SpeakerTurn]:
    duration = samples.size / AUDIO_RATE
    speech = _speech_inside(speech, duration)
    if not speech:
        return []
    spans, embeddings = speaker_windows(samples, speech, config.window, config.hop)
    labels = cluster_embeddings(embeddings, config.num_speakers, config.max_speakers)
    return turns_from_labels(speech, spans, labels, duration)


def one_speaker_turns(speech: Sequence[tuple[float, float]]) -> list[SpeakerTurn]:
    """Every speech region as a turn of S1."""
    return [SpeakerTurn(start=round(s, 3), end=round(e, 3), speaker="S1") for s, e in speech if e > s]


def too_little_speech(speech: Sequence[tuple[float, float]]) -> str:
    """Why `speech` ((start, end) regions, seconds) is too little to tell speakers apart, in
    plain words; empty when it is enough (MIN_SPEECH_SECONDS in all)."""
    total = sum(max(0.0, e - s) for s, e in speech)
    if total >= MIN_SPEECH_SECONDS:
        return ""
    count = sum(e > s for s, e in speech)
    segments = "one voiced segment" if count == 1 else f"{count} voiced segments"
    return (f"{total:.1f} s of speech in {segments}: too little to tell speakers apart "
            f"(diarization needs {MIN_SPEECH_SECONDS:g} s); all speech is S1")


# -- pyannote backend ------------------------------------------------------------

PYANNOTE_MISSING = (
    "pyannote.audio is not installed (or cannot be imported: {error}); install the `pyannote` extra "
    "in an environment with torch 2.14.1 + torchaudio 2.11, or use diarization.backend = \"resemblyzer\""
)


@lru_cache(maxsize=2)
def _pyannote_pipeline(model: str, token_env: str):
    """A pyannote.audio 4 pipeline from a local folder or hub id, loaded once per model."""
    if not model:
        raise DiarizationBackendError(
            "diarization.backend = \"pyannote\" needs diarization.pyannote_model: a local pipeline folder "
            "or a hub id such as \"pyannote/speaker-diarization-community-1\""
        )
    try:
        from pyannote.audio import Pipeline
    except Exception as error:  # ImportError, or torchaudio's OSError on a mismatched torch
        raise DiarizationBackendError(PYANNOTE_MISSING.format(error=error)) from None
    try:
        pipeline = Pipeline.from_pretrained(model, token=os.environ.get(token_env))
    except Exception as error:
        raise DiarizationBackendError(
            f"cannot load the pyannote pipeline {model!r} ({type(error).__name__}: {error}); check that the "
            f"folder exists or that the hub id is right, accepted on the hub, and that ${token_env} holds a token"
        ) from None
    if pipeline is None:  # pyannote returns None for a gated or missing hub model
        raise DiarizationBackendError(
            f"the pyannote pipeline {model!r} was not found or is gated; accept its conditions on the hub "
            f"and put a token in ${token_env}, or point diarization.pyannote_model at a local folder"
        )
    return pipeline


def turns_from_annotation(annotation) -> list[SpeakerTurn]:
    """SpeakerTurns from a pyannote.core Annotation (or a pyannote.audio 4 output that
    carries one as `.speaker_diarization`), in time order, speakers renamed S1, S2... by
    first appearance. Overlapping turns are kept as they are."""
    annotation = getattr(annotation, "speaker_diarization", annotation)
    tracks = sorted(annotation.itertracks(yield_label=True), key=lambda t: (t[0].start, t[0].end))
    names: dict[str, str] = {}
    turns = []
    for segment, _, label in tracks:
        name = names.setdefault(str(label), f"S{len(names) + 1}")
        turns.append(SpeakerTurn(start=round(segment.start, 3), end=round(segment.end, 3), speaker=name))
    return turns


def _diarize_pyannote(samples: np.ndarray, config: DiarizationConfig) -> list[SpeakerTurn]:
    import torch

    pipeline = _pyannote_pipeline(config.pyannote_model, config.pyannote_token_env)
    options = {"num_speakers": config.num_speakers} if config.num_speakers else {"max_speakers": config.max_speakers}
    waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).unsqueeze(0)
    output = pipeline({"waveform": waveform, "sample_rate": AUDIO_RATE}, **options)
    return turns_from_annotation(output)


# -- public API ------------------------------------------------------------------


def diarize(samples: np.ndarray, speech: Sequence[tuple[float, float]], config: DiarizationConfig) -> list[SpeakerTurn]:
    """Speaker turns of a 16 kHz mono float32 signal; times in seconds from sample 0.

    `speech`: (start, end) speech regions in seconds from the VAD; the resemblyzer backend
    labels only these (pyannote runs its own segmentation and ignores them). Empty audio
    or no speech gives no turns. Raises DiarizationBackendError when the pyannote backend
    is chosen but not installed or its model cannot be loaded.
    """
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if samples.size == 0:
        return []
    if config.backend == "pyannote":
        return _diarize_pyannote(samples, config)
    return _diarize_resemblyzer(samples, [(float(s), float(e)) for s, e in speech], config)


def diarize_speech(samples: np.ndarray, speech: Sequence[tuple[float, float]],
                   config: DiarizationConfig) -> DiarizationResult:
    """`diarize`, unless the speech cannot be told apart into speakers: what the
    preprocessing stage calls once per source.

    With the resemblyzer backend and the count estimated (`num_speakers` 0), speech
    shorter than MIN_SPEECH_SECONDS in all is not embedded: every speech region becomes a
    turn of S1 (so the source's words still carry one consistent label) and
    `skipped_reason` says why in plain words; `num_speakers` 1 does the same. A given
    count of 2 or more, and the pyannote backend (its own segmentation), always diarize.
    Empty audio or no speech: no turns, reason "no speech". Raises DiarizationBackendError
    as `diarize` does."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if config.backend == "pyannote":
        return DiarizationResult(diarize(samples, speech, config))
    regions = _speech_inside([(float(s), float(e)) for s, e in speech], samples.size / AUDIO_RATE)
    if not regions:
        return DiarizationResult([], "no speech")
    if config.num_speakers == 1:
        return DiarizationResult(one_speaker_turns(regions), "diarization.num_speakers = 1: all speech is S1")
    if config.num_speakers == 0 and (reason := too_little_speech(regions)):
        return DiarizationResult(one_speaker_turns(regions), reason)
    return DiarizationResult(diarize(samples, regions, config))


def _annotation(turns: Sequence[SpeakerTurn]):
    from pyannote.core import Annotation, Segment

    annotation = Annotation()
    for index, turn in enumerate(turns):
        if turn.end > turn.start:
            annotation[Segment(turn.start, turn.end), index] = turn.speaker
    return annotation


def diarization_error_rate(
    reference: Sequence[SpeakerTurn],
    hypothesis: Sequence[SpeakerTurn],
    uem: tuple[float, float] | None = None,
    collar: float = 0.25,
) -> float:
    """NIST diarization error rate (missed + false alarm + confusion) / reference speech,
    as a fraction (0 is perfect; can exceed 1); overlapped speech is scored.
    `collar`: seconds not scored around each reference boundary, in pyannote.metrics'
    convention: the collar's total width, centred on the boundary (0.25 forgives
    ±0.125 s; NIST md-eval's `-c 0.25` is collar=0.5 here).
    `uem`: (start, end) in seconds of the scored region; None scores the extent of both."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    ref, hyp = _annotation(reference), _annotation(hypothesis)
    if uem is not None:
        region = Timeline([Segment(*uem)])
    else:
        region = (ref.get_timeline() | hyp.get_timeline()).extent() if (ref or hyp) else None
        region = Timeline([region]) if region is not None else None
    if region is None:
        return 0.0
    return float(metric(ref, hyp, uem=region))
