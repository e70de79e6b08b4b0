"""The material speaker diarization is fitted and measured on, split once, used by both
benchmarks/diarization_bench.py and tests/test_diarization.py so the two cannot drift.

Recordings with reference turns (tests/data):
  AMI debug dev00, dev01, tst00 (30 s meeting excerpts, RTTM + UEM of pyannote-audio's
  debug protocol; tst00 is half overlapped speech), pyAudioAnalysis diarizationExample
  (4 speakers) and diarizationExample2 (6 speakers, turns of ~3.5 s), whisper's jfk.flac
  (one speaker; its speech extents are the VAD's, since only the speaker count is in
  question).
Constructed two-speaker conversations: real voices from ../shared/data/labelled/audio, read
  in place and never copied (the corpora's licences forbid redistribution). Each utterance
  is cut to its speech (first to last VAD segment) and brought to one level; turns of
  0.4-7 s (log-uniform) alternate between the two actors, a turn filled with the speaker's
  utterances (0.1-0.3 s pauses) and the last one cut to length at a random offset; a
  quarter of the changes overlap by 0.2-0.8 s, the rest leave 0.1-0.7 s of silence; every
  turn gets a gain of ±3 dB. The truth is each placed piece of speech with its actor.
  Seeded: the same seed gives the same signal and truth. These are acted emotional
  utterances (RAVDESS: 7 emotions at two intensities, two sentences; EMOVO: Italian,
  7 emotions), so each voice varies more than in an ordinary call: harder than a phone call
  for the speaker count.
One-speaker monologues: all of one actor's utterances in a seeded order with 0.1-0.7 s
  pauses, the same construction; the case where an emotional voice must not be split.

FIT: AMI dev00, diarizationExample, and EMOVO (its 6 actors: 9 conversations, 3
  female/female, 3 male/male, 3 mixed; 6 monologues).
HELD_OUT (never used to choose anything): AMI dev01 and tst00, diarizationExample2,
  jfk.flac, and RAVDESS (18 of its actors in 9 conversations, 3 female/female, 3 male/male,
  3 mixed; 5 other actors in monologues).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from merforge.preprocess.media import AUDIO_RATE
from merforge.storage.records import SpeakerTurn

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
LABELLED = ROOT.parent / "shared" / "data" / "labelled"

UTTERANCE_DBFS = -26.0
TURN_SECONDS = (0.4, 7.0)
TURNS = 16
OVERLAP_SHARE = 0.25
OVERLAP_SECONDS = (0.2, 0.8)
GAP_SECONDS = (0.1, 0.7)
PAUSE_SECONDS = (0.1, 0.3)  # between utterances inside one turn
GAIN_DB = 3.0


@dataclass
class DiarizationCase:
    """One signal with its reference turns. `kind`: "recording" (real multi-speaker),
    "conversation" (constructed, two speakers) or "one speaker". `uem`: the scored region
    (seconds), None for the extent of reference and hypothesis. `speech`: its speech
    regions when known (excerpts), else the VAD's. `speakers`: reference speakers with more
    than 0.2 s of speech."""

    name: str
    kind: str
    samples: np.ndarray
    reference: list[SpeakerTurn]
    uem: tuple[float, float] | None = None
    speech: list[tuple[float, float]] | None = None
    speakers: int = field(init=False)

    def __post_init__(self):
        spoken: dict[str, float] = {}
        for turn in self.reference:
            spoken[turn.speaker] = spoken.get(turn.speaker, 0.0) + turn.end - turn.start
        self.speakers = sum(seconds > 0.2 for seconds in spoken.values())


# -- reference readers -------------------------------------------------------------------


def read_rttm(path: Path) -> dict[str, list[SpeakerTurn]]:
    """NIST RTTM SPEAKER lines: file id -> turns."""
    turns: dict[str, list[SpeakerTurn]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            turns.setdefault(fields[1], []).append(SpeakerTurn(start=start, end=start + duration, speaker=fields[7]))
    return turns


def read_uem(path: Path) -> dict[str, tuple[float, float]]:
    """UEM lines (file channel start end): file id -> scored region in seconds."""
    regions = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if fields:
            regions[fields[0]] = (float(fields[2]), float(fields[3]))
    return regions


def read_segments(path: Path) -> list[SpeakerTurn]:
    """pyAudioAnalysis .segments: "start<TAB>end<TAB>speaker" per line, seconds."""
    turns = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) == 3:
            turns.append(SpeakerTurn(start=float(fields[0]), end=float(fields[1]), speaker=fields[2]))
    return turns


def vad_regions(samples: np.ndarray) -> list[tuple[float, float]]:
    """The pipeline's own speech regions (silero-vad, default settings), seconds."""
    from merforge.preprocess.vad import speech_segments
    from merforge.storage.config import VadConfig

    return [(s.start, s.end) for s in speech_segments(samples, VadConfig())]


# -- recordings --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _ami_truth() -> tuple[dict[str, list[SpeakerTurn]], dict[str, tuple[float, float]]]:
    folder = DATA / "ami_debug"
    reference = {**read_rttm(folder / "debug.development.rttm"), **read_rttm(folder / "debug.test.rttm")}
    uem = {**read_uem(folder / "debug.development.uem"), **read_uem(folder / "debug.test.uem")}
    return reference, uem


def recording(name: str) -> DiarizationCase:
    """A real file of tests/data by name: dev00, dev01, tst00, diarizationExample,
    diarizationExample2 or jfk."""
    from merforge.preprocess.prosody import load_audio

    if name.startswith(("dev", "tst")):
        reference, uem = _ami_truth()
        return DiarizationCase(name, "recording", load_audio(DATA / "ami_debug" / f"{name}.wav"), reference[name],
                               uem[name])
    if name == "jfk":
        samples = load_audio(DATA / "whisper" / "jfk.flac")
        truth = [SpeakerTurn(start=s, end=e, speaker="JFK") for s, e in vad_regions(samples)]
        return DiarizationCase(name, "one speaker", samples, truth)
    folder = DATA / "pyaudioanalysis"
    return DiarizationCase(name, "recording", load_audio(folder / f"{name}.wav"), read_segments(folder / f"{name}.segments"))


# -- constructed conversations -----------------------------------------------------------


def labelled_available() -> bool:
    return (LABELLED / "audio" / "ravdess" / "labels.csv").exists() and (LABELLED / "audio" / "emovo" / "labels.csv").exists()


@lru_cache(maxsize=2)
def _rows(corpus: str) -> dict[str, list[str]]:
    """speaker id -> its wav paths (relative to LABELLED), sorted."""
    with open(LABELLED / "audio" / corpus / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_speaker: dict[str, list[str]] = {}
    for row in rows:
        by_speaker.setdefault(row["speaker_id"], []).append(row["path"])
    return {speaker: sorted(paths) for speaker, paths in by_speaker.items()}


@lru_cache(maxsize=64)
def _utterances(speaker: str) -> tuple[np.ndarray, ...]:
    """The speaker's utterances cut to their speech, each at UTTERANCE_DBFS."""
    from merforge.preprocess.prosody import load_audio

    corpus = speaker.split("_")[0]
    utterances = []
    for path in _rows(corpus)[speaker]:
        samples = load_audio(LABELLED / path)
        speech = vad_regions(samples)
        if not speech:
            continue
        piece = samples[int(speech[0][0] * AUDIO_RATE): int(speech[-1][1] * AUDIO_RATE)].astype(np.float64)
        piece *= 10 ** (UTTERANCE_DBFS / 20) / max(1e-9, float(np.sqrt(np.mean(piece**2))))
        utterances.append(piece.astype(np.float32))
    return tuple(utterances)


def _place(out: list[np.ndarray], start: float, piece: np.ndarray) -> None:
    out.append((int(round(start * AUDIO_RATE)), piece))


def _mix(placed: list[tuple[int, np.ndarray]], tail: float = 0.3) -> np.ndarray:
    length = max(a + p.size for a, p in placed) + int(tail * AUDIO_RATE)
    signal = np.zeros(length, dtype=np.float32)
    for a, piece in placed:
        signal[a: a + piece.size] += piece
    return signal


def conversation(speaker_a: str, speaker_b: str, seed: int, turns: int = TURNS) -> tuple[np.ndarray, list[SpeakerTurn]]:
    """A two-speaker conversation of two actors (speaker ids of labels.csv, e.g.
    "ravdess_actor02"): 16 kHz float32 samples and the truth (one turn per piece of speech,
    named by speaker id; overlapping turns overlap). See the module docstring."""
    rng = np.random.default_rng(seed)
    pools = [_utterances(s) for s in (speaker_a, speaker_b)]
    orders = [list(rng.permutation(len(pool))) for pool in pools]
    used = [0, 0]
    lengths = np.exp(rng.uniform(np.log(TURN_SECONDS[0]), np.log(TURN_SECONDS[1]), size=turns))
    who = int(rng.integers(2))
    placed: list[tuple[int, np.ndarray]] = []
    truth: list[SpeakerTurn] = []
    start = 0.3
    for length in lengths:
        gain = 10 ** (rng.uniform(-GAIN_DB, GAIN_DB) / 20)
        position = start
        while position - start < length - 0.3:
            pool, order = pools[who], orders[who]
            piece = pool[order[used[who] % len(pool)]]
            used[who] += 1
            room = length - (position - start)
            if piece.size / AUDIO_RATE > room:
                size = int(room * AUDIO_RATE)
                offset = int(rng.integers(0, piece.size - size + 1))
                piece = piece[offset: offset + size]
            _place(placed, position, piece * gain)
            end = position + piece.size / AUDIO_RATE
            truth.append(SpeakerTurn(start=round(position, 3), end=round(end, 3), speaker=(speaker_a, speaker_b)[who]))
            position = end + float(rng.uniform(*PAUSE_SECONDS))
        last = truth[-1]
        if rng.random() < OVERLAP_SHARE:
            start = max(last.start + 0.2, last.end - float(rng.uniform(*OVERLAP_SECONDS)))
        else:
            start = last.end + float(rng.uniform(*GAP_SECONDS))
        who = 1 - who
    return _mix(placed), truth


def monologue(speaker: str, seed: int) -> tuple[np.ndarray, list[SpeakerTurn]]:
    """All of one actor's utterances in a seeded order, 0.1-0.7 s apart, ±3 dB each:
    samples and the truth (one turn per utterance)."""
    rng = np.random.default_rng(seed)
    pool = _utterances(speaker)
    placed: list[tuple[int, np.ndarray]] = []
    truth: list[SpeakerTurn] = []
    position = 0.3
    for index in rng.permutation(len(pool)):
        piece = pool[index] * 10 ** (rng.uniform(-GAIN_DB, GAIN_DB) / 20)
        _place(placed, position, piece)
        end = position + piece.size / AUDIO_RATE
        truth.append(SpeakerTurn(start=round(position, 3), end=round(end, 3), speaker=speaker))
        position = end + float(rng.uniform(*GAP_SECONDS))
    return _mix(placed), truth


# -- the split ---------------------------------------------------------------------------

FIT_RECORDINGS = ("dev00", "diarizationExample")
FIT_CONVERSATIONS = (
    ("emovo_f1", "emovo_f2"), ("emovo_f2", "emovo_f3"), ("emovo_f1", "emovo_f3"),
    ("emovo_m1", "emovo_m2"), ("emovo_m2", "emovo_m3"), ("emovo_m1", "emovo_m3"),
    ("emovo_f1", "emovo_m2"), ("emovo_f2", "emovo_m3"), ("emovo_f3", "emovo_m1"),
)
FIT_MONOLOGUES = ("emovo_f1", "emovo_f2", "emovo_f3", "emovo_m1", "emovo_m2", "emovo_m3")

HELD_OUT_RECORDINGS = ("dev01", "tst00", "diarizationExample2", "jfk")
HELD_OUT_CONVERSATIONS = (
    ("ravdess_actor02", "ravdess_actor04"), ("ravdess_actor06", "ravdess_actor08"),
    ("ravdess_actor10", "ravdess_actor12"),  # female / female
    ("ravdess_actor01", "ravdess_actor03"), ("ravdess_actor05", "ravdess_actor07"),
    ("ravdess_actor09", "ravdess_actor11"),  # male / male
    ("ravdess_actor14", "ravdess_actor13"), ("ravdess_actor16", "ravdess_actor15"),
    ("ravdess_actor18", "ravdess_actor17"),  # female / male
)
HELD_OUT_MONOLOGUES = ("ravdess_actor20", "ravdess_actor22", "ravdess_actor24", "ravdess_actor21", "ravdess_actor23")
FIT_SEED, HELD_OUT_SEED = 100, 0  # conversation i of a set is built with seed + i


def _short(speaker: str) -> str:
    return speaker.replace("ravdess_actor", "rav").replace("emovo_", "emo_")


def cases(which: str, constructed: bool = True) -> Iterator[DiarizationCase]:
    """The cases of "fit" or "held_out", recordings first; `constructed` False (or the
    labelled set absent) leaves out the conversations and monologues."""
    recordings, pairs, solos, seed = (
        (FIT_RECORDINGS, FIT_CONVERSATIONS, FIT_MONOLOGUES, FIT_SEED) if which == "fit"
        else (HELD_OUT_RECORDINGS, HELD_OUT_CONVERSATIONS, HELD_OUT_MONOLOGUES, HELD_OUT_SEED))
    for name in recordings:
        yield recording(name)
    if not (constructed and labelled_available()):
        return
    for index, (a, b) in enumerate(pairs):
        samples, truth = conversation(a, b, seed + index)
        yield DiarizationCase(f"{_short(a)}+{_short(b)}", "conversation", samples, truth)
    for index, speaker in enumerate(solos):
        samples, truth = monologue(speaker, seed + 50 + index)
        yield DiarizationCase(_short(speaker), "one speaker", samples, truth)


def excerpts(case: DiarizationCase, speech: list[tuple[float, float]], seconds: float,
             count: int = 4) -> list[DiarizationCase]:
    """Up to `count` excerpts of `case` holding `seconds` of its speech (`speech`: its VAD
    regions), each starting where a region starts, evenly spread over the case; the last
    region is cut so the excerpt holds exactly that much speech. Each excerpt is a case of
    its own (times from its start, reference and speech clipped to it); its kind is "one
    speaker" when only one reference speaker talks in it for more than 0.2 s."""
    if case.uem:
        speech = [(max(s, case.uem[0]), min(e, case.uem[1])) for s, e in speech if min(e, case.uem[1]) > max(s, case.uem[0])]
    spans = []
    for first in range(len(speech)):
        held, end = 0.0, None
        for s, e in speech[first:]:
            take = min(e - s, seconds - held)
            held += take
            if held >= seconds - 1e-6:
                end = s + take
                break
        if end is None:
            break
        spans.append((speech[first][0], end))
    if len(spans) > count:
        spans = [spans[i] for i in np.linspace(0, len(spans) - 1, count).round().astype(int)]
    out = []
    for index, (start, end) in enumerate(spans):
        reference = [SpeakerTurn(start=round(max(t.start, start) - start, 3), end=round(min(t.end, end) - start, 3),
                                 speaker=t.speaker) for t in case.reference if min(t.end, end) > max(t.start, start)]
        inside = [(max(s, start) - start, min(e, end) - start) for s, e in speech if min(e, end) > max(s, start)]
        samples = case.samples[int(round(start * AUDIO_RATE)): int(round(end * AUDIO_RATE))]
        excerpt = DiarizationCase(f"{case.name}@{seconds:g}s#{index + 1}", case.kind, samples, reference,
                                  (0.0, round(end - start, 3)), inside)
        if excerpt.speakers < 2:
            excerpt.kind = "one speaker"
        out.append(excerpt)
    return out
