"""Speaker diarization: who spoke when, as `SpeakerTurn`s ("S1", "S2", ... per source).

Two backends behind one function, `diarize(samples, speech, config)`:

- "resemblyzer" (offline default). d-vectors from Resemblyzer's GE2E speaker encoder
  (Wan et al., "Generalized End-to-End Loss for Speaker Verification", ICASSP 2018;
  weights ship in the wheel) over sliding windows inside the VAD's speech segments,
  clustered by spectral clustering of the cosine affinity with the refinements of
  Wang et al., "Speaker Diarization with LSTM", ICASSP 2018 (row-wise thresholding,
  symmetrisation, diffusion; von Luxburg, "A Tutorial on Spectral Clustering", 2007).
  When `num_speakers` is 0 the count is where average-linkage agglomerative clustering
  stops at a cosine distance of 0.325 (eigengap estimates were unstable on the few dozen
  windows of a short source). Measured (tests/test_diarization.py, collar 0.25 total):
  DER 0.32 / 0.23 / 0.75 on AMI debug dev00 / dev01 / tst00 (tst00 is half overlap),
  0.17 / 0.17 on pyAudioAnalysis's 4- and 6-speaker examples; ~6 ms of CPU per second
  of audio after the first call. Window labels become frame labels (10 ms), short flips are
  smoothed away and equal neighbours merged into turns. One speaker at a time: overlapped
  speech is attributed to one of its speakers.
- "pyannote": a pyannote.audio 4 pipeline (Bredin, "pyannote.audio 2.1 speaker
  diarization pipeline", Interspeech 2023), an optional extra. It needs torch 2.14.1
  and torchaudio 2.11, so it is imported lazily and a missing install is a
  `DiarizationBackendError` with what to do.

`diarization_error_rate` scores turns with pyannote.metrics (NIST DER with a forgiveness
collar, overlap scored).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
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
# Cosine distance between d-vector clusters (average linkage) above which they are taken
# to be different speakers when the count is estimated. Chosen on AMI debug and the
# pyAudioAnalysis diarization examples (2-6 speakers): 0.30 over-splits, 0.35 merges.
SPEAKER_DISTANCE = 0.325
# Spectral beat agglomerative on AMI dev00/dev01 (DER 0.32/0.23 vs 0.45/0.52) and tied
# elsewhere except diarizationExample (0.17 vs 0.08).
CLUSTERING = "spectral"


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


def estimate_speaker_count(embeddings: np.ndarray, max_speakers: int) -> int:
    """Number of speakers (1..max_speakers): clusters left when average-linkage
    agglomerative clustering of the d-vectors stops at cosine distance
    SPEAKER_DISTANCE. Eigengap estimates were tried and were unstable on the few
    dozen windows of a short source (see tests/test_diarization.py)."""
    from sklearn.cluster import AgglomerativeClustering

    if embeddings.shape[0] < 2 or max_speakers == 1:
        return 1
    model = AgglomerativeClustering(
        n_clusters=None, distance_threshold=SPEAKER_DISTANCE, metric="cosine", linkage="average"
    ).fit(embeddings)
    return int(min(max_speakers, model.n_clusters_))


def cluster_embeddings(embeddings: np.ndarray, num_speakers: int, max_speakers: int, method: str = CLUSTERING) -> np.ndarray:
    """Cluster labels (0..k-1) for L2-normalised d-vectors; `num_speakers` 0 estimates k.
    `method`: "agglomerative" (average linkage, cosine) or "spectral" (refined affinity)."""
    n = embeddings.shape[0]
    if n == 0:
        return np.zeros(0, dtype=int)
    k = num_speakers or estimate_speaker_count(embeddings, max_speakers)
    k = max(1, min(k, n))
    if k == 1:
        return np.zeros(n, dtype=int)
    if method == "spectral":
        from sklearn.cluster import SpectralClustering

        model = SpectralClustering(n_clusters=k, affinity="precomputed", assign_labels="cluster_qr", random_state=0)
        return model.fit_predict(_refined_affinity(embeddings))
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average").fit_predict(embeddings)


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


def _diarize_resemblyzer(samples: np.ndarray, speech: Sequence[tuple[float, float]], config: DiarizationConfig) -> list[SpeakerTurn]:
    duration = samples.size / AUDIO_RATE
    speech = [(max(0.0, s), min(duration, e)) for s, e in speech if min(duration, e) > max(0.0, s)]
    if not speech:
        return []
    # Resemblyzer's mel is a power spectrogram, so loudness moves the embedding: bring the
    # speech to the level its encoder was trained at.
    voiced = np.concatenate([samples[int(s * AUDIO_RATE) : int(e * AUDIO_RATE)] for s, e in speech])
    rms = float(np.sqrt(np.mean(np.square(voiced, dtype=np.float64)))) if voiced.size else 0.0
    if rms > 1e-6:
        samples = (samples * (10 ** (TARGET_DBFS / 20) / rms)).astype(np.float32)
    spans = _windows(speech, config.window, config.hop)
    if not spans:  # only very short speech: one speaker
        spans = [(s, e) for s, e in speech]
        labels = np.zeros(len(spans), dtype=int)
    else:
        embeddings = speaker_embeddings(samples, spans)
        labels = cluster_embeddings(embeddings, config.num_speakers, config.max_speakers)
    total = int(np.ceil(duration / FRAME))
    frames = _frame_labels(speech, spans, labels, total)
    frames = _smooth(frames, int(round(MIN_TURN_SECONDS / FRAME)))
    return turns_from_frames(frames)


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
