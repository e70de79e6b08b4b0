"""Coverage: how much of a clip an answer's modality actually measured, 0..1.

An agent that saw a face in 9% of the clip's frames, or heard half a second of voice,
or read three words the recogniser was unsure of, has less to go on than one that saw
the whole clip. Each offline specialist records its modality's coverage on its answer
(`Annotation.coverage`, with the measures in `coverage_detail`); aggregation shrinks the
answer's soft vote towards uniform in proportion (agents.aggregate, "coverage"), so a
clip whose only informative answer covered little of it cannot reach the confidence
that auto-accepts.

The points of full coverage are deliberately modest: a face in half the analysed
frames, 1.5 s of voiced speech, eight confidently recognised words are each enough for
a human rater to judge the modality (CREMA-D's and RAVDESS's raters judged 2-4 s
sentences). Below them coverage falls linearly to 0.
"""

from __future__ import annotations

import math

from merforge.agents.evidence import ClipEvidence

FULL_FACE_PRESENCE = 0.5  # share of analysed frames with a face
FULL_VOICED_SECONDS = 1.5  # seconds of voiced speech
FULL_WORDS = 8  # recognised words


def _ratio(value: float, full: float) -> float:
    return round(max(0.0, min(1.0, value / full)), 4) if full > 0 else 0.0


def visual_coverage(evidence: ClipEvidence) -> tuple[float, dict[str, float]]:
    """(coverage, measures): face presence over the analysed frames of the clip."""
    faces = evidence.faces
    return _ratio(faces.presence, FULL_FACE_PRESENCE), {"face_presence": round(faces.presence, 4),
                                                         "frames_analysed": float(faces.frames_analysed)}


def audio_coverage(evidence: ClipEvidence) -> tuple[float, dict[str, float]]:
    """(coverage, measures): seconds of voiced speech in the clip (voiced share x duration)."""
    voiced = evidence.prosody.voiced_fraction * max(0.0, evidence.end - evidence.start)
    return _ratio(voiced, FULL_VOICED_SECONDS), {"voiced_fraction": round(evidence.prosody.voiced_fraction, 4),
                                                  "voiced_seconds": round(voiced, 3)}


def text_coverage(evidence: ClipEvidence) -> tuple[float, dict[str, float]]:
    """(coverage, measures): recognised words, weighted by the recogniser's mean word
    probability and by its probability for the detected language."""
    words = [w for w in evidence.transcript.words if w.text.strip()]
    if not words:
        return 0.0, {"words": 0.0}
    confidence = sum(w.probability for w in words) / len(words)
    language_probability = evidence.transcript.language_probability
    if not math.isfinite(language_probability) or language_probability <= 0:
        language_probability = 1.0
    coverage = _ratio(len(words), FULL_WORDS) * confidence * min(1.0, language_probability)
    return round(coverage, 4), {"words": float(len(words)), "asr_confidence": round(confidence, 4),
                                "language_probability": round(language_probability, 4)}
