"""The evidence-grounded judge: every annotation scored against what was measured.

Per annotation three scores in 0..1, each with its reasons, and
S_final = a * S_rec + b * S_reason + c * S_cot (JudgeWeights, a + b + c = 1).

Claims. Each rationale step and each evidence item is parsed into atomic assertions and
each is checked against the measured features in its time range (`check_claims`):

- AU claims ("AU12 estimate 0.79", "smile", "frown", "raised brows", "no smile") against
  the AU estimates of the primary face: numbers within AU_TOLERANCE of the mean, words
  for an action against AU_ACTIVE (mean >= 0.30: present; < AU_INACTIVE = 0.15: absent;
  between: unverifiable). Evidence items with feature "expr_<concept>" (the expression
  model's probability of a concept) against FaceSummary.mean_expression over the whole
  clip or the timeline column of that name over a window, within AU_TOLERANCE; written
  in step text ("happiness probability 0.85") they are model-internal, unverifiable.
- Prosody ("F0 mean 237 Hz", "rising pitch", "high pitch", "loud", "pause", "fast
  speech", HNR, jitter, shimmer, rates) against ProsodyStats over the whole clip and the
  timeline (F0, intensity) over a shorter window. Pitch direction is the least-squares F0
  slope over the window's voiced rows (ProsodyStats.f0_slope over the whole clip).
- Quotes ('"..."', single-quoted words) against the transcript words in the range.
- Speakers ("S2") against the diarisation turns and the words' speakers.

Times: evidence items are in source seconds (records.EvidenceItem). Times written in
step text ("over 6.8-7.8 s", "at 3.2 s") are source seconds for offline agents (endpoint
"offline", as the specialists write them) and clip-relative for LLM agents (as their prompt
asks), falling back to the other reading when a span does not fit the clip. An
assertion takes the span nearest to it in its step; with none it covers the whole clip.
Whole-clip numbers are compared with the stored summaries (ProsodyStats, FaceSummary)
and, failing that, with the timeline mean over the clip.

One ClaimCheck per step or evidence item: contradicted when any of its assertions is
contradicted (the reason names it with the measured values), supported when some are
supported and none contradicted, else unverifiable (model-internal statements such as
"ridge model: arousal +0.11" or "MiniLM cosine 0.11", or no measurable claim). The last
step, when it only states the label, is the conclusion and is not a claim.

Scores (constants below):

- S_reason = max(0, S - CONTRADICTION_PENALTY * C) / (S + C + UNVERIFIABLE_WEIGHT * U)
  over the claim checks (S supported, C contradicted, U unverifiable); 0 with no claims.
- S_cot = mean of four 0/1-ish parts: share of the clip's available modalities (text:
  words; audio: voiced speech; visual: a face analysed) the rationale or evidence
  considers; at least two steps; an intermediate step that leads to the label (names it,
  a synonym, or a cue of it: "smile" or AU12 for happiness); the last step states it.
- S_rec = REC_CONSENSUS_WEIGHT * agreement + (1 - REC_CONSENSUS_WEIGHT) * label_fit, where
  agreement = D(label) / max_l D(l) for D the reliability-weighted mean of the OTHER
  annotations' label distributions (leave-one-out; label_probabilities, else one-hot;
  reliability default 1.0), and label_fit (below). With no other usable annotation,
  S_rec = label_fit.
- label_fit(label) = weighted mean over the modalities measured of: visual, the
  expression model's mean probability of the label over the clip relative to the best
  label (FaceSummary.mean_expression), or where it did not run the EMFACS prototype
  probability over the mean AUs (specialists' prototypes, temperature and neutral
  level); audio, exp(-0.5 z^2) with z the gap between
  the arousal predicted from prosody (specialists' ridge model) and the label's circumplex
  arousal over the model's held-out RMSE (prosody measures arousal, hardly valence:
  Scherer 2003); text, the NRC lexicon's share for the label relative to the best label
  (a neutral pseudo-count of 1; weight 0.5 when no emotion word is listed). No modality
  measured: 0.5 (no information).
- Sufficiency: label_fit from the cited modalities alone (those of the evidence items);
  sufficient when >= SUFFICIENT_FIT.

Annotations with status != ok are scored 0 with the status as reason, never dropped.

Speed: `ClipFacts` is built once per clip (prefix sums over the timeline, built per column
on first use, so a window mean or slope costs two bisections; word index; label fits,
sufficiency, window means and measurements memoised) and shared by all the clip's
annotations; a step text or evidence item already checked on the clip (annotators of a clip
cite the same measurements) is answered from the clip's memo. Step texts are parsed by
template (the text with its digits zeroed): the regex work, which span each assertion takes
and its checker are settled once per template, and only the numbers, AUs, speakers and
quotes are read per text. A number or an action checked over the same range of the clip
(a step and the evidence item it restates) is answered from the clip's memo too, and so is a
window mean. Records hold the judge's own values (str, int, float, bool, None, records), so
they are made as validation would make them without validating again (`merforge.perf.trusted_maker`:
__dict__ in field order, the given fields as the fields set, shared as model_construct shares
the set it is given); the annotations of a clip that cite the same thing at the same place
share one ClaimCheck (records are frozen). `judge_many` judges many clips with the cyclic
garbage collector paused, optionally in forked worker processes, and with `consume` hands
each chunk's records to the caller's function where they were made (only its result is
pickled back). A forked worker freezes the collector's generations when it starts and after
each chunk (what outlives a chunk there is the judge's memos), so they are not re-walked, and
it reads a clip's timeline columns only when asked about them (in a forked worker, touching
the parent's objects copies their pages).
"""

from __future__ import annotations

import gc
import math
import re
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate
from typing import Any, NamedTuple

import numpy as np

from merforge.agents.evidence import ClipEvidence
from merforge.agents.labels import CONCEPTS, LabelSpace
from merforge.perf import gc_paused, trusted_maker
from merforge.storage.config import JudgeWeights
from merforge.storage.records import (
    Annotation,
    AnnotationStatus,
    ClaimCheck,
    EvidenceItem,
    FaceSummary,
    JudgeScores,
    ProsodyStats,
)

JUDGE_NAME = "evidence"

AU_ACTIVE = 0.30  # mean estimate at or above which an action is present (estimates are 0..1, 0 = neutral)
AU_INACTIVE = 0.15  # below this it is absent
AU_TOLERANCE = 0.06  # a cited AU value within this of the measured mean holds (2-decimal rounding + row edges)
SLOPE_MIN = 3.0  # Hz/s: |F0 slope| below this is flat (neither rising nor falling)
LEVEL_MARGIN = {"f0": 0.02, "intensity": 0.01}  # window mean vs clip mean, relative: "high pitch", "loud"
FAST_RATE, SLOW_RATE = 3.0, 2.2  # words per second
MIN_PAUSE = 0.2  # s: a gap between words at least this long is a pause
QUOTE_SLACK = 1.0  # s: a quoted word may lie this far outside the cited range
WHOLE_CLIP_SLACK = 0.15  # s: a span this close to both clip edges is the whole clip

CONTRADICTION_PENALTY = 1.0
UNVERIFIABLE_WEIGHT = 0.25
REC_CONSENSUS_WEIGHT = 0.5
SUFFICIENT_FIT = 0.5
TEXT_NEUTRAL_PSEUDO = 1.0


# -- per-clip facts -------------------------------------------------------------------


class _Prefix:
    """Cumulative sums of a timeline column's finite values: a window mean in O(1)."""

    __slots__ = ("sums", "counts", "any")

    def __init__(self, values: np.ndarray):
        # np.cumsum of the finite values (non-finite ones read 0): one float addition at a time,
        # in order, as itertools.accumulate does it. Plain Python is faster than numpy for
        # timeline-sized columns.
        vals = values.tolist()
        total = sum(vals)
        sums = [0.0]
        if total - total == 0.0:  # all finite (nan and inf give nan; an overflow only costs the slow way)
            sums += accumulate(vals)
            counts = None  # every row counts: counts[j] - counts[i] is j - i
        else:
            counts = [0]
            total = None
            count = 0
            for v in vals:
                if v - v == 0.0:  # finite
                    total = v if total is None else total + v
                    count += 1
                else:
                    total = 0.0 if total is None else total + 0.0
                sums.append(total)
                counts.append(count)
        self.sums = sums
        self.counts = counts  # finite values before each row; None: all rows are finite
        self.any = counts[-1] > 0 if counts is not None else len(vals) > 0

    def mean(self, i: int, j: int) -> float | None:
        counts = self.counts
        if counts is None:
            counts = range(len(self.sums))  # what the list of counts would be
        n = counts[j] - counts[i]
        return (self.sums[j] - self.sums[i]) / n if n else None


class _LazyColumns(dict):
    """column -> _Prefix, built on first use from the raw timeline arrays (most clips are
    asked about a few of their columns only). A column that is not numeric is absent."""

    __slots__ = ("raw", "rows")

    def __init__(self, raw: dict[str, np.ndarray], rows: int | None = None):
        """`raw`: the timeline; with `rows`, its columns other than time / speaker / word / voiced
        that have `rows` values are the candidates (read on first use, so a clip's other arrays
        are never touched: in a forked worker, touching is copying)."""
        super().__init__()
        self.raw = raw
        self.rows = rows

    def get(self, name: str, default=None):  # type: ignore[override]
        hit = dict.get(self, name, _MISSING)
        if hit is not _MISSING:
            return default if hit is None else hit
        values = self.raw.get(name)
        if values is not None and self.rows is not None and (name in _NOT_COLUMNS or len(values) != self.rows):
            values = None
        prefix = None
        if values is not None and values.dtype is _FLOAT64:
            prefix = _Prefix(values)
        elif values is not None:
            if values.dtype == object:
                try:
                    values = values.astype(np.float64)
                except (TypeError, ValueError):
                    values = None
            if values is not None:
                prefix = _Prefix(values.astype(np.float64))
        dict.__setitem__(self, name, prefix)
        return default if prefix is None else prefix

    def __getitem__(self, name: str) -> _Prefix:
        prefix = self.get(name)
        if prefix is None:
            raise KeyError(name)
        return prefix

    def __contains__(self, name: object) -> bool:
        return self.get(name) is not None  # type: ignore[arg-type]

    def __iter__(self):
        return iter([name for name in self.raw if self.get(name) is not None])

    def keys(self):  # type: ignore[override]
        return list(self)

    def items(self):  # type: ignore[override]
        return [(name, self[name]) for name in self]

    def values(self):  # type: ignore[override]
        return [self[name] for name in self]

    def __len__(self) -> int:
        return len(list(self))


_MISSING = object()
_FLOAT64 = np.dtype(np.float64)
_NOT_COLUMNS = frozenset(("time", "speaker", "word", "voiced"))


def _slope_sums(times: np.ndarray, f0: np.ndarray) -> tuple[list[float], ...]:
    voiced = np.isfinite(f0)
    t = np.where(voiced, times, 0.0)
    f = np.where(voiced, f0, 0.0)
    return tuple([0.0] + np.cumsum(x).tolist() for x in (voiced.astype(float), t, t * t, f, t * f))


@dataclass(slots=True)
class ClipFacts:
    """What the judge needs of one clip, computed once and shared by its annotations.
    Times in source seconds. Timeline columns and the F0 slope sums are built on first use."""

    clip_id: str
    start: float
    end: float
    times: list[float]
    columns: dict[str, _Prefix]
    slope_sums: tuple[list[float], ...] | None  # prefix sums of n, t, t^2, f, t*f over voiced F0 rows; None: not yet
    prosody: ProsodyStats
    faces: FaceSummary
    words: list[tuple[str, float, float, str]]  # (normalised text, start, end, speaker)
    word_index: dict[str, list[int]]
    speakers: dict[str, list[tuple[float, float]]]  # speaker -> turns (and word spans)
    pauses: list[tuple[float, float]]
    has_text: bool
    has_audio: bool
    has_visual: bool
    _fits: dict[tuple, tuple[float, str]] = field(default_factory=dict, repr=False)
    _modality_scores: dict[str, Any] = field(default_factory=dict, repr=False)
    _f0: np.ndarray | None = field(default=None, repr=False)
    _times_array: np.ndarray | None = field(default=None, repr=False)
    _timeline: dict[str, np.ndarray] | None = field(default=None, repr=False)  # _f0 read from it on first use

    available: tuple[str, ...] = ()  # modalities measured: text (words), audio (voiced), visual (a face)
    _checks: dict[tuple, tuple[str, ...]] = field(default_factory=dict, repr=False)  # claim memo, _claim_rows
    _means: dict[tuple, float | None] = field(default_factory=dict, repr=False)  # window_mean memo
    _measures: dict[tuple, tuple[list[float], str]] = field(default_factory=dict, repr=False)  # _measured memo
    _number_checks: dict[tuple, tuple[str, str]] = field(default_factory=dict, repr=False)  # _check_number memo
    _au_checks: dict[tuple, tuple[str, str]] = field(default_factory=dict, repr=False)  # _check_au memo
    _spans: dict[tuple, str] = field(default_factory=dict, repr=False)  # _span_of memo

    def __post_init__(self) -> None:
        self.available = tuple(m for m, present in (("text", self.has_text), ("audio", self.has_audio),
                                                    ("visual", self.has_visual)) if present)

    @classmethod
    def from_evidence(cls, evidence: ClipEvidence) -> "ClipFacts":
        timeline = evidence.timeline
        times_array = np.asarray(timeline["time"] if "time" in timeline else np.zeros(0), dtype=np.float64)
        n = times_array.size

        words = []
        index: dict[str, list[int]] = {}
        speakers: dict[str, list[tuple[float, float]]] = {}
        for turn in evidence.speaker_turns:
            speakers.setdefault(turn.speaker, []).append((turn.start, turn.end))
        for w in evidence.transcript.words:
            text = _normalise(w.text)
            if text:
                index.setdefault(text, []).append(len(words))
                words.append((text, float(w.start), float(w.end), w.speaker))
        for _, ws, we, speaker in words:
            if speaker:
                speakers.setdefault(speaker, []).append((ws, we))
        pauses = [(words[i][2], words[i + 1][1]) for i in range(len(words) - 1)
                  if words[i + 1][1] - words[i][2] >= MIN_PAUSE]
        prosody = evidence.prosody
        faces = evidence.faces
        clip = evidence.clip
        return cls(
            clip_id=clip.id, start=float(clip.start), end=float(clip.end),
            times=times_array.tolist(), columns=_LazyColumns(timeline, n), slope_sums=None, prosody=prosody,
            faces=faces,
            words=words, word_index=index, speakers=speakers, pauses=pauses,
            has_text=bool(words),
            has_audio=bool(evidence.has_audio and prosody.f0_mean is not None),
            has_visual=bool(evidence.has_video and faces.frames_analysed and (faces.mean_aus or faces.mean_expression)),
            _times_array=times_array, _timeline=timeline,
        )

    # -- windows

    def rows(self, start: float, end: float) -> tuple[int, int]:
        """Timeline rows with start <= time < end (to the millisecond); at least the nearest
        row when the window is shorter than the row spacing."""
        i = bisect_left(self.times, start - 5e-4)
        j = bisect_left(self.times, end - 5e-4)
        if j <= i and i < len(self.times):
            j = i + 1
        return i, j

    def window_mean(self, column: str, start: float, end: float) -> float | None:
        key = (column, start, end)
        memo = self._means
        value = memo.get(key, _MISSING)
        if value is not _MISSING:
            return value
        prefix = self.columns.get(column)
        if prefix is None or not prefix.any:
            value = None
        else:
            times = self.times  # self.rows(start, end), inline
            i = bisect_left(times, start - 5e-4)
            j = bisect_left(times, end - 5e-4)
            if j <= i and i < len(times):
                j = i + 1
            counts = prefix.counts
            n = counts[j] - counts[i] if counts is not None else j - i  # 0 <= i, j <= len(times)
            value = (prefix.sums[j] - prefix.sums[i]) / n if n else None
        memo[key] = value
        return value

    def f0_slope(self, start: float, end: float) -> float | None:
        """Least-squares F0 slope (Hz/s) over the voiced rows of the window; None with < 3."""
        i, j = self.rows(start, end)
        sums = self.slope_sums
        if sums is None:
            f0 = self._f0
            if f0 is None:
                timeline = self._timeline or {}
                f0 = self._f0 = np.asarray(timeline["f0"], dtype=np.float64) if "f0" in timeline \
                    else np.full(self._times_array.size, np.nan)
            sums = self.slope_sums = _slope_sums(self._times_array, f0)
        n, st, stt, sf, stf = (s[j] - s[i] for s in sums)
        if n < 3:
            return None
        denominator = n * stt - st * st
        return (n * stf - st * sf) / denominator if denominator > 1e-9 else None

    def is_whole(self, start: float, end: float) -> bool:
        return start <= self.start + WHOLE_CLIP_SLACK and end >= self.end - WHOLE_CLIP_SLACK


@lru_cache(maxsize=100_000)
def _normalise(text: str) -> str:
    return _NON_WORD.sub("", text.lower())


_NON_WORD = re.compile(r"[^a-z0-9']+")


# -- parsing --------------------------------------------------------------------------

_NUMBER = r"([+-]?\d+(?:\.\d+)?)"
_UNIT = r"\s*(%|hz/s|hz|db|words?/s|syll(?:ables)?/s)?"
# feature name (lower case) -> canonical feature
_FEATURE_ALIASES = {
    "f0 mean": "f0_mean", "mean f0": "f0_mean", "f0_mean": "f0_mean", "mean pitch": "f0_mean", "pitch": "f0_mean",
    "f0": "f0_mean", "f0 sd": "f0_sd", "f0_sd": "f0_sd", "f0 range": "f0_range", "f0_range": "f0_range",
    "f0 slope": "f0_slope", "f0_slope": "f0_slope", "slope": "f0_slope", "hnr": "hnr", "jitter": "jitter_local",
    "jitter_local": "jitter_local", "shimmer": "shimmer_local", "shimmer_local": "shimmer_local",
    "voiced fraction": "voiced_fraction", "voiced_fraction": "voiced_fraction", "voiced": "voiced_fraction",
    "intensity mean": "intensity_mean", "intensity_mean": "intensity_mean", "intensity": "intensity_mean",
    "loudness": "intensity_mean", "intensity sd": "intensity_sd", "intensity_sd": "intensity_sd",
    "syllable rate": "speech_rate_syllables", "speech_rate_syllables": "speech_rate_syllables",
    "speech rate": "speech_rate_words", "speech_rate_words": "speech_rate_words", "words": "words",
    "pauses": "pause_count", "pause_count": "pause_count", "face_presence": "face_presence",
    "face presence": "face_presence",
}
_FEATURE_NUMBER = re.compile(
    r"(?<![a-z0-9_])(" + "|".join(sorted((re.escape(k) for k in _FEATURE_ALIASES), key=len, reverse=True))
    + r"|au ?\d{1,2}(?!\d))(?: (?:estimate|estimates|mean|value|level|of|is|was|at|around|about|~))*"
    + r"(?:\s*[:=]\s*|\s+)" + _NUMBER + _UNIT + r"(?![\d.]*[-\u2013]\d)")
# "Transcript, 5 words", "(2 pauses": a count written before its noun, at a clause start
# (not "1 of 5 words" or "negative 0 words").
_NUMBER_FEATURE = re.compile(r"(?:^|[:;,(]\s*|transcript,?\s+)(\d+) (words|pauses?)\b")
_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*(?:-|\u2013|to)\s*(\d+(?:\.\d+)?)\s*s\b|\bat (\d+(?:\.\d+)?)\s*s\b")
_NEGATION = re.compile(r"\b(?:no|not|without|absent|absence of|lack of|lacks?|never|nor|none)\b[^.;,]{0,25}$")
_FACE_PRESENT = re.compile(r"face present in (\d+(?:\.\d+)?)%")

# Qualitative face actions -> the AUs that carry them (EMFACS / FACS names).
_AU_WORDS = [
    (r"smil\w*|grin\w*|lip corners? (?:pulled |turned |raised )?up\w*|lip corner puller", ("AU12",), "smile"),
    (r"cheeks? rais\w*|raised cheeks?|cheek raiser|crow'?s feet|duchenne", ("AU06",), "cheek raise"),
    (r"frown\w*|furrow\w*|(?:lowered|knitted|drawn) (?:eye)?brows?|(?:eye)?brows? (?:are )?(?:lowered|knitted|drawn)"
     r"|brow lowerer", ("AU04",), "frown"),
    (r"(?:raised|lifted) (?:inner |outer )?(?:eye)?brows?|(?:eye)?brows? (?:are )?(?:raised|lifted|raise)"
     r"|brow raiser", ("AU01", "AU02"), "raised brows"),
    (r"lip corners? (?:pulled |turned )?down\w*|down-?turned (?:mouth|lips)|lip corner depressor", ("AU15",),
     "lip corners down"),
    (r"(?:wrinkled|wrinkling) nose|nose wrinkl\w*", ("AU09",), "nose wrinkle"),
    (r"jaw drop\w*|dropped jaw|open mouth|mouth (?:is )?(?:wide )?open\w*", ("AU25", "AU26"), "open mouth"),
    (r"wide(?:ned)? eyes|eyes (?:wide|widen\w*)|upper lids? rais\w*", ("AU05",), "widened eyes"),
    (r"squint\w*|lids? tighten\w*", ("AU07",), "lid tightening"),
]
_AU_WORD = re.compile("|".join(f"(?P<w{i}>{p})" for i, (p, _, _) in enumerate(_AU_WORDS)))
_AU_STATE = re.compile(r"(?<![a-z0-9])(au ?\d{1,2}) (?:is |was |shows? )?(?:(active|activity|activation|present|"
                       r"high|strong|raised|firing)|(absent|inactive|low|weak|zero|missing))\b")
_PITCH_DIRECTION = re.compile(
    r"(?:(rising|rises|rise|raising|increasing|climbing|upward|ascending)|(falling|falls|fall|dropping|drops|"
    r"decreasing|declining|descending|downward|sinking)) (?:pitch|f0|intonation|tone|melody)"
    r"|(?:pitch|f0|intonation)(?: contour)? (?:(rises|rising|goes up|increases|climbs)|(falls|falling|goes down|"
    r"drops|decreases|declines))")
_PITCH_LEVEL = re.compile(
    r"(?:(high|higher|highest|raised|elevated)|(low|lower|lowest|deep|deeper)) (?:pitch|f0)"
    r"|(?:pitch|f0) (?:is |was |gets )?(?:(high|higher|highest|raised|elevated|peaks)|(low|lower|lowest))\b")
_LOUDNESS = re.compile(
    r"\b(?:(loud\w*|shout\w*|yell\w*|raised voice|(?:high|increased|rising) (?:intensity|energy|volume))|(quiet\w*"
    r"|soft voice|softly|whisper\w*|(?:low|decreased|falling) (?:intensity|energy|volume)|mumbl\w*))")
_PAUSE = re.compile(r"\b(?:paus\w*|hesitat\w*|silence)")
_RATE = re.compile(
    r"(?:(fast|rapid|quick|hurried)|(slow|slowed|sluggish)) (?:speech|speaking|speech rate|pace|tempo|delivery)"
    r"|(?:speaks?|talks?|speaking) (?:(fast|quickly|rapidly)|(slowly))")
_SPEAKER = re.compile(r"\b(?:S(\d{1,2})|[Ss]peaker (\d{1,2}))\b")
_QUOTE = re.compile(r"[\"\u201c]([^\"\u201d\n]{1,400})[\"\u201d]|(?<![\w])'([^'\n]{1,80}?)'(?![\w])")
_MODEL_INTERNAL = re.compile(r"ridge model|minilm|cosine|softmax|circumplex|held-out|prototype activation|"
                             r"probabilit|distance of|lexicon weight|combined:")
_EMOTION_WORDS = frozenset(w for synonyms in CONCEPTS.values() for w in synonyms)


class Assertion(NamedTuple):
    """One checkable statement: kind, what it is about, and where it sits in the text."""

    kind: str  # num | au | pitch_dir | pitch_level | loud | pause | rate | quote | speaker | internal
    key: str  # feature, AU group ("AU01+AU02"), quoted phrase, speaker
    value: float  # claimed number, or +1/-1 (direction, level), 1/0 (present/absent)
    text: str  # the words that make it
    position: int  # character offset, to find its time span


# Cheap substring tests that skip a pattern family when none of its words occur.
_AU_WORD_TRIGGERS = ("smil", "grin", "lip", "cheek", "crow", "duchenne", "frown", "furrow", "brow", "nose", "jaw",
                     "mouth", "eye", "lid", "squint")
_DIRECTIONAL = (
    (_PITCH_DIRECTION, "pitch_dir", ("pitch", "f0", "intonation")),
    (_PITCH_LEVEL, "pitch_level", ("pitch", "f0")),
    (_LOUDNESS, "loud", ("loud", "shout", "yell", "voice", "intensity", "energy", "volume", "quiet", "soft",
                         "whisper", "mumbl")),
    (_RATE, "rate", ("speech", "speak", "talk", "pace", "tempo", "delivery")),
)


def _has_any(text: str, words: tuple[str, ...]) -> bool:
    for word in words:
        if word in text:
            return True
    return False


def _negated(text: str, position: int) -> bool:
    return bool(_NEGATION.search(text, max(0, position - 40), position))


def _parse(text: str) -> tuple[tuple[Assertion, ...], tuple[tuple[int, float, float], ...]]:
    """(assertions, spans) of one step or claim text; spans are (position, start, end) as
    written. Memoised by text, and the regex work by the text's template: its ASCII digits
    all read 0 (no pattern tells one digit from another, and a same-length template keeps
    every match where it is), so "AU12 estimate 0.62 over 3.0-4.0 s" and "AU15 estimate
    0.31 over 1.2-2.2 s" share one plan and only the numbers are read per text."""
    hit = _PARSED.get(text)
    if hit is not None:
        return hit
    parsed = _parse_text(text)
    if len(_PARSED) > 200_000:
        _PARSED.clear()
    _PARSED[text] = parsed
    return parsed


def _parse_text(text: str) -> tuple[tuple[Assertion, ...], tuple[tuple[int, float, float], ...]]:
    """`_parse` without the memo by text (the plan of the template is memoised)."""
    return _instantiate(_plan_of(_template(text)), text)


def _template(text: str) -> str:
    """The text with its ASCII digits 1-9 read as 0."""
    if text.isascii():
        return text.encode().translate(_ZERO_DIGIT_BYTES).decode()
    return text.translate(_ZERO_DIGITS)


def _plan_of(template: str) -> tuple[tuple, tuple]:
    plan = _PLANS.get(template)
    if plan is None:
        if len(_PLANS) > 50_000:
            _PLANS.clear()
        plan = _PLANS[template] = _plan(template)
    return plan


_ZERO_DIGITS = str.maketrans("123456789", "000000000")
_ZERO_DIGIT_BYTES = bytes.maketrans(b"123456789", b"000000000")
# How _instantiate reads a key or value from the real text at the template's match spans.
_K_AU, _K_SPEAKER, _K_QUOTE = 1, 2, 3


@lru_cache(maxsize=10_000)
def _au_name(name: str) -> str:
    """"au 4" -> "AU04"."""
    return f"AU{int(name[2:].strip()):02d}"


def _plan(text: str) -> tuple[tuple, tuple]:
    """The regex work of `_parse` on a template: per assertion (kind, key, key spec, value,
    value spec, text span, position), per time span (position, spec)."""
    low = text.lower()
    found: list[tuple] = []  # (kind, key, key_spec, value, value_spec, text_source, s, e, position)

    def add(kind, key, value, s, e, position, key_spec=None, value_spec=None, source=1):
        found.append((kind, key, key_spec, value, value_spec, source, s, e, position))

    for m in _FEATURE_NUMBER.finditer(low):
        name, number, unit = m.group(1), m.group(2), m.group(3) or ""
        if number[0] in "+-" and not unit:
            continue  # a signed, unit-less number is a contribution or a score, not a measurement
        key_spec = None
        if name.startswith("au"):
            feature = ""
            key_spec = (_K_AU, m.start(1), m.end(1))
        else:
            feature = _FEATURE_ALIASES[name]
            if feature == "f0_mean" and name in ("pitch", "f0") and unit not in ("hz", ""):
                continue
            if name in ("intensity", "intensity mean", "loudness") and unit != "db":
                continue  # "intensity 0.7" is the emotion's intensity, not the voice's level in dB
        add("num", feature, 0.0, m.start(), m.end(), m.start(), key_spec,
            (m.start(2), m.end(2), 100.0 if unit == "%" else 1.0))
    for m in (_NUMBER_FEATURE.finditer(low) if "words" in low or "pause" in low else ()):
        feature = "words" if m.group(2) == "words" else "pause_count"
        add("num", feature, 0.0, m.start(1), m.end(), m.start(1), None, (m.start(1), m.end(1), 1.0))
    m = _FACE_PRESENT.search(low) if "face present" in low else None
    if m:
        add("num", "face_presence", 0.0, m.start(), m.end(), m.start(), None, (m.start(1), m.end(1), 100.0))
    for m in (_AU_WORD.finditer(low) if _has_any(low, _AU_WORD_TRIGGERS) else ()):
        _, aus, name = _AU_WORDS[int(m.lastgroup[1:])]
        present = 0.0 if _negated(low, m.start()) else 1.0
        add("au", "+".join(aus), present, m.start(), m.end(), m.start())
    for m in (_AU_STATE.finditer(low) if "au" in low else ()):
        present = 1.0 if m.group(2) else 0.0
        if _negated(low, m.start()):
            present = 1.0 - present
        add("au", "", present, m.start(), m.end(), m.start(), (_K_AU, m.start(1), m.end(1)))
    for pattern, kind, triggers in _DIRECTIONAL:
        if not _has_any(low, triggers):
            continue
        for m in pattern.finditer(low):
            groups = m.groups()
            direction = 1.0 if any(groups[i] for i in range(0, len(groups), 2)) else -1.0
            if _negated(low, m.start()):
                direction = -direction if kind != "pitch_dir" else 0.0  # "not rising" is not "falling"
            if direction:
                add(kind, kind, direction, m.start(), m.end(), m.start())
    if not any(a[1] == "pause_count" for a in found):
        m = _PAUSE.search(low) if _has_any(low, ("paus", "hesitat", "silence")) else None
        if m:
            present = 0.0 if _negated(low, m.start()) else 1.0
            add("pause", "pause", present, m.start(), m.end(), m.start())
    for m in (_SPEAKER.finditer(text) if "s" in low and ("speaker" in low or "S" in text) else ()):
        digits = 1 if m.group(1) else 2
        add("speaker", "", 1.0, m.start(), m.end(), m.start(), (_K_SPEAKER, m.start(digits), m.end(digits)),
            source=0)
    for m in (_QUOTE.finditer(text) if '"' in text or "'" in text or "\u201c" in text else ()):
        group = 1 if m.group(1) is not None else 2
        quoted = m.group(group).strip()
        # digits only ever add characters to the phrase: the tests below read the same on the template
        phrase = " ".join(filter(None, (_normalise(t) for t in quoted.split())))
        if not phrase or phrase in _EMOTION_WORDS or phrase.startswith("au") or not any(c.isalpha() for c in phrase):
            continue
        add("quote", "", 1.0, m.start(), min(m.end(), m.start() + 120), m.start(),
            (_K_QUOTE, m.start(group), m.end(group)), source=0)
    m = _MODEL_INTERNAL.search(low)
    if m:
        add("internal", m.group(0), 0.0, m.start(), m.end(), m.start())
    spans = []
    for m in (_SPAN.finditer(low) if " s" in low or "s " in low or low.endswith("s") else ()):
        if m.group(3) is not None:
            spans.append((m.start(), (m.start(3), m.end(3))))
        else:
            spans.append((m.start(), (m.start(1), m.end(1), m.start(2), m.end(2))))
    return tuple(found), tuple(spans)


def _read_key_value(text: str, low: str, key, key_spec, value, value_spec):
    """The key (AU name, speaker, quoted words) and number a compiled template points at in `text`."""
    if key_spec is not None:
        op, ks, ke = key_spec
        if op == _K_AU:
            key = _au_name(low[ks:ke])
        elif op == _K_SPEAKER:
            key = "S" + text[ks:ke]
        else:
            key = " ".join(filter(None, (_normalise(t) for t in text[ks:ke].strip().split())))
    if value_spec is not None:
        vs, ve, divisor = value_spec
        value = float(low[vs:ve]) / divisor
    return key, value


def _instantiate(plan: tuple[tuple, tuple], text: str
                 ) -> tuple[tuple[Assertion, ...], tuple[tuple[int, float, float], ...]]:
    """A plan's assertions and spans with the numbers, AUs, speakers and quotes of `text`."""
    planned, planned_spans = plan
    low = text.lower()
    found = []
    for kind, key, key_spec, value, value_spec, source, s, e, position in planned:
        key, value = _read_key_value(text, low, key, key_spec, value, value_spec)
        found.append(Assertion(kind, key, value, (text if source else text)[s:e], position))
    spans = []
    for position, spec in planned_spans:
        if len(spec) == 2:
            t = float(low[spec[0]:spec[1]])
            spans.append((position, t - 0.5, t + 0.5))
        else:
            spans.append((position, float(low[spec[0]:spec[1]]), float(low[spec[2]:spec[3]])))
    return tuple(found), tuple(spans)


_PARSED: dict[str, tuple[tuple[Assertion, ...], tuple[tuple[int, float, float], ...]]] = {}
_PLANS: dict[str, tuple[tuple, tuple]] = {}


# -- checking -------------------------------------------------------------------------

SUPPORTED, CONTRADICTED, UNVERIFIABLE = "supported", "contradicted", "unverifiable"

_SUMMARY_FEATURES = {"f0_mean", "f0_sd", "f0_range", "f0_slope", "hnr", "jitter_local", "shimmer_local",
                     "voiced_fraction", "intensity_mean", "intensity_sd", "speech_rate_words",
                     "speech_rate_syllables", "pause_count"}
_TIMELINE_OF = {"f0_mean": "f0", "f0": "f0", "intensity_mean": "intensity", "intensity": "intensity"}
_UNITS = {"f0_mean": " Hz", "f0_sd": " Hz", "f0_range": " Hz", "f0_slope": " Hz/s", "hnr": " dB",
          "intensity_mean": " dB", "intensity_sd": " dB", "speech_rate_words": " words/s",
          "speech_rate_syllables": " syll/s"}
_MODALITY_OF = {"au": "visual", "pitch_dir": "audio", "pitch_level": "audio", "loud": "audio", "pause": "audio",
                "rate": "audio", "quote": "text", "speaker": "speaker", "internal": "other"}


def _tolerance(feature: str, measured: float) -> float:
    spec = _TOLERANCES.get(feature)
    if spec is not None:
        floor, relative = spec
        return max(floor, relative * abs(measured)) if relative else floor
    return _tolerance_of(feature, measured)


# feature -> (floor, share of the measured value) of _tolerance_of, for the features it names
_TOLERANCES = {"f0_mean": (6.0, 0.04), "f0": (6.0, 0.04), "f0_sd": (5.0, 0.1), "f0_range": (5.0, 0.1),
               "f0_slope": (3.0, 0.2), "intensity_mean": (0.6, 0.03), "intensity": (0.6, 0.03),
               "intensity_sd": (0.6, 0.03), "hnr": (0.6, 0.03), "jitter_local": (0.002, 0.1),
               "shimmer_local": (0.002, 0.1), "voiced_fraction": (0.03, 0.0), "face_presence": (0.03, 0.0),
               "speech_rate_words": (0.15, 0.0), "speech_rate_syllables": (0.15, 0.0),
               **{f"AU{i:02d}": (AU_TOLERANCE, 0.0) for i in range(100)}}


def _tolerance_of(feature: str, measured: float) -> float:
    if feature.startswith("AU") or feature.startswith("expr_"):
        return AU_TOLERANCE  # probabilities, 0..1 and rounded to 2 decimals like AU estimates
    if feature in ("f0_mean", "f0"):
        return max(6.0, 0.04 * abs(measured))
    if feature in ("f0_sd", "f0_range"):
        return max(5.0, 0.1 * abs(measured))
    if feature == "f0_slope":
        return max(3.0, 0.2 * abs(measured))
    if feature in ("intensity_mean", "intensity", "intensity_sd", "hnr"):
        return max(0.6, 0.03 * abs(measured))
    if feature in ("jitter_local", "shimmer_local"):
        return max(0.002, 0.1 * abs(measured))
    if feature in ("voiced_fraction", "face_presence"):
        return 0.03
    if feature in ("speech_rate_words", "speech_rate_syllables"):
        return 0.15
    return 0.5  # counts


def _span_text(start: float, end: float) -> str:
    return f"{start:.1f}-{end:.1f} s"


def _fmt(feature: str, value: float) -> str:
    spec = _format_of(feature)
    return format(value, spec[0]) + spec[1]


@lru_cache(maxsize=10_000)
def _format_of(feature: str) -> tuple[str, str]:
    """(format spec, unit) of `_fmt`."""
    digits = 2 if feature.startswith(("AU", "expr_")) or feature in ("voiced_fraction", "face_presence") else (
        3 if feature in ("jitter_local", "shimmer_local") else (0 if feature in ("words", "pause_count") else 1))
    return f".{digits}f", _UNITS.get(feature, "")


def _measured(feature: str, facts: ClipFacts, start: float, end: float) -> tuple[list[float], str]:
    """Measured value(s) of `feature` over [start, end] (candidates, in preference order),
    or ([], why not). Memoised per clip."""
    if not (start and end):  # a zero reads the same as -0.0 in a key, not in the reason
        return _measure(feature, facts, start, end)
    key = (feature, start, end)
    hit = facts._measures.get(key)
    if hit is None:
        hit = facts._measures[key] = _measure(feature, facts, start, end)
    return hit


def _measure(feature: str, facts: ClipFacts, start: float, end: float) -> tuple[list[float], str]:
    whole = facts.is_whole(start, end)
    values: list[float] = []
    if feature.startswith(("AU", "expr_")):  # AU estimates; expression-model probability of a concept
        if not facts.has_visual:
            return [], "no face was analysed in the clip"
        summary = (facts.faces.mean_aus.get(feature) if feature.startswith("AU")
                   else facts.faces.mean_expression.get(feature[5:]))
        if whole and summary is not None:
            values.append(summary)
        window = facts.window_mean(feature, start, end)
        if window is not None:
            values.append(window)
        return values, "" if values else f"no {feature} measured in {_span_text(start, end)}"
    if feature == "face_presence":
        return ([facts.faces.presence] if whole else []), "" if whole else "presence is measured per clip"
    if feature == "words":
        return [float(sum(1 for _, ws, we, _ in facts.words if ws >= start - 0.1 and we <= end + 0.1))], ""
    if feature in _SUMMARY_FEATURES or feature in _TIMELINE_OF:
        if feature not in ("voiced_fraction", "pause_count", "speech_rate_words") and not facts.has_audio:
            return [], "no voiced speech was measured in the clip"
        if whole and feature in _SUMMARY_FEATURES:
            stored = getattr(facts.prosody, feature)
            if stored is not None:
                values.append(float(stored))
        column = _TIMELINE_OF.get(feature)
        if column is not None:
            window = facts.window_mean(column, start, end)
            if window is not None:
                values.append(window)
        elif feature == "f0_slope" and not whole:
            slope = facts.f0_slope(start, end)
            if slope is not None:
                values.append(slope)
        if values:
            return values, ""
        return [], (f"{feature} is measured over the whole clip only" if not whole
                    else f"{feature} was not measured")
    return [], f"{feature} is not a measured feature"


def _stored_first(feature: str, facts: ClipFacts, start: float, end: float) -> float | None:
    """The first candidate `_measure` gives when it is a stored whole-clip summary, else None."""
    if start <= facts.start + WHOLE_CLIP_SLACK and end >= facts.end - WHOLE_CLIP_SLACK:  # is_whole
        if feature in _SUMMARY_FEATURES:
            if feature not in ("voiced_fraction", "pause_count", "speech_rate_words") and not facts.has_audio:
                return None
            stored = getattr(facts.prosody, feature)
            return None if stored is None else float(stored)
        if feature[:2] == "AU" and facts.has_visual:
            aus = facts.faces.mean_aus
            if feature in aus:
                return aus[feature]
    return None


def _quoted_check(memo: dict, key: tuple | None, tail: Callable[..., tuple[str, str]], args: tuple,
                  text: str) -> tuple[str, str]:
    """(verdict, "'{text}'" + tail): the tail does not depend on the quoted text, so it is memoised
    per clip under `key` (a step and an evidence item often cite the same thing over the same range);
    None: not memoised."""
    if key is None:
        hit = tail(*args)
    else:
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = tail(*args)
    return hit[0], f"'{text}'{hit[1]}"


def _check_number(feature: str, claimed: float, facts: ClipFacts, start: float, end: float,
                  text: str) -> tuple[str, str]:
    # Zeros are left out of the keys: 0.0 and -0.0 are the same key, not the same text.
    key = (feature, claimed, start, end) if claimed and start and end else None
    return _quoted_check(facts._number_checks, key, _number_tail, (feature, claimed, facts, start, end), text)


def _span_of(facts: ClipFacts, start: float, end: float) -> str:
    """_span_text(start, end), memoised per clip (zeros left out: 0.0 and -0.0 are one key, not one text)."""
    if start and end:
        key = (start, end)
        text = facts._spans.get(key)
        if text is None:
            text = facts._spans[key] = f"{start:.1f}-{end:.1f} s"
        return text
    return f"{start:.1f}-{end:.1f} s"


def _number_tail(feature: str, claimed: float, facts: ClipFacts, start: float, end: float) -> tuple[str, str]:
    """(verdict, the reason after the quoted claim) of a claimed number of `feature` over [start, end]."""
    span = _span_of(facts, start, end)
    if start <= facts.start + WHOLE_CLIP_SLACK and end >= facts.end - WHOLE_CLIP_SLACK:  # whole clip
        first = _stored_first(feature, facts, start, end)
        if first is not None and abs(claimed - first) <= _tolerance(feature, first):
            # the stored summary holds: the candidates after it (window means) cannot change the answer
            return SUPPORTED, f" over {span}: measured {_fmt(feature, first)}"
    hit = facts._measures.get((feature, start, end)) if start and end else None  # _measured's memo
    values, why = hit if hit is not None else _measured(feature, facts, start, end)
    if not values:
        verdict = CONTRADICTED if why.startswith("no ") and "in the clip" in why else UNVERIFIABLE
        return verdict, f" over {span}: {why}"
    for value in values:
        if abs(claimed - value) <= _tolerance(feature, value):
            return SUPPORTED, f" over {span}: measured {_fmt(feature, value)}"
    return CONTRADICTED, f" over {span}: claimed {_fmt(feature, claimed)}, measured {_fmt(feature, values[0])}"


def _check_au(group: str, present: float, facts: ClipFacts, start: float, end: float, text: str) -> tuple[str, str]:
    key = (group, present, start, end) if start and end else None
    return _quoted_check(facts._au_checks, key, _au_tail, (group, present, facts, start, end), text)


def _au_tail(group: str, present: float, facts: ClipFacts, start: float, end: float) -> tuple[str, str]:
    """(verdict, the reason after the quoted claim) of an action (`group`'s AUs) said present or absent."""
    span = _span_of(facts, start, end)
    if not facts.has_visual:
        return CONTRADICTED, f" over {span}: no face was analysed in the clip"
    best = None
    best_au = ""
    window_mean = facts.window_mean
    for au in _au_group(group):
        value = window_mean(au, start, end)
        if value is not None and (best is None or value > best):
            best, best_au = value, au
    if best is None:
        return UNVERIFIABLE, f" over {span}: no {group} estimate in the range"
    state = "present" if present else "absent"
    measured = f"{best_au} mean {best:.2f}"
    if best >= AU_ACTIVE:
        verdict = SUPPORTED if present else CONTRADICTED
        why = f"active (>= {AU_ACTIVE:.2f})"
    elif best < AU_INACTIVE:
        verdict = CONTRADICTED if present else SUPPORTED
        why = f"no activity (< {AU_INACTIVE:.2f})"
    else:
        return UNVERIFIABLE, f" ({state}) over {span}: {measured}, weak (between {AU_INACTIVE:.2f} and " \
                             f"{AU_ACTIVE:.2f})"
    return verdict, f" ({state}) over {span}: {measured}, {why}"


@lru_cache(maxsize=10_000)
def _au_group(group: str) -> tuple[str, ...]:
    """"AU01+AU02" -> ("AU01", "AU02")."""
    return tuple(group.split("+"))


def _check_level(kind: str, direction: float, facts: ClipFacts, start: float, end: float,
                 text: str) -> tuple[str, str]:
    column = "f0" if kind == "pitch_level" else "intensity"
    span = _span_text(start, end)
    if not facts.has_audio:
        return CONTRADICTED, f"'{text}' over {span}: no voiced speech was measured in the clip"
    if facts.is_whole(start, end):
        return UNVERIFIABLE, f"'{text}' over the whole clip: no speaker baseline to compare {column} with"
    window = facts.window_mean(column, start, end)
    clip = facts.window_mean(column, facts.start, facts.end)
    if window is None or clip is None:
        return UNVERIFIABLE, f"'{text}' over {span}: no {column} measured in the range"
    unit = "Hz" if column == "f0" else "dB"
    margin = LEVEL_MARGIN[column] * abs(clip)
    higher = window > clip + margin
    lower = window < clip - margin
    measured = f"{column} mean {window:.1f} {unit} vs clip mean {clip:.1f} {unit}"
    if (direction > 0 and higher) or (direction < 0 and lower):
        return SUPPORTED, f"'{text}' over {span}: {measured}"
    if (direction > 0 and lower) or (direction < 0 and higher):
        return CONTRADICTED, f"'{text}' over {span}: {measured}"
    return UNVERIFIABLE, f"'{text}' over {span}: {measured}, within {margin:.1f} {unit}"


def _check_assertion(a: Assertion, facts: ClipFacts, start: float, end: float) -> tuple[str, str]:
    return _check_assertion_entry(a, None, facts, start, end, a.text)


def _check_assertion_entry(a: Assertion, _: Any, facts: ClipFacts, start: float, end: float,
                           __: str) -> tuple[str, str]:
    """`_check_assertion` with a plan entry's arguments (the checker of its kinds other than num / au)."""
    kind = a.kind
    if kind == "num":
        return _check_number(a.key, a.value, facts, start, end, a.text)
    if kind == "au":
        return _check_au(a.key, a.value, facts, start, end, a.text)
    if kind == "quote":
        return _check_quote(a.key, facts, start, end, a.text)
    span = _span_text(start, end)
    if kind == "pitch_dir":
        if not facts.has_audio:
            return CONTRADICTED, f"'{a.text}' over {span}: no voiced speech was measured in the clip"
        slope = facts.prosody.f0_slope if facts.is_whole(start, end) else None
        if slope is None:
            slope = facts.f0_slope(start, end)
        if slope is None:
            return UNVERIFIABLE, f"'{a.text}' over {span}: fewer than 3 voiced F0 rows"
        direction = "rising" if slope >= SLOPE_MIN else "falling" if slope <= -SLOPE_MIN else "flat"
        measured = f"F0 slope {slope:+.1f} Hz/s ({direction})"
        if direction == "flat":
            return CONTRADICTED, f"'{a.text}' over {span}: {measured}"
        ok = (a.value > 0) == (direction == "rising")
        return (SUPPORTED if ok else CONTRADICTED), f"'{a.text}' over {span}: {measured}"
    if kind in ("pitch_level", "loud"):
        return _check_level(kind, a.value, facts, start, end, a.text)
    if kind == "pause":
        if facts.is_whole(start, end) and facts.has_audio:
            count = facts.prosody.pause_count
        else:
            count = sum(1 for ps, pe in facts.pauses if ps < end and pe > start)
        ok = (count > 0) == (a.value > 0)
        return (SUPPORTED if ok else CONTRADICTED), f"'{a.text}' over {span}: {count} pause(s) measured"
    if kind == "rate":
        inside = [w for w in facts.words if w[1] >= start - 0.1 and w[2] <= end + 0.1]
        if len(inside) < 2:
            return UNVERIFIABLE, f"'{a.text}' over {span}: fewer than two words"
        rate = len(inside) / max(0.1, inside[-1][2] - inside[0][1])
        measured = f"{rate:.1f} words/s"
        if (a.value > 0 and rate >= FAST_RATE) or (a.value < 0 and rate <= SLOW_RATE):
            return SUPPORTED, f"'{a.text}' over {span}: {measured}"
        if (a.value > 0 and rate <= SLOW_RATE) or (a.value < 0 and rate >= FAST_RATE):
            return CONTRADICTED, f"'{a.text}' over {span}: {measured}"
        return UNVERIFIABLE, f"'{a.text}' over {span}: {measured}, between {SLOW_RATE} and {FAST_RATE}"
    if kind == "speaker":
        turns = facts.speakers.get(a.key)
        if not turns:
            known = ", ".join(sorted(facts.speakers)) or "none"
            return CONTRADICTED, f"'{a.text}': no speaker {a.key} in the clip (speakers: {known})"
        if any(ts < end and te > start for ts, te in turns):
            return SUPPORTED, f"'{a.text}' speaks within {span}"
        return CONTRADICTED, f"'{a.text}' does not speak within {span}"
    return UNVERIFIABLE, f"'{a.text}': a model-internal statement, not a measurement"


def _check_quote(phrase: str, facts: ClipFacts, start: float, end: float, text: str) -> tuple[str, str]:
    tokens = phrase.split()
    words = facts.words
    span = _span_text(start, end)
    if not words:
        return CONTRADICTED, f"quote {text} over {span}: no words were recognised in the clip"
    n = len(tokens)
    candidates = facts.word_index.get(tokens[0], ())
    if not candidates and n == 1:  # a truncated single word: prefix match
        candidates = [i for i, w in enumerate(words) if w[0].startswith(tokens[0])]
    found_outside = None
    for i in candidates:
        if i + n > len(words):
            continue
        ok = True
        for k in range(1, n):
            word = words[i + k][0]
            if word != tokens[k] and not (k == n - 1 and word.startswith(tokens[k])):
                ok = False
                break
        if ok:
            ws, we = words[i][1], words[i + n - 1][2]
            if ws >= start - QUOTE_SLACK and we <= end + QUOTE_SLACK:
                return SUPPORTED, f"quote {text} said at {_span_text(ws, we)}"
            found_outside = (ws, we)
    if found_outside:
        return CONTRADICTED, (f"quote {text} is said at {_span_text(*found_outside)}, outside the cited {span}")
    said = " ".join(w[0] for w in words[:12]) + (" ..." if len(words) > 12 else "")
    return CONTRADICTED, f"quote {text} is not in the transcript ({said!r})"


def _resolve_span(start: float, end: float, facts: ClipFacts, relative_first: bool) -> tuple[float, float]:
    """A span written in a step, in source seconds (see module docstring)."""
    fits_source = facts.start - 0.1 <= start and end <= facts.end + 0.1
    fits_relative = end <= facts.end - facts.start + 0.1
    if relative_first and fits_relative or not fits_source and fits_relative:
        return facts.start + start, facts.start + end
    return start, end


def _verdict(results: list[tuple[str, str, str]]) -> tuple[str, str, str]:
    """(verdict, reason, modality) of one step or item from its assertions' results."""
    if len(results) == 1:
        return results[0]
    if len(results) == 2:  # the same as below, spelled out
        first, second = results
        if first[0] == CONTRADICTED:
            if second[0] == CONTRADICTED:
                return CONTRADICTED, first[1] + "; " + second[1], first[2]
            return CONTRADICTED, first[1] + "; also " + second[1], first[2]
        if second[0] == CONTRADICTED:
            return CONTRADICTED, second[1] + "; also " + first[1], second[2]
        if first[0] == SUPPORTED:
            return SUPPORTED, first[1] + "; " + second[1], first[2]
        if second[0] == SUPPORTED:
            return SUPPORTED, first[1] + "; " + second[1], second[2]
        return UNVERIFIABLE, first[1] + "; " + second[1], first[2]
    bad = [r for r in results if r[0] == CONTRADICTED]
    if bad:
        others = [r for r in results if r[0] != CONTRADICTED]
        reason = "; ".join(r[1] for r in bad) + ("; also " + "; ".join(r[1] for r in others[:3]) if others else "")
        return CONTRADICTED, reason, bad[0][2]
    good = [r for r in results if r[0] == SUPPORTED]
    if good:
        return SUPPORTED, "; ".join(r[1] for r in results), good[0][2]
    return UNVERIFIABLE, "; ".join(r[1] for r in results), results[0][2]


_LABEL_ONLY = re.compile(r"^\s*(?:step\s*\d+\s*[:.)-]\s*)?(?:therefore|so|thus|hence|overall|finally|in conclusion)?"
                         r"[, ]*(?:the )?(?:final |predicted |most prominent )?(?:label|emotion|answer)")


def check_claims(annotation: Annotation, facts: ClipFacts) -> list[ClaimCheck]:
    """One ClaimCheck per rationale step and per evidence item (module docstring); the
    last step is left out when it only states the label."""
    validate = _CLAIM_CHECK_VALIDATOR
    return [validate({"source": source, "index": index, "modality": modality, "claim": claim, "verdict": verdict,
                      "reason": reason})
            for source, index, modality, claim, verdict, reason in _claim_rows(annotation, facts)]


_CLAIM_CHECK_VALIDATOR = ClaimCheck.__pydantic_validator__.validate_python


def _claim_rows(annotation: Annotation, facts: ClipFacts) -> list[tuple[str, int, str, str, str, str]]:
    """`check_claims` as (source, index, modality, claim, verdict, reason) rows. A step text
    or evidence item checked before on the same clip (annotators of a clip often cite the same
    measurements) is answered from the clip's memo."""
    rows: list[tuple[str, int, str, str, str, str]] = []
    relative_first = annotation.endpoint != "offline"
    steps = annotation.steps
    last = len(steps)
    for number, step in enumerate(steps, start=1):
        if number == last and _label_only(step):
            continue  # the conclusion: scored by S_cot, not a claim about the clip
        hit = _step_check(step, relative_first, facts)
        rows.append(("step", number, hit[2], step[:300], hit[0], hit[1]))
    for number, item in enumerate(annotation.evidence):
        hit = _item_check(item, facts)
        rows.append(("evidence", number, item.modality, item.claim[:300], hit[0], hit[1]))
    return rows


def _label_only(step: str) -> bool:
    """Does the step only state the label (memoised by text)?"""
    label_only = _LABEL_ONLY_STEPS.get(step)
    if label_only is None:
        label_only = _step_plan(step)[0]
        if len(_LABEL_ONLY_STEPS) > 100_000:
            _LABEL_ONLY_STEPS.clear()
        _LABEL_ONLY_STEPS[step] = label_only
    return label_only


def _step_check(step: str, relative_first: bool, facts: ClipFacts) -> tuple:
    """(verdict, reason, modality, {index: ClaimCheck}) of a step, from the clip's memo."""
    key = (step, relative_first)
    hit = facts._checks.get(key)
    if hit is None:
        plan = _STEP_PLANS.get(step) or _step_plan(step)
        hit = facts._checks[key] = (*_check_step(plan[1], facts, relative_first), {})
    return hit


def _item_check(item: EvidenceItem, facts: ClipFacts) -> tuple:
    """(verdict, reason, {index: ClaimCheck} or None) of an evidence item, from the clip's memo
    where its key is exact."""
    start, end, value = item.start, item.end, item.value
    if start and end and (value is None or value):  # exact keys: no -0.0 that would read like 0.0
        key = (item.modality, item.feature, value, start, end, item.claim)
        hit = facts._checks.get(key)
        if hit is None:
            hit = facts._checks[key] = (*_check_item(item, facts), {})
        return hit
    return (*_check_item(item, facts), None)


_LABEL_ONLY_STEPS: dict[str, bool] = {}  # step text -> it only states the label (memo)


def _step_plan(text: str) -> tuple[bool, tuple[tuple, ...]]:
    """(only states the label, per assertion: (kind, checker, its two first arguments, the
    assertion's text, nearest span as written or None for the whole clip, modality)) of one
    step text: what `_parse` reads, ready to check. Memoised by text; everything but the
    numbers, AUs, speakers and quotes comes from the template's compiled plan."""
    hit = _STEP_PLANS.get(text)
    if hit is not None:
        return hit
    template = _template(text)
    compiled = _COMPILED.get(template)
    if compiled is None:
        if len(_COMPILED) > 50_000:
            _COMPILED.clear()
        compiled = _COMPILED[template] = _compile(template)
    label_only, planned, planned_spans = compiled
    low = text.lower()
    spans = []
    for spec in planned_spans:  # as in _instantiate
        if len(spec) == 2:
            t = float(low[spec[0]:spec[1]])
            spans.append((0, t - 0.5, t + 0.5))
        else:
            spans.append((0, float(low[spec[0]:spec[1]]), float(low[spec[2]:spec[3]])))
    entries = []
    for kind, check, key, key_spec, value, value_spec, s, e, position, nearest, modality in planned:
        if key_spec is not None:
            key, value = _read_key_value(text, low, key, key_spec, value, value_spec)
        elif value_spec is not None:  # _read_key_value, the number only
            value = float(low[value_spec[0]:value_spec[1]]) / value_spec[2]
        phrase = text[s:e]
        span = None if nearest < 0 else spans[nearest]
        if check is _check_assertion_entry:
            entries.append((kind, check, Assertion(kind, key, value, phrase, position), None, phrase, span, modality))
        else:
            entries.append((kind, check, key, value, phrase, span, modality))
    hit = (label_only, tuple(entries))
    if len(_STEP_PLANS) > 200_000:
        _STEP_PLANS.clear()
    _STEP_PLANS[text] = hit
    return hit


def _compile(template: str) -> tuple[bool, tuple[tuple, ...], tuple]:
    """A template's plan with what does not depend on its numbers settled: whether it only
    states the label, and per assertion its checker, nearest span (index) and modality."""
    planned, planned_spans = _plan_of(template)
    label_only = all(p[0] == "internal" for p in planned) and bool(_LABEL_ONLY.match(template.lower()))
    compiled = []
    for kind, key, key_spec, value, value_spec, source, s, e, position in planned:
        if planned_spans:
            nearest = 0 if len(planned_spans) == 1 else min(range(len(planned_spans)),
                                                            key=lambda i: abs(planned_spans[i][0] - position))
        else:
            nearest = -1
        if kind == "num":
            check = _check_number
            modality = "visual" if (key_spec is not None and key_spec[0] == _K_AU) or key == "face_presence" \
                else ("text" if key == "words" else "audio")  # _modality
        else:
            check = _check_au if kind == "au" else _check_assertion_entry
            modality = _MODALITY_OF[kind]
        compiled.append((kind, check, key, key_spec, value, value_spec, s, e, position, nearest, modality))
    return label_only, tuple(compiled), tuple(spec for _, spec in planned_spans)


_COMPILED: dict[str, tuple[bool, tuple, tuple]] = {}
_STEP_PLANS: dict[str, tuple[bool, tuple]] = {}


def _check_step(entries: tuple, facts: ClipFacts, relative_first: bool) -> tuple[str, str, str]:
    """(verdict, reason, modality) of one step from its planned assertions."""
    if not entries:
        return UNVERIFIABLE, "no measurable claim", "other"
    results = []
    clip_start, clip_end = facts.start, facts.end
    for _, check, first, second, text, nearest, modality in entries:
        if nearest is None:
            start, end = clip_start, clip_end
        else:  # _resolve_span
            start, end = nearest[1], nearest[2]
            fits_relative = end <= clip_end - clip_start + 0.1
            if fits_relative and (relative_first or not (clip_start - 0.1 <= start and end <= clip_end + 0.1)):
                start, end = clip_start + start, clip_start + end
        verdict, reason = check(first, second, facts, start, end, text)
        if len(entries) == 1:
            return verdict, reason, modality
        results.append((verdict, reason, modality))
    return _verdict(results)


def _modality(a: Assertion) -> str:
    if a.kind == "num":
        return "visual" if a.key.startswith("AU") or a.key == "face_presence" else (
            "text" if a.key == "words" else "audio")
    return _MODALITY_OF[a.kind]


_ITEM_FEATURES = {"f0": "f0_mean", "intensity": "intensity_mean", "face_presence": "face_presence",
                  "words": "words"}
_INTERNAL_FEATURES = {"minilm_cosine", "cosine", "probability", "valence", "arousal"}


@lru_cache(maxsize=10_000)
def _item_feature(raw: str) -> tuple[str, str, bool]:
    """(stripped feature, canonical feature or "", model-internal) of an item's feature."""
    feature = raw.strip()
    canonical = ""
    if feature:
        canonical = _ITEM_FEATURES.get(feature) or _FEATURE_ALIASES.get(feature.lower()) or (
            f"AU{int(feature[2:]):02d}" if feature[:2].upper() == "AU" and feature[2:].isdigit() else "") or (
            feature if feature.startswith("expr_") and feature[5:] in CONCEPTS else "")
    return feature, canonical, feature in _INTERNAL_FEATURES


def _check_item(item: EvidenceItem, facts: ClipFacts) -> tuple[str, str]:
    """An evidence item: its feature/value, then whatever its claim text asserts, over its
    own [start, end] (source seconds)."""
    start, end = item.start, item.end
    results: list[tuple[str, str, str]] = []
    feature, canonical, internal = _item_feature(item.feature)
    modality = item.modality
    value = item.value
    if feature:
        if internal:
            results.append((UNVERIFIABLE, f"{feature}: a model-internal score, not a measurement", modality))
        elif canonical and value is not None:
            verdict, reason = _check_number(canonical, float(value), facts, start, end, f"{feature} {value:g}")
            results.append((verdict, reason, modality))
    claim = item.claim
    entries = _step_plan(claim)[1]
    has_quote = False
    for kind, check, first, second, text, _, _ in entries:
        if kind == "quote":
            has_quote = True
        elif kind == "num" and feature and value is not None:
            continue  # the item's own feature/value is the number it cites
        verdict, reason = check(first, second, facts, start, end, text)
        results.append((verdict, reason, modality))
    if feature == "word" and not has_quote:
        words = claim.split()
        first = words[0] if words else ""
        phrase = _normalise(first)
        if phrase:
            results.append((*_check_quote(phrase, facts, start, end, first), modality))
    if not results:
        return UNVERIFIABLE, "no measurable claim"
    if len(results) == 1:
        return results[0][0], results[0][1]
    verdict, reason, _ = _verdict(results)
    return verdict, reason


# -- label fit and sufficiency -----------------------------------------------------------


def _modality_fits(facts: ClipFacts, space: LabelSpace) -> dict[str, tuple[dict[str, float], float, str]]:
    """Per measured modality: (fit per label 0..1, weight, how it was measured). Memoised
    per clip and space. The same arithmetic as specialists' softmax / concepts_to_space /
    predict_affect / lexicon_entry, with their per-space and per-word look-ups memoised."""
    key = space.name
    cached = facts._modality_scores.get(key)
    if cached is not None:
        return cached
    sp = _specialists()
    tables = _space_tables(space)
    out: dict[str, tuple[dict[str, float], float, str]] = {}
    if facts.has_visual and facts.faces.mean_expression:
        # the expression model's mean probabilities over the clip, on the space's labels
        probabilities = _to_space(facts.faces.mean_expression, space, tables)
        top = max(probabilities.values())
        out["visual"] = ({k: v / top for k, v in probabilities.items()}, 1.0,
                         "the expression model's mean probabilities")
    elif facts.has_visual:
        aus = facts.faces.mean_aus
        activation = {}
        for concept, proto in tables["prototypes"]:
            present = [aus[au] for au in proto if au in aus]
            if present:
                activation[concept] = float(sum(present) / len(present))
        activation["neutral"] = sp.NEUTRAL_ACTIVATION  # dict(activation, neutral=...)
        # sp.softmax, then _to_space
        top = max(activation.values())
        temperature = sp.VISUAL_TEMPERATURE
        exp = math.exp
        weights = {k: exp((v - top) / temperature) for k, v in activation.items()}
        total = sum(weights.values())
        probabilities = _to_space({k: w / total for k, w in weights.items()}, space, tables)
        top = max(probabilities.values())
        out["visual"] = ({k: v / top for k, v in probabilities.items()}, 1.0, "EMFACS prototypes of the mean AUs")
    if facts.has_audio:
        features, fit_a = tables["acoustic"]
        prosody = facts.prosody
        z = []
        for feature, mean, scale in features:
            value = getattr(prosody, feature)
            z.append(0.0 if value is None else (float(value) - mean) / scale)
        arousal = max(-1.0, min(1.0, fit_a["intercept"] + sum(c * x for c, x in zip(fit_a["coefficients"], z))))
        spread = max(0.1, fit_a["nested_loo"]["rmse"])
        exp = math.exp
        fits = {label: exp(-0.5 * ((arousal - point) / spread) ** 2) for label, point in tables["arousal"]}
        out["audio"] = (fits, 1.0, f"arousal {arousal:+.2f} predicted from prosody")
    if facts.has_text:
        counts: dict[str, float] = {"neutral": TEXT_NEUTRAL_PSEUDO}
        hits = 0
        for text, *_ in facts.words:
            for concept in _word_concepts(text):
                counts[concept] = counts.get(concept, 0.0) + 1.0
                hits += 1
        probabilities = _to_space(counts, space, tables)
        top = max(probabilities.values())
        out["text"] = ({k: v / top for k, v in probabilities.items()}, 1.0 if hits else 0.5,
                       f"{hits} NRC emotion word(s)")
    facts._modality_scores[key] = out
    return out


def _specialists():
    """merforge.agents.specialists, imported on first use (it imports this module's neighbours)."""
    global _SP
    if _SP is None:
        from merforge.agents import specialists

        _SP = specialists
    return _SP


_SP = None


@lru_cache(maxsize=200_000)
def _word_concepts(text: str) -> tuple[str, ...]:
    """The NRC concepts of a normalised word."""
    sp = _specialists()
    entry = sp.lexicon_entry(text.strip("'"), sp.nrc_lexicon())
    return tuple(c for c in (sp.NRC_TO_CONCEPT.get(category) for category in (entry[1] if entry else ())) if c)
_SPACE_TABLES: dict[tuple, dict[str, Any]] = {}


def _space_tables(space: LabelSpace) -> dict[str, Any]:
    last = _LAST_SPACE_TABLES
    if last and last[0] is space and last[1] == space.labels and last[2] == space.concepts:
        return last[3]
    key = (space.name, tuple(space.labels), tuple(space.concepts.items()))
    hit = _SPACE_TABLES.get(key)
    if hit is None:
        sp = _specialists()
        model = sp.load_acoustic_model()
        hit = {"prototypes": [(c, p) for c, p in sp.AU_PROTOTYPES.items() if sp.space_label_for(c, space) is not None],
               "arousal": [(label, sp.CIRCUMPLEX[space.concepts[label]][1]) for label in space.labels],
               "acoustic": (list(zip(model["features"], model["means"], model["scales"])),
                            model["targets"]["arousal"]),
               "label_of": {}}
        _SPACE_TABLES[key] = hit
    _LAST_SPACE_TABLES[:] = [space, tuple(space.labels), dict(space.concepts), hit]
    return hit


_LAST_SPACE_TABLES: list = []  # [space, its labels, its concepts, its tables]: the space asked last


def _to_space(scores: dict[str, float], space: LabelSpace, tables: dict[str, Any]) -> dict[str, float]:
    """specialists.concepts_to_space with the concept -> label look-up memoised."""
    sp = _specialists()
    label_of = tables["label_of"]
    mass = {label: 0.0 for label in space.labels}
    for concept, score in scores.items():
        label = label_of.get(concept, _MISSING)
        if label is _MISSING:
            label = label_of[concept] = sp.space_label_for(concept, space)
        if label is not None:
            mass[label] += max(0.0, float(score))
    total = sum(mass.values())
    if total <= 0:
        return sp.concepts_to_space(scores, space)
    return {label: value / total for label, value in mass.items()}


def label_fit(label: str | None, facts: ClipFacts, space: LabelSpace,
              modalities: Sequence[str] | None = None) -> tuple[float, str]:
    """How well `label` fits the measured evidence, 0..1, with the reason (module
    docstring); only `modalities` when given. 0.5 when no modality was measured; 0 for a
    label outside the space."""
    fits = facts._fits
    key = (space.name, label, None if modalities is None else tuple(sorted(set(modalities))))
    hit = fits.get(key)
    if hit is not None:
        return hit
    if label is None or label not in space.concepts:
        result = (0.0, f"label {label!r} is not in the {space.name} label space")
    else:
        per_modality = _modality_fits(facts, space)
        chosen = tuple([m for m in ("visual", "audio", "text") if m in per_modality
                        and (modalities is None or m in modalities)])
        if not chosen:
            result = (0.5, "no measured modality" + (f" among {', '.join(key[2])}" if key[2] else "")
                      + "; fit 0.50 (no information)")
        else:
            # the same modalities chosen (all of them, or all that were cited): the same answer
            shared = (space.name, label, chosen, _CHOSEN)
            result = fits.get(shared)
            if result is None:
                total = 0
                weighted = 0
                parts = []
                for m in chosen:
                    scores, weight, how = per_modality[m]
                    total += weight
                    weighted += scores[label] * weight
                    parts.append(f"{m} {scores[label]:.2f} ({how})")
                fit = weighted / total
                result = fits[shared] = (round(fit, 4), f"{label} fits {', '.join(parts)}: {fit:.2f}")
    fits[key] = result
    return result


_CHOSEN = object()  # marks label_fit's memo entries per chosen modalities


def check_sufficiency(annotation: Annotation, facts: ClipFacts, space: LabelSpace) -> tuple[bool, str]:
    """Does the evidence the annotation cites support its label on its own? label_fit over
    the cited modalities only (speaker claims count as text). Memoised per clip, label and
    cited modalities."""
    return _sufficient(annotation.label, tuple(sorted({item.modality for item in annotation.evidence})), facts,
                       space)


def _sufficient(label: str | None, cited: tuple[str, ...], facts: ClipFacts, space: LabelSpace) -> tuple[bool, str]:
    """`check_sufficiency` from the label and the sorted cited modalities."""
    key = ("sufficiency", space.name, label, cited)
    hit = facts._fits.get(key)
    if hit is None:
        hit = facts._fits[key] = _sufficiency(label, cited, facts, space)
    return hit


def _sufficiency(label: str | None, cited: tuple[str, ...], facts: ClipFacts, space: LabelSpace) -> tuple[bool, str]:
    if not cited:
        return False, "no evidence cited"
    fit, reason = label_fit(label, facts, space, cited)
    measured = [m for m in cited if m in facts.available]
    if not measured:
        return False, f"cited {', '.join(cited)}, none of it measured in the clip"
    ok = fit >= SUFFICIENT_FIT
    return ok, f"from {', '.join(cited)} alone: {reason} ({'>=' if ok else '<'} {SUFFICIENT_FIT})"


# -- chain of thought ---------------------------------------------------------------------

_MODALITY_WORDS = {
    "text": re.compile(r"transcript|\bwords?\b|\bsaid\b|\bsays?\b|\bquote|lexicon|\bspeech content|\bphrase|"
                       r"\bsentence|\bverbal|[\"\u201c]"),
    "audio": re.compile(r"pitch|\bf0|voice|vocal|prosod|loud|intensity|\bpause|speech rate|\btone\b|hnr|jitter|"
                        r"shimmer|voiced|syllable|acoustic|audio"),
    "visual": re.compile(r"\bface|facial|\bau ?\d|smil|frown|\bbrow|\beyes?\b|cheek|\blips?\b|mouth|\bframe|"
                         r"expression|visual|\bjaw"),
}
_CUES = {
    "happiness": ("smil", "laugh", "au06", "au12", "cheek", "grin"),
    "sadness": ("cry", "tear", "au15", "au01", "sob", "frown", "lip corners down"),
    "anger": ("frown", "au04", "au07", "shout", "loud", "glare", "tense"),
    "fear": ("au20", "au05", "widened", "tremb", "scream", "high pitch"),
    "surprise": ("au01", "au02", "au26", "raised brow", "gasp", "open mouth", "jaw drop"),
    "disgust": ("au09", "nose wrinkl", "au15", "grimace"),
    "neutral": ("no particular", "relaxed", "even voice", "flat", "abstain", "nothing to judge"),
}


def _label_patterns(label: str, space: LabelSpace) -> tuple[re.Pattern, re.Pattern]:
    """(names the label or a synonym, names it or one of its cues), compiled once per label."""
    key = (space.name, label)
    hit = _LABEL_PATTERNS.get(key)
    if hit is None:
        concept = space.concepts.get(label, "")
        names = sorted({label, *CONCEPTS.get(concept, ())}, key=len, reverse=True)
        named = r"\b(?:" + "|".join(re.escape(n) for n in names) + r")\b"
        cues = "|".join(re.escape(c) for c in _CUES.get(concept, ()))
        hit = (re.compile(named), re.compile(named + (f"|{cues}" if cues else "")))
        _LABEL_PATTERNS[key] = hit
    return hit


_LABEL_PATTERNS: dict[tuple[str, str], tuple[re.Pattern, re.Pattern]] = {}


def _leads(text: str, label: str, space: LabelSpace) -> bool:
    """`_label_patterns(label, space)[1].search(text)`, answered by substring tests where they
    settle it: a cue is a plain substring, and a name can only match where it occurs."""
    key = (space.name, label)
    literals = _LABEL_LITERALS.get(key)
    if literals is None:
        concept = space.concepts.get(label, "")
        literals = _LABEL_LITERALS[key] = (tuple(sorted({label, *CONCEPTS.get(concept, ())})),
                                           tuple(_CUES.get(concept, ())))
    names, cues = literals
    for cue in cues:
        if cue in text:
            return True
    for name in names:
        if name in text:
            return _label_patterns(label, space)[0].search(text) is not None
    return False


_LABEL_LITERALS: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {}


def cot_score(annotation: Annotation, facts: ClipFacts, space: LabelSpace) -> tuple[float, str]:
    """S_cot (module docstring) with its reason."""
    return _cot_score(annotation.steps, annotation.label or "", {item.modality for item in annotation.evidence},
                      facts, space)


def _cot_score(steps: Sequence[str], label: str, considered: set[str], facts: ClipFacts,
               space: LabelSpace) -> tuple[float, str]:
    """`cot_score` from the steps, the label ("" for none) and the modalities the evidence items
    cite (a set of its own: the rationale's modalities are added to it). Joined texts are lowered
    whole: the separators (" ", " | ") hold no letters, so that is lowering each step."""
    joined = None
    for modality, pattern in _MODALITY_WORDS.items():
        if modality not in considered:
            if joined is None:
                joined = " ".join(steps).lower()
            if pattern.search(joined):
                considered.add(modality)
    available = facts.available
    missing = tuple([m for m in available if m not in considered])
    coverage = 1.0 - len(missing) / len(available) if available else 1.0
    n_steps = len(steps)
    enough = 1.0 if n_steps >= 2 else 0.0
    if label:
        last = steps[-1].lower() if steps else ""
        states = 1.0 if steps and (label in last or _label_patterns(label, space)[0].search(last)) else 0.0
        leads = 1.0 if n_steps > 1 and _leads(" | ".join(steps[:-1]).lower(), label, space) else 0.0
    else:
        states = leads = 0.0
    score = (coverage + enough + states + leads) / 4
    return round(score, 4), _cot_reason(len(available), missing, n_steps, leads, states, None if states else label)


@lru_cache(maxsize=10_000)
def _cot_reason(n_available: int, missing: tuple[str, ...], n_steps: int, leads: float, states: float,
                label: str | None) -> str:
    """S_cot's reason from what it depends on (`label`: None when the last step states it)."""
    notes = [f"modalities {n_available - len(missing)}/{n_available}"
             + (f" (not considered: {', '.join(missing)})" if missing else ""),
             f"{n_steps} step(s)" + ("" if n_steps >= 2 else " (fewer than 2)"),
             "an intermediate step leads to the label" if leads else "no intermediate step leads to the label",
             "the last step states the label" if states else f"the last step does not state the label {label!r}"]
    return "; ".join(notes)


# -- scores ---------------------------------------------------------------------------------


def reason_score(checks: Sequence[ClaimCheck]) -> tuple[float, str]:
    """S_reason (module docstring) with its reason naming the contradicted claims."""
    return _reason_score([(c.source, c.index, c.modality, c.claim, c.verdict, c.reason) for c in checks])


def _reason_score(rows: Sequence[tuple[str, int, str, str, str, str]]) -> tuple[float, str]:
    """`reason_score` over `_claim_rows` rows."""
    supported = 0
    contradicted = []
    for row in rows:
        verdict = row[4]
        if verdict == SUPPORTED:
            supported += 1
        elif verdict == CONTRADICTED:
            contradicted.append(row)
    unverifiable = len(rows) - supported - len(contradicted)
    denominator = supported + len(contradicted) + UNVERIFIABLE_WEIGHT * unverifiable
    if denominator <= 0:
        return 0.0, "no claims to check"
    score = max(0.0, supported - CONTRADICTION_PENALTY * len(contradicted)) / denominator
    reason = f"{supported} supported, {len(contradicted)} contradicted, {unverifiable} unverifiable of {len(rows)}"
    if contradicted:
        reason += "; contradicted: " + " | ".join(f"{c[0]} {c[1]}: {c[5]}" for c in contradicted[:5])
    return round(score, 4), reason


def _claims(annotation: Annotation, facts: ClipFacts) -> tuple[tuple[ClaimCheck, ...], float, str]:
    """(ClaimCheck records, S_reason, its reason): `check_claims` and `reason_score` in one pass
    over what `_claim_rows` reads. ClaimCheck records are frozen: the annotations of a clip that
    cite the same thing at the same place (step number, evidence index) share one."""
    make = _MAKE_CLAIM_CHECK  # the values are the judge's own: str, int and the verdict constants
    memo = facts._checks
    checks = []
    append = checks.append
    supported = 0
    contradicted = []  # (source, index, reason)
    relative_first = annotation.endpoint != "offline"
    steps = annotation.steps
    last = len(steps)
    number = 0
    for step in steps:
        number += 1
        if number == last:
            label_only = _LABEL_ONLY_STEPS.get(step)
            if label_only is None:
                label_only = _label_only(step)
            if label_only:
                continue  # the conclusion: scored by S_cot, not a claim about the clip
        key = (step, relative_first)
        hit = memo.get(key)  # _step_check
        if hit is None:
            plan = _STEP_PLANS.get(step) or _step_plan(step)
            hit = memo[key] = (*_check_step(plan[1], facts, relative_first), {})
        verdict, reason, modality, made = hit
        check = made.get(number)
        if check is None:
            check = made[number] = make({"source": "step", "index": number, "modality": modality,
                                         "claim": step[:300], "verdict": verdict, "reason": reason})
        append(check)
        if verdict is SUPPORTED or verdict == SUPPORTED:
            supported += 1
        elif verdict == CONTRADICTED:
            contradicted.append(("step", number, reason))
    number = 0
    for item in annotation.evidence:
        # _item_check
        modality, start, end, value, claim = item.modality, item.start, item.end, item.value, item.claim
        if start and end and (value is None or value):  # exact keys: no -0.0 that would read like 0.0
            key = (modality, item.feature, value, start, end, claim)
            hit = memo.get(key)
            if hit is None:
                hit = memo[key] = (*_check_item(item, facts), {})
            verdict, reason, made = hit
            check = made.get(number)
        else:
            verdict, reason = _check_item(item, facts)
            made = check = None
        if check is None:
            check = (make if type(modality) is str and type(claim) is str else _CLAIM_CHECK_VALIDATOR)({
                "source": "evidence", "index": number, "modality": modality, "claim": claim[:300],
                "verdict": verdict, "reason": reason})
            if made is not None:
                made[number] = check
        append(check)
        if verdict is SUPPORTED or verdict == SUPPORTED:
            supported += 1
        elif verdict == CONTRADICTED:
            contradicted.append(("evidence", number, reason))
        number += 1
    # _reason_score
    n = len(checks)
    n_contradicted = len(contradicted)
    unverifiable = n - supported - n_contradicted
    denominator = supported + n_contradicted + UNVERIFIABLE_WEIGHT * unverifiable
    if denominator <= 0:
        return tuple(checks), 0.0, "no claims to check"
    score = max(0.0, supported - CONTRADICTION_PENALTY * n_contradicted) / denominator
    reason = f"{supported} supported, {n_contradicted} contradicted, {unverifiable} unverifiable of {n}"
    if contradicted:
        reason += "; contradicted: " + " | ".join([f"{c[0]} {c[1]}: {c[2]}" for c in contradicted[:5]])
    return tuple(checks), round(score, 4), reason


def _distribution(annotation: Annotation, space: LabelSpace) -> dict[str, float]:
    probabilities = {k: v for k, v in annotation.label_probabilities.items() if k in space.concepts and v > 0}
    total = sum(probabilities.values())
    if total > 0 and annotation.label in probabilities:
        return {k: v / total for k, v in probabilities.items()}
    return {annotation.label: 1.0}


def _usable(annotation: Annotation, space: LabelSpace) -> bool:
    return annotation.status == AnnotationStatus.OK and annotation.label in space.concepts


def _zero(annotation: Annotation, weights: tuple[float, float, float], reason: str) -> JudgeScores:
    return _JUDGE_SCORES_VALIDATOR({
        "annotation_id": annotation.id, "clip_id": annotation.clip_id, "annotator_id": annotation.annotator_id,
        "judge": JUDGE_NAME, "reason": reason, "s_rec": 0.0, "s_reason": 0.0, "s_cot": 0.0, "s_final": 0.0,
        "weights": weights, "reasons": {"s_rec": reason, "s_reason": reason, "s_cot": reason}, "sufficient": False,
        "sufficiency_reason": reason})


def abstained_scores(annotation: Annotation, weights: tuple[float, float, float], judge: str) -> JudgeScores:
    """An abstention has no label and no reasoning to score: status "abstained", every score
    None, so it weighs in no average (neither as a good nor as a bad answer)."""
    why = f"abstained: {annotation.reason or 'nothing to judge'}"
    return JudgeScores(annotation_id=annotation.id, clip_id=annotation.clip_id, annotator_id=annotation.annotator_id,
                       judge=judge, status="abstained", reason=why, weights=weights)


# JudgeScores(**fields) / ClaimCheck(**fields) without the keyword-argument call: the same validation
_JUDGE_SCORES_VALIDATOR = JudgeScores.__pydantic_validator__.validate_python


_CLAIM_CHECK_FIELDS = ("source", "index", "modality", "claim", "verdict", "reason")
_SCORES_FIELDS = ("annotation_id", "clip_id", "annotator_id", "judge", "s_rec", "s_reason", "s_cot", "s_final",
                  "weights", "checks", "reasons", "sufficient", "sufficiency_reason")
# OK records are made from complete dicts (judge_clip's literal), where JudgeScores has its fields in that order
_SCORES_ORDER = ("annotation_id", "clip_id", "annotator_id", "judge", "status", "reason", "s_rec", "s_reason", "s_cot",
                 "s_final", "weights", "checks", "reasons", "sufficient", "sufficiency_reason", "tokens_in",
                 "tokens_out", "cost_usd")
_SCORES_DEFAULTS = {name: f.default for name, f in JudgeScores.model_fields.items()}
_MAKE_SCORES = (trusted_maker(JudgeScores, _SCORES_FIELDS, complete=True)
                if tuple(JudgeScores.model_fields) == _SCORES_ORDER else None)
_MAKE_CLAIM_CHECK = trusted_maker(ClaimCheck, _CLAIM_CHECK_FIELDS) or _CLAIM_CHECK_VALIDATOR


def judge_clip(annotations: Sequence[Annotation], facts: ClipFacts, space: LabelSpace, weights: JudgeWeights,
               reliabilities: Mapping[str, float] | None = None, sufficiency: bool = True) -> list[JudgeScores]:
    """JudgeScores for every annotation of one clip, in order (module docstring for the
    formulas). `reliabilities`: annotator id -> weight >= 0 in the leave-one-out consensus
    (default 1.0). Annotations that are not ok, or whose label is outside the space, are
    scored 0 with the reason."""
    a, b, c = weights.recognition, weights.reasoning, weights.cot
    triple = (a, b, c)
    reliabilities = reliabilities or {}
    concepts = space.concepts
    ok_status = AnnotationStatus.OK
    usable = [x.status == ok_status and x.label in concepts for x in annotations]  # _usable
    # Leave-one-out consensus: the weighted sum over all usable annotations, minus one's own.
    dists: list[dict[str, float] | None] = []
    total: dict[str, float] = {}
    total_weight = 0.0
    for annotation, ok in zip(annotations, usable):
        if not ok:
            dists.append(None)
            continue
        dist = _distribution(annotation, space)
        dists.append(dist)
        r = max(0.0, float(reliabilities.get(annotation.annotator_id, 1.0)))
        total_weight += r
        for k, v in dist.items():
            total[k] = total.get(k, 0.0) + r * v
    make_scores = _MAKE_SCORES
    # records of trusted values: made as validation makes them (floats, a tuple of floats, ClaimChecks)
    if not (type(a) is float and type(b) is float and type(c) is float):
        make_scores = None
    defaults = _SCORES_DEFAULTS
    weight_text, rest_text = f"{REC_CONSENSUS_WEIGHT}", f"{1 - REC_CONSENSUS_WEIGHT}"  # as S_rec's reason writes them
    fits = facts._fits
    fit_key = (space.name, None, None)
    results = []
    for annotation, ok, dist in zip(annotations, usable, dists):
        if annotation.status != ok_status:
            if annotation.status == AnnotationStatus.ABSTAINED:
                results.append(abstained_scores(annotation, triple, JUDGE_NAME))
                continue
            why = f"annotation status {annotation.status}: {annotation.reason or 'no reason given'}"
            results.append(_zero(annotation, triple, why))
            continue
        if not ok:
            results.append(_zero(annotation, triple, f"label {annotation.label!r} is not in the {space.name} "
                                                     "label space"))
            continue
        label = annotation.label
        hit = fits.get((fit_key[0], label, None))  # label_fit's memo
        fit, fit_reason = hit if hit is not None else label_fit(label, facts, space)
        r = max(0.0, float(reliabilities.get(annotation.annotator_id, 1.0)))
        others_weight = total_weight - r
        if others_weight > 1e-9:
            others = {k: v - r * dist.get(k, 0.0) for k, v in total.items()}
            top_label = max(others, key=others.__getitem__)
            agreement = max(0.0, others[label] if label in others else 0.0) / others[top_label] \
                if others[top_label] > 1e-12 else 0.0
            s_rec = REC_CONSENSUS_WEIGHT * agreement + (1 - REC_CONSENSUS_WEIGHT) * fit
            agreement_text = f"{agreement:.2f}"
            rec_reason = (f"others' weighted consensus gives {label} {others.get(label, 0.0) / others_weight:.2f} "
                          f"(top {top_label} {others[top_label] / others_weight:.2f}): agreement {agreement_text}; "
                          f"label fit {fit_reason}; S_rec = {weight_text} * {agreement_text} + "
                          f"{rest_text} * {fit:.2f}")
        else:
            s_rec = fit
            rec_reason = f"no other annotation to agree with; label fit {fit_reason}"
        checks, s_reason, reason_reason = _claims(annotation, facts)
        cited = {item.modality for item in annotation.evidence}
        s_cot, cot_reason = _cot_score(annotation.steps, label, set(cited), facts, space)
        s_rec = round(s_rec, 4)
        sufficient, sufficiency_reason = (_sufficient(label, tuple(sorted(cited)), facts, space) if sufficiency
                                          else (None, ""))
        values = {
            "annotation_id": annotation.id, "clip_id": annotation.clip_id, "annotator_id": annotation.annotator_id,
            "judge": JUDGE_NAME, "status": defaults["status"], "reason": defaults["reason"],
            "s_rec": s_rec, "s_reason": s_reason, "s_cot": s_cot, "s_final": a * s_rec + b * s_reason + c * s_cot,
            "weights": triple, "checks": checks,
            "reasons": {"s_rec": rec_reason, "s_reason": reason_reason, "s_cot": cot_reason},
            "sufficient": sufficient, "sufficiency_reason": sufficiency_reason,
            "tokens_in": defaults["tokens_in"], "tokens_out": defaults["tokens_out"], "cost_usd": defaults["cost_usd"]}
        if make_scores is not None and type(annotation.id) is str and type(annotation.clip_id) is str \
                and type(annotation.annotator_id) is str:
            results.append(make_scores(values))
        else:  # validated, from the fields given (the defaults are the model's)
            for name in ("status", "reason", "tokens_in", "tokens_out", "cost_usd"):
                del values[name]
            results.append(_JUDGE_SCORES_VALIDATOR(values))
    return results


def _judge_chunk(bounds: tuple[int, int]) -> Any:
    clips, space, weights, reliabilities, sufficiency, consume = _FORKED
    out: list[JudgeScores] = []
    with gc_paused():
        for evidence, annotations in clips[bounds[0]:bounds[1]]:
            out.extend(judge_clip(annotations, ClipFacts.from_evidence(evidence), space, weights, reliabilities,
                                  sufficiency))
        result = out if consume is None else consume(out)
        del out
        if _IN_WORKER:
            # What outlives the chunk in a worker is the judge's memos (and the result on its way
            # out), none of it cyclic: keep the collector from re-walking it after every chunk.
            gc.freeze()
    return result


def _start_worker() -> None:
    """Pool initializer: the inherited objects are the parent's; freezing them keeps the
    collector from walking (and copying, page by page) them in the child."""
    global _IN_WORKER
    _IN_WORKER = True
    gc.freeze()


_IN_WORKER = False
_FORKED: tuple = ()


def judge_many(clips: Sequence[tuple[ClipEvidence, Sequence[Annotation]]], space: LabelSpace, weights: JudgeWeights,
               reliabilities: Mapping[str, float] | None = None, sufficiency: bool = True, workers: int = 1,
               chunk_clips: int = 2000, consume: Callable[[list[JudgeScores]], Any] | None = None) -> list[Any]:
    """`judge_clip` over many (evidence, annotations) pairs, in order: ClipFacts per clip.
    workers > 1 forks that many processes (POSIX fork: the inputs are inherited, not
    pickled), each judging chunks of `chunk_clips` clips.

    Without `consume` the JudgeScores come back, in order (pickled from the workers). With
    it, `consume(records)` is called on each chunk's records in the process that made them
    (a worker when forked: persist them there, or reduce them to what the caller needs) and
    its results come back instead, one per chunk, in order."""
    global _FORKED
    import multiprocessing

    n = len(clips)
    _FORKED = (clips, space, weights, reliabilities, sufficiency, consume)
    try:
        if workers <= 1 or n <= chunk_clips or "fork" not in multiprocessing.get_all_start_methods():
            bounds = [(i, min(i + chunk_clips, n)) for i in range(0, n, chunk_clips)] if consume is not None \
                else [(0, n)]
            parts = [_judge_chunk(b) for b in bounds]
        else:
            with multiprocessing.get_context("fork").Pool(workers, initializer=_start_worker) as pool:
                parts = pool.map(_judge_chunk, [(i, min(i + chunk_clips, n)) for i in range(0, n, chunk_clips)],
                                 chunksize=1)
    finally:
        _FORKED = ()
    return parts if consume is not None else [s for part in parts for s in part]
