"""Speaker diarization measured on what its constants were not fitted on.

The cases and their split come from benchmarks/diarization_sets.py, shared with
benchmarks/diarization_bench.py (which fits SPEAKER_MERGE_DISTANCE and MIN_SPEECH_SECONDS):
FIT = AMI debug dev00, pyAudioAnalysis diarizationExample and EMOVO conversations and
monologues; HELD_OUT = AMI dev01 and tst00, diarizationExample2, jfk.flac and RAVDESS
conversations and monologues (../shared/data/labelled, read in place; those tests skip
without it). AMI debug files: 30 s excerpts of the AMI Meeting Corpus (CC BY 4.0) with
the RTTM/UEM of pyannote-audio's debug protocol (MIT). The pipeline's own VAD feeds the
diarizer, as in production. Bounds: the held-out measurement plus a stated margin; DER
with a 0.25 s collar (total), overlap scored.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from diarization_sets import (  # noqa: E402
    HELD_OUT_CONVERSATIONS,
    HELD_OUT_MONOLOGUES,
    cases,
    conversation,
    labelled_available,
    recording,
    vad_regions,
)

from merforge.preprocess import diarization  # noqa: E402
from merforge.preprocess.diarization import (  # noqa: E402
    DiarizationBackendError,
    diarization_error_rate,
    diarize,
    diarize_speech,
    turns_from_annotation,
)
from merforge.preprocess.prosody import load_audio  # noqa: E402
from merforge.storage.config import DiarizationConfig  # noqa: E402
from merforge.storage.records import SpeakerTurn  # noqa: E402

needs_labelled = pytest.mark.skipif(not labelled_available(), reason="../shared/data/labelled is not there "
                                    "(RAVDESS and EMOVO are read in place, never copied)")


@pytest.fixture
def embedding_calls(monkeypatch):
    """Counts calls of speaker_embeddings (each call embeds a whole signal's windows)."""
    calls = []
    real = diarization.speaker_embeddings

    def counting(samples, spans):
        calls.append(len(spans))
        return real(samples, spans)

    monkeypatch.setattr(diarization, "speaker_embeddings", counting)
    return calls


def der_of(case, result) -> float:
    return diarization_error_rate(case.reference, result.turns, uem=case.uem, collar=0.25)


def test_ami_debug_der():
    """AMI debug, as the stage runs it. Held out: dev01 0.43 (the VAD finds 12.8 s of
    speech, under MIN_SPEECH_SECONDS, so it is all S1; diarized anyway its two speakers,
    0.10 apart, would be merged too; the old criterion tuned on this very file had 0.23),
    tst00 0.73 (half overlapped speech, which one speaker at a time cannot score well on;
    old 0.75). dev00 is in the fitting set: 0.49 (its speakers are merged). Bounds:
    measured + 0.12."""
    ders = {}
    for name in ("dev00", "dev01", "tst00"):
        case = recording(name)
        result = diarize_speech(case.samples, vad_regions(case.samples), DiarizationConfig())
        assert (result.skipped_reason != "") == (name == "dev01"), result.skipped_reason
        ders[name] = der_of(case, result)
        speakers = {t.speaker for t in result.turns}
        print(f"{name}: DER {ders[name]:.3f}, {len(speakers)} speakers (reference {case.speakers})")
        assert speakers == {f"S{i + 1}" for i in range(len(speakers))}
        assert all(t.end > t.start for t in result.turns)
        assert all(a.end <= b.start + 1e-9 for a, b in zip(result.turns, result.turns[1:]))  # one at a time
    assert ders["dev01"] <= 0.55 and ders["tst00"] <= 0.85
    assert ders["dev00"] <= 0.61


@pytest.mark.parametrize("name, speakers", [("diarizationExample", 4), ("diarizationExample2", 6)])
def test_speaker_count_and_der_on_turn_taking(name, speakers):
    """Clean turn-taking. diarizationExample2 is held out: 5 of 6 speakers (each talks
    ~3.5 s), DER 0.17; diarizationExample is in the fitting set: 3 of 4, DER 0.19. With
    the count given: DER 0.17 and 0.03. Bounds: count within 1, DER <= 0.30."""
    case = recording(name)
    speech = vad_regions(case.samples)
    estimated = diarize_speech(case.samples, speech, DiarizationConfig()).turns
    given = diarize_speech(case.samples, speech, DiarizationConfig(num_speakers=speakers)).turns
    count = len({t.speaker for t in estimated})
    der_estimated = diarization_error_rate(case.reference, estimated)
    der_given = diarization_error_rate(case.reference, given)
    print(f"{name}: {count} speakers estimated (truth {speakers}), DER {der_estimated:.3f}; "
          f"given the count: DER {der_given:.3f}")
    assert abs(count - speakers) <= 1
    assert len({t.speaker for t in given}) == speakers
    assert der_estimated <= 0.30 and der_given <= 0.30


@needs_labelled
def test_held_out_conversations_and_monologues():
    """RAVDESS, held out from all fitting: 9 two-speaker conversations (turns of 0.4-7 s,
    a quarter of the changes overlapping) and 5 one-speaker monologues of acted emotional
    speech. Measured: conversations mean DER 0.30 (the replaced criterion: 0.62), mixed
    gender 0.03 / 0.04 / 0.10 with both speakers found; monologues mean 0.07 (0.42), 4 of
    5 found as one speaker. Same-gender pairs are often found as one speaker (DER ~0.46):
    their d-vectors lie as close as one actor's angry and sad voices. Bounds: conversations
    <= 0.40, mixed <= 0.20 each with 2 speakers, monologues <= 0.15 with >= 4 of 5 as one."""
    built = [c for c in cases("held_out") if c.kind != "recording" and c.name != "jfk"]
    assert len(built) == len(HELD_OUT_CONVERSATIONS) + len(HELD_OUT_MONOLOGUES)
    results = {c.name: diarize_speech(c.samples, vad_regions(c.samples), DiarizationConfig()) for c in built}
    ders = {c.name: der_of(c, results[c.name]) for c in built}
    found = {c.name: len({t.speaker for t in results[c.name].turns}) for c in built}
    for c in built:
        print(f"{c.name:14s} {c.kind:13s} {found[c.name]} speakers (truth {c.speakers}), DER {ders[c.name]:.3f}")
    talks = [c.name for c in built if c.kind == "conversation"]
    solos = [c.name for c in built if c.kind == "one speaker"]
    assert np.mean([ders[n] for n in talks]) <= 0.40
    for name in talks[-3:]:  # female / male
        assert found[name] == 2 and ders[name] <= 0.20
    assert np.mean([ders[n] for n in solos]) <= 0.15
    assert sum(found[n] == 1 for n in solos) >= 4


@needs_labelled
def test_constructed_conversations_are_reproducible_with_known_truth():
    a, b = HELD_OUT_CONVERSATIONS[0]
    samples, truth = conversation(a, b, seed=3)
    again, truth_again = conversation(a, b, seed=3)
    other, _ = conversation(a, b, seed=4)
    assert np.array_equal(samples, again) and truth == truth_again
    assert other.size != samples.size or not np.array_equal(other, samples)
    assert {t.speaker for t in truth} == {a, b}
    assert samples.size / 16000 >= max(t.end for t in truth)
    overlapping = sum(x.speaker != y.speaker and y.start < x.end for x, y in zip(truth, truth[1:]))
    assert overlapping >= 1  # some changes overlap
    assert all(0.0 < t.end - t.start <= 7.0 + 1e-6 for t in truth)


def test_too_little_speech_is_one_speaker_with_the_reason(data, embedding_calls):
    """Below MIN_SPEECH_SECONDS (16 s; benchmarks/diarization_bench.py: on excerpts with
    4-12 s of speech diarizing split one voice more than it found a second) nothing is
    embedded; every speech region is an S1 turn and the reason is plain words."""
    samples = load_audio(data / "whisper" / "jfk.flac")
    speech = vad_regions(samples)
    result = diarize_speech(samples, speech, DiarizationConfig())
    total = sum(e - s for s, e in speech)
    assert total < diarization.MIN_SPEECH_SECONDS
    assert result.skipped_reason == (f"{total:.1f} s of speech in {len(speech)} voiced segments: too little to "
                                     "tell speakers apart (diarization needs 16 s); all speech is S1")
    assert [(t.start, t.end) for t in result.turns] == [(round(s, 3), round(e, 3)) for s, e in speech]
    assert {t.speaker for t in result.turns} == {"S1"}
    one = diarize_speech(samples, [(0.3, 2.1)], DiarizationConfig())
    assert one.skipped_reason.startswith("1.8 s of speech in one voiced segment: too little")
    assert diarize_speech(samples, [], DiarizationConfig()) == diarization.DiarizationResult([], "no speech")
    assert diarize_speech(samples, speech, DiarizationConfig(num_speakers=1)).skipped_reason.startswith(
        "diarization.num_speakers = 1")
    assert embedding_calls == []
    # A count given by the user is honoured, however short the speech.
    given = diarize_speech(samples, speech, DiarizationConfig(num_speakers=2))
    assert given.skipped_reason == "" and len(embedding_calls) == 1


def test_enough_speech_is_embedded_once(embedding_calls):
    case = recording("dev00")
    result = diarize_speech(case.samples, vad_regions(case.samples), DiarizationConfig())
    assert result.skipped_reason == "" and result.turns
    assert len(embedding_calls) == 1 and embedding_calls[0] > 20


def test_speaker_distance_does_not_grow_as_clusters_shrink():
    """Real d-vectors of diarizationExample. Two random 3-window halves of one speaker's
    windows: `speaker_distance` ~0 (measured -0.004..0.009), while the plain cosine
    distance of the two means is 0.07-0.11 (the bias that split short one-speaker speech);
    two different speakers: 0.21-0.39."""
    case = recording("diarizationExample")
    spans, vectors = diarization.speaker_windows(case.samples, vad_regions(case.samples), 1.5, 0.75)
    windows = {name: [i for i, (s, e) in enumerate(spans)
                      if any(t.speaker == name and t.start <= s and e <= t.end for t in case.reference)]
               for name in sorted({t.speaker for t in case.reference})}
    rng = np.random.default_rng(0)
    for name, members in windows.items():
        corrected, plain = [], []
        for _ in range(30):
            picked = rng.permutation(members)
            a, b = vectors[picked[:3]], vectors[picked[3:6]]
            corrected.append(diarization.speaker_distance(a.sum(0, dtype=float), 3, b.sum(0, dtype=float), 3))
            mean_a, mean_b = a.mean(0), b.mean(0)
            plain.append(1 - mean_a @ mean_b / np.linalg.norm(mean_a) / np.linalg.norm(mean_b))
        assert abs(np.mean(corrected)) < 0.03 and np.mean(plain) > 0.05, name
    names = list(windows)
    for x, first in enumerate(names):
        for second in names[x + 1:]:
            a, b = vectors[windows[first]], vectors[windows[second]]
            assert diarization.speaker_distance(a.sum(0, dtype=float), len(a), b.sum(0, dtype=float), len(b)) > 0.2


def test_eigengap_count_and_merging_on_separated_voices():
    """Three groups of non-negative unit vectors (d-vectors are ReLU outputs) around
    distinct directions: the eigengap finds 3; merging at a distance larger than theirs
    leaves one; two groups drawn from one direction are merged back into one speaker."""
    rng = np.random.default_rng(1)
    centres = np.abs(rng.normal(size=(3, 256)))
    vectors = np.concatenate([np.abs(c + rng.normal(scale=0.4, size=(15, 256))) for c in centres])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert diarization.estimate_speaker_count(vectors, 8) == 3
    labels = diarization.cluster_embeddings(vectors, 0, 8)
    assert sorted(np.bincount(labels)) == [15, 15, 15]
    assert set(diarization.cluster_embeddings(vectors, 0, 8, merge_distance=1.01)) == {0}
    split = np.repeat([0, 1, 2, 3], [15, 15, 8, 7])  # the third voice cut in two
    merged = diarization.merge_close_speakers(vectors, split, diarization.SPEAKER_MERGE_DISTANCE)
    assert list(merged) == [0] * 15 + [1] * 15 + [2] * 15


def test_labels_hold_across_the_clips_of_a_source(tmp_path, data, embedding_calls):
    """The stage diarizes a source once: diarizationExample (42 s, 4 speakers taking turns)
    is cut into several clips, embedded once, and every clip's turns are the source's turns
    cut to the clip, so a speaker keeps its label in every clip; words carry those labels.
    jfk.flac (8 s of speech) is not diarized: its words are S1, the reason in provenance."""
    from merforge.preprocess.features import preprocess_sources
    from merforge.preprocess.ingest import ingest
    from merforge.preprocess.media import read_wav
    from merforge.preprocess.sampling import sample_sources
    from merforge.storage.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws")
    try:
        ingest(ws, [data / "pyaudioanalysis" / "diarizationExample.wav", data / "whisper" / "jfk.flac"])
        sample_sources(ws)
        assert preprocess_sources(ws).count("failed") == 0
        (talk,) = [s for s in ws.store.sources() if s.path.endswith("diarizationExample.wav")]
        (jfk,) = [s for s in ws.store.sources() if s.path.endswith("jfk.flac")]
        assert len(embedding_calls) == 1  # one source with enough speech, embedded once

        clips = [c for c in ws.store.clips(talk.id) if ws.store.get_features(c.id).speaker_turns]
        assert len(clips) >= 3
        speech = ws.store.get_status(talk.id, "sample").details["speech"]
        source_turns = diarize_speech(read_wav(ws.audio_cache_path(talk.id)), speech, ws.config.diarization).turns
        reference = recording("diarizationExample").reference
        label_time: dict[str, dict[str, float]] = {}
        for clip in clips:
            features = ws.store.get_features(clip.id)
            for turn in features.speaker_turns:
                assert any(t.speaker == turn.speaker and t.start - 1e-3 <= turn.start and turn.end <= t.end + 1e-3
                           for t in source_turns)
                for truth in reference:
                    overlap = min(turn.end, truth.end) - max(turn.start, truth.start)
                    if overlap > 0:
                        spoken = label_time.setdefault(truth.speaker, {})
                        spoken[turn.speaker] = spoken.get(turn.speaker, 0.0) + overlap
            assert {w.speaker for w in features.transcript.words} <= {t.speaker for t in features.speaker_turns}
        labels = {label for spoken in label_time.values() for label in spoken}
        assert len(labels) >= 2
        for name, spoken in label_time.items():  # each true speaker keeps one label across clips
            assert max(spoken.values()) >= 0.8 * sum(spoken.values()), (name, spoken)

        for clip in ws.store.clips(jfk.id):
            features = ws.store.get_features(clip.id)
            assert {w.speaker for w in features.transcript.words} <= {"S1"}
            note = features.provenance["diarization"].note
            assert "too little to tell speakers apart" in note and features.provenance["diarization"].model == ""
    finally:
        ws.close()


def test_no_speech_gives_no_turns():
    silence = np.zeros(16000 * 2, dtype=np.float32)
    assert diarize(silence, [], DiarizationConfig()) == []
    assert diarize(np.zeros(0, dtype=np.float32), [(0.0, 1.0)], DiarizationConfig()) == []


def test_short_speech_is_one_speaker(data):
    samples = load_audio(data / "whisper" / "jfk.flac")[:16000 * 2]
    turns = diarize(samples, [(0.3, 0.7)], DiarizationConfig())
    assert [t.speaker for t in turns] == ["S1"]
    assert turns[0].start == pytest.approx(0.3) and turns[0].end == pytest.approx(0.7)


def test_pyannote_backend_missing_is_actionable():
    config = DiarizationConfig(backend="pyannote", pyannote_model="pyannote/speaker-diarization-community-1")
    with pytest.raises(DiarizationBackendError, match="pyannote.audio is not installed.*torch 2.14.1.*resemblyzer"):
        diarize(np.zeros(16000, dtype=np.float32), [], config)
    with pytest.raises(DiarizationBackendError, match="pyannote.audio is not installed"):
        diarize_speech(np.zeros(16000, dtype=np.float32), [(0.0, 0.5)], config)  # no skip rule for pyannote


def test_pyannote_backend_without_model_is_actionable():
    with pytest.raises(DiarizationBackendError, match="diarization.pyannote_model"):
        diarize(np.zeros(16000, dtype=np.float32), [], DiarizationConfig(backend="pyannote"))


def test_turns_from_pyannote_annotation():
    from pyannote.core import Annotation, Segment

    annotation = Annotation(uri="meeting")
    annotation[Segment(5.0, 7.5), "a"] = "SPEAKER_01"
    annotation[Segment(0.5, 4.0), "b"] = "SPEAKER_00"
    annotation[Segment(7.0, 9.0), "c"] = "SPEAKER_00"  # overlaps the previous turn
    turns = turns_from_annotation(annotation)
    assert turns == [
        SpeakerTurn(start=0.5, end=4.0, speaker="S1"),
        SpeakerTurn(start=5.0, end=7.5, speaker="S2"),
        SpeakerTurn(start=7.0, end=9.0, speaker="S1"),
    ]


def test_der_of_identical_and_swapped_labels():
    reference = [SpeakerTurn(start=0, end=5, speaker="A"), SpeakerTurn(start=5, end=10, speaker="B")]
    renamed = [SpeakerTurn(start=0, end=5, speaker="S2"), SpeakerTurn(start=5, end=10, speaker="S1")]
    assert diarization_error_rate(reference, renamed) == pytest.approx(0.0)
    one_speaker = [SpeakerTurn(start=0, end=10, speaker="S1")]
    assert diarization_error_rate(reference, one_speaker, collar=0.0) == pytest.approx(0.5)
    assert diarization_error_rate(reference, [], uem=(0.0, 10.0)) == pytest.approx(1.0)
