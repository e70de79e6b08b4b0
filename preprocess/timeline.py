"""Temporal alignment: one table per clip at a fixed rate, and a word table.

Pure functions over measured streams (times in seconds from the source start):
words and speaker turns from ASR and diarization, a prosody track (10 ms F0 and
intensity), and face observations from the sampling pass. Each timeline row at time t
holds what was measured nearest to t: who speaks, which word is being spoken, F0,
intensity, voicing, whether a face is present, the primary face's AU estimates, expression
probabilities (`expr_<concept>`) and head pose. Arrow schemas are derived from the rows, not
written twice.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from merforge.preprocess.expression import EXPRESSION_CONCEPTS
from merforge.storage.records import FaceObservation, SpeakerTurn, Word

AU_NAMES = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU12", "AU15", "AU20", "AU25", "AU26")
# Expression-model probability columns of the primary face, one per concept: "expr_happiness", ...
EXPRESSION_COLUMNS = tuple(f"expr_{concept}" for concept in EXPRESSION_CONCEPTS)


def canonical_au(name: str) -> str:
    """'AU1', 'AU01', 'au1' -> 'AU01'."""
    digits = "".join(ch for ch in name if ch.isdigit())
    return f"AU{int(digits):02d}" if digits else name


def _at(times: Sequence[float], values: Sequence, t: float, tolerance: float):
    """The value whose time is nearest to t, if within tolerance."""
    if not len(times):
        return None
    i = bisect.bisect_left(times, t)
    best = None
    for j in (i - 1, i):
        if 0 <= j < len(times) and abs(times[j] - t) <= tolerance and (best is None or abs(times[j] - t) < abs(times[best] - t)):
            best = j
    return values[best] if best is not None else None


def _covering(spans: Sequence, t: float):
    """The first item with start <= t < end (spans sorted by start)."""
    for span in spans:
        if span.start <= t < span.end:
            return span
        if span.start > t:
            break
    return None


def build_timeline(
    start: float,
    end: float,
    rate: float,
    words: Sequence[Word],
    turns: Sequence[SpeakerTurn],
    prosody_times: np.ndarray,
    f0: np.ndarray,
    intensity: np.ndarray,
    faces: Sequence[FaceObservation],
    face_times: Sequence[float],
    face_interval: float,
) -> pa.Table:
    """Rows every 1/rate seconds over [start, end).

    `prosody_times` are absolute seconds (10 ms hop); `f0` is NaN where unvoiced.
    `face_times` are the analysed frame times; a row's face columns come from the
    nearest analysed frame within one analysis interval (else null: not analysed).
    """
    step = 1.0 / rate
    times = np.arange(start, end - 1e-9, step)
    primary_by_time: dict[float, FaceObservation] = {}
    count_by_time: dict[float, int] = {}
    for face in faces:
        count_by_time[face.time] = count_by_time.get(face.time, 0) + 1
        if face.primary or face.time not in primary_by_time:
            primary_by_time[face.time] = face
    face_times = sorted(face_times)
    words = sorted(words, key=lambda w: w.start)
    turns = sorted(turns, key=lambda t: t.start)
    columns: dict[str, list] = {k: [] for k in ("time", "speaker", "word", "f0", "intensity", "voiced",
                                                "faces_analysed", "face_present", "face_count", *AU_NAMES,
                                                *EXPRESSION_COLUMNS, "yaw", "pitch", "roll")}
    for t in times:
        columns["time"].append(round(float(t), 4))
        turn = _covering(turns, t)
        columns["speaker"].append(turn.speaker if turn else None)
        word = _covering(words, t)
        columns["word"].append(word.text if word else None)
        if len(prosody_times):
            # Mean over the row's window: F0 over voiced frames only.
            lo, hi = np.searchsorted(prosody_times, [t - step / 2, t + step / 2])
            f0_window = f0[lo:hi]
            voiced = f0_window[~np.isnan(f0_window)]
            columns["f0"].append(float(voiced.mean()) if voiced.size else None)
            columns["voiced"].append(bool(voiced.size * 2 >= max(1, f0_window.size)))
            level = intensity[lo:hi]
            level = level[~np.isnan(level)]
            columns["intensity"].append(float(level.mean()) if level.size else None)
        else:
            columns["f0"].append(None)
            columns["voiced"].append(None)
            columns["intensity"].append(None)
        analysed = _at(face_times, face_times, t, face_interval) if face_times else None
        columns["faces_analysed"].append(analysed is not None)
        face = primary_by_time.get(analysed) if analysed is not None else None
        columns["face_present"].append(None if analysed is None else face is not None)
        columns["face_count"].append(None if analysed is None else count_by_time.get(analysed, 0))
        aus = {canonical_au(k): v for k, v in (face.aus.items() if face else [])}
        for name in AU_NAMES:
            columns[name].append(aus.get(name))
        expression = face.expression if face else {}
        for concept, name in zip(EXPRESSION_CONCEPTS, EXPRESSION_COLUMNS):
            columns[name].append(expression.get(concept))
        pose = face.head_pose if face and face.head_pose else (None, None, None)
        for key, value in zip(("yaw", "pitch", "roll"), pose):
            columns[key].append(value)
    return pa.table(columns, schema=TIMELINE_SCHEMA)


TIMELINE_SCHEMA = pa.schema(
    [
        pa.field("time", pa.float64(), metadata={"description": "seconds from the start of the source"}),
        pa.field("speaker", pa.string(), metadata={"description": "diarization label active at this time"}),
        pa.field("word", pa.string(), metadata={"description": "word being spoken (ASR)"}),
        pa.field("f0", pa.float64(), metadata={"description": "mean F0 of voiced frames in the row window, Hz"}),
        pa.field("intensity", pa.float64(), metadata={"description": "mean intensity, dB"}),
        pa.field("voiced", pa.bool_(), metadata={"description": "at least half of the row window voiced"}),
        pa.field("faces_analysed", pa.bool_(), metadata={"description": "a video frame was analysed near this time"}),
        pa.field("face_present", pa.bool_(), metadata={"description": "a face was found (null: not analysed)"}),
        pa.field("face_count", pa.int64()),
        *[pa.field(name, pa.float64(), metadata={"description": f"{name} estimate of the primary face"}) for name in AU_NAMES],
        *[pa.field(name, pa.float64(), metadata={"description": f"probability of {concept} from the expression model, "
                                                                f"primary face (null: no face, or the model did not run)"})
          for concept, name in zip(EXPRESSION_CONCEPTS, EXPRESSION_COLUMNS)],
        pa.field("yaw", pa.float64(), metadata={"description": "degrees"}),
        pa.field("pitch", pa.float64(), metadata={"description": "degrees"}),
        pa.field("roll", pa.float64(), metadata={"description": "degrees"}),
    ]
)

WORD_SCHEMA = pa.schema(
    [
        pa.field("start", pa.float64(), metadata={"description": "seconds from the start of the source"}),
        pa.field("end", pa.float64()),
        pa.field("text", pa.string()),
        pa.field("probability", pa.float64(), metadata={"description": "ASR confidence 0..1"}),
        pa.field("speaker", pa.string()),
        pa.field("f0_mean", pa.float64(), metadata={"description": "Hz over voiced frames of the word"}),
        pa.field("f0_max", pa.float64()),
        pa.field("intensity_mean", pa.float64(), metadata={"description": "dB"}),
        pa.field("voiced_fraction", pa.float64()),
        pa.field("duration", pa.float64(), metadata={"description": "seconds"}),
    ]
)


def word_table(words: Sequence[Word], prosody_times: np.ndarray, f0: np.ndarray, intensity: np.ndarray) -> pa.Table:
    """One row per word with the prosody measured over the word's time span."""
    rows: dict[str, list] = {field.name: [] for field in WORD_SCHEMA}
    for word in words:
        lo, hi = (np.searchsorted(prosody_times, [word.start, word.end]) if len(prosody_times) else (0, 0))
        f0_span = f0[lo:hi]
        voiced = f0_span[~np.isnan(f0_span)]
        level = intensity[lo:hi]
        level = level[~np.isnan(level)]
        rows["start"].append(word.start)
        rows["end"].append(word.end)
        rows["text"].append(word.text)
        rows["probability"].append(word.probability)
        rows["speaker"].append(word.speaker or None)
        rows["f0_mean"].append(float(voiced.mean()) if voiced.size else None)
        rows["f0_max"].append(float(voiced.max()) if voiced.size else None)
        rows["intensity_mean"].append(float(level.mean()) if level.size else None)
        rows["voiced_fraction"].append(float(voiced.size / f0_span.size) if f0_span.size else None)
        rows["duration"].append(round(word.end - word.start, 4))
    return pa.table(rows, schema=WORD_SCHEMA)


def assign_speakers(words: Sequence[Word], turns: Sequence[SpeakerTurn]) -> list[Word]:
    """Give each word the speaker whose turn overlaps it most."""
    assigned = []
    for word in words:
        best, overlap = "", 0.0
        for turn in turns:
            shared = min(word.end, turn.end) - max(word.start, turn.start)
            if shared > overlap:
                best, overlap = turn.speaker, shared
        if not best:  # a word between turns: the nearest turn
            nearest = min(turns, key=lambda t: min(abs(t.start - word.end), abs(t.end - word.start)), default=None)
            best = nearest.speaker if nearest else ""
        assigned.append(word.model_copy(update={"speaker": best}))
    return assigned
