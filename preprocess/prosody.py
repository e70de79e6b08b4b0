"""Prosody of speech: pitch, loudness, voice quality, pauses and rate.

- `prosody_track`: F0 (Hz, NaN where unvoiced) and intensity (dB) every 10 ms, computed
  ONCE per source or clip with Praat through praat-parselmouth (Jadoul, Thompson &
  de Boer, "Introducing Parselmouth", J. Phonetics 2018). F0 is Praat's autocorrelation
  pitch (Boersma, "Accurate short-term analysis of the fundamental frequency and the
  harmonics-to-noise ratio of a sampled sound", IFA Proceedings 17, 1993); intensity is
  Praat's, in dB re 2e-5 with samples taken as pascals. The aligned 10 Hz timeline
  samples this track.
- `prosody_stats`: a `ProsodyStats` per span: F0 mean/sd/5-95 % range/slope, intensity
  mean/sd, jitter (local) and shimmer (local) from Praat's periodic point process, HNR
  (cross-correlation harmonicity, Boersma 1993), voiced fraction, pauses, speech rate in
  words/s (from ASR words) and syllable nuclei/s after de Jong & Wempe, "Praat script to
  detect syllable nuclei and measure speech rate automatically", Behavior Research
  Methods 41(2), 2009, and the 88 openSMILE eGeMAPSv02 functionals (Eyben et al., "The
  Geneva Minimalistic Acoustic Parameter Set (GeMAPS)", IEEE Trans. Affective Computing
  7(2), 2016).
- `word_prosody`: mean F0 and intensity per recognised word, from the track.

Silence, too-short and all-unvoiced input never raise: the affected fields are None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from merforge.errors import MerforgeError
from merforge.preprocess.media import AUDIO_RATE, decode_once
from merforge.storage.config import ProsodyConfig
from merforge.storage.records import ProsodyStats, Word

HOP = 0.01  # seconds between track frames
# Praat's intensity analysis needs 6.4 periods of the lowest pitch (0.085 s at 75 Hz);
# shorter input gets an empty track instead of a PraatError.
INTENSITY_PERIODS = 6.4
# de Jong & Wempe 2009: silence is 25 dB below the 0.99 quantile of intensity, and a
# syllable nucleus is a peak that stands 2 dB above the dip before the next peak.
SILENCE_DB = 25.0
NUCLEUS_DIP_DB = 2.0
# Jitter/shimmer arguments as in Praat's voice report: shortest and longest period (s),
# maximum period factor, maximum amplitude factor.
PERIOD_FLOOR, PERIOD_CEILING, PERIOD_FACTOR, AMPLITUDE_FACTOR = 0.0001, 0.02, 1.3, 1.6


class ProsodyError(MerforgeError):
    """Prosodic analysis could not run (a missing or broken analysis library)."""


@dataclass(frozen=True)
class ProsodyTrack:
    """Frame-wise prosody, one frame per 10 ms.

    times: frame centres in seconds (source time, i.e. including `offset`);
    f0: Hz, NaN where unvoiced; intensity: dB (Praat, re 2e-5), NaN outside the analysis.
    """

    times: np.ndarray
    f0: np.ndarray
    intensity: np.ndarray

    @property
    def voiced(self) -> np.ndarray:
        return np.isfinite(self.f0)

    def window(self, start: float, end: float) -> "ProsodyTrack":
        """Frames whose centre lies in [start, end) seconds."""
        keep = (self.times >= start) & (self.times < end)
        return ProsodyTrack(self.times[keep], self.f0[keep], self.intensity[keep])

    @classmethod
    def empty(cls) -> "ProsodyTrack":
        nothing = np.zeros(0, dtype=np.float64)
        return cls(nothing, nothing, nothing)


def _sound(samples: np.ndarray):
    import parselmouth

    return parselmouth.Sound(np.asarray(samples, dtype=np.float64), sampling_frequency=AUDIO_RATE)


def _analysable(samples: np.ndarray, config: ProsodyConfig) -> bool:
    return samples.size / AUDIO_RATE >= INTENSITY_PERIODS / config.f0_min + HOP


def _pitch_intensity(sound, config: ProsodyConfig):
    pitch = sound.to_pitch_ac(time_step=HOP, pitch_floor=config.f0_min, pitch_ceiling=config.f0_max)
    intensity = sound.to_intensity(minimum_pitch=config.f0_min, time_step=HOP)
    return pitch, intensity


def _track_from(pitch, intensity, offset: float) -> ProsodyTrack:
    times = np.asarray(pitch.xs(), dtype=np.float64)
    f0 = np.asarray(pitch.selected_array["frequency"], dtype=np.float64)
    f0 = np.where(f0 > 0, f0, np.nan)  # Praat writes 0 for unvoiced frames
    level_times = np.asarray(intensity.xs(), dtype=np.float64)
    levels = np.asarray(intensity.values[0], dtype=np.float64)
    # The intensity frames are a few ms off the pitch frames; put them on the pitch grid.
    # Frames beyond the intensity analysis (its window is longer) are NaN, not extrapolated.
    level = np.interp(times, level_times, levels, left=np.nan, right=np.nan) if levels.size else np.full_like(times, np.nan)
    # Praat floors digital silence at -300 dB; that is "no signal", not a level.
    level = np.where(level <= -299.0, np.nan, level)
    return ProsodyTrack(times + offset, f0, level)


def prosody_track(samples: np.ndarray, config: ProsodyConfig, offset: float = 0.0) -> ProsodyTrack:
    """F0 (Hz, NaN unvoiced) and intensity (dB) every 10 ms of a 16 kHz mono signal.

    `offset`: source time in seconds of samples[0], added to the frame times. About
    10 ms of CPU per second of audio; call it once per source or clip and slice with
    `ProsodyTrack.window`. Input shorter than ~0.1 s gives an empty track.
    """
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if not _analysable(samples, config):
        return ProsodyTrack.empty()
    return _track_from(*_pitch_intensity(_sound(samples), config), offset)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _silence_threshold(intensity: np.ndarray) -> float | None:
    levels = intensity[np.isfinite(intensity)]
    return float(np.quantile(levels, 0.99) - SILENCE_DB) if levels.size else None


def _pauses(track: ProsodyTrack, min_pause: float) -> tuple[int, float, float]:
    """(count, total s, longest s) of silences >= min_pause between speech in the track.

    Silence is intensity more than 25 dB below the 0.99 quantile (de Jong & Wempe 2009),
    from intensity only because voicing also drops out in voiceless consonants. Silence
    before the first and after the last sounding frame is not a pause.
    """
    threshold = _silence_threshold(track.intensity)
    if threshold is None:
        return 0, 0.0, 0.0
    sounding = np.isfinite(track.intensity) & (track.intensity >= threshold)
    if not sounding.any():
        return 0, 0.0, 0.0
    first, last = np.flatnonzero(sounding)[[0, -1]]
    inner = ~sounding[first : last + 1]
    lengths = []
    run = 0
    for silent in inner:
        if silent:
            run += 1
        elif run:
            lengths.append(run * HOP)
            run = 0
    pauses = [length for length in lengths if length >= min_pause - 1e-9]
    return len(pauses), float(sum(pauses)), float(max(pauses, default=0.0))


def syllable_nuclei(track: ProsodyTrack) -> np.ndarray:
    """Times (s) of syllable nuclei after de Jong & Wempe 2009: intensity peaks above
    both the silence threshold and the median intensity, each standing >= 2 dB above
    the lowest point between it and the previous nucleus, kept only where voiced."""
    level = track.intensity
    finite = np.isfinite(level)
    threshold = _silence_threshold(level)
    if threshold is None or finite.sum() < 3:
        return np.zeros(0)
    threshold = max(threshold, float(np.median(level[finite])))
    filled = np.where(finite, level, -np.inf)
    peaks = np.flatnonzero((filled[1:-1] > filled[:-2]) & (filled[1:-1] >= filled[2:]) & (filled[1:-1] > threshold)) + 1
    nuclei = []
    previous = None
    for peak in peaks:
        if previous is not None:
            dip = np.min(filled[previous : peak + 1])
            if min(filled[previous], filled[peak]) - dip < NUCLEUS_DIP_DB:
                # Not separated from the previous nucleus: keep the louder of the two.
                if filled[peak] > filled[previous]:
                    nuclei[-1] = peak
                    previous = peak
                continue
        nuclei.append(peak)
        previous = peak
    nuclei = [p for p in nuclei if np.isfinite(track.f0[p])]
    return track.times[np.asarray(nuclei, dtype=int)] if nuclei else np.zeros(0)


@lru_cache(maxsize=1)
def _egemaps():
    try:
        import opensmile
    except ImportError as error:
        raise ProsodyError(f"opensmile cannot be imported ({error}); install it or set prosody.egemaps = false") from None
    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)


def egemaps_functionals(samples: np.ndarray) -> dict[str, float]:
    """The 88 openSMILE eGeMAPSv02 functionals of a 16 kHz mono signal (~30 ms per
    second of audio). Features openSMILE leaves undefined (NaN, e.g. on silence) are
    omitted so the record stays valid JSON."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if samples.size < AUDIO_RATE // 10:
        return {}
    frame = _egemaps().process_signal(samples, AUDIO_RATE)
    row = frame.iloc[0]
    return {str(name): float(value) for name, value in row.items() if np.isfinite(value)}


def _voice_quality(sound, config: ProsodyConfig) -> tuple[float | None, float | None, float | None]:
    """(jitter local, shimmer local, HNR dB) with Praat's voice-report settings."""
    from parselmouth.praat import call

    try:
        points = call(sound, "To PointProcess (periodic, cc)", config.f0_min, config.f0_max)
        jitter = call(points, "Get jitter (local)", 0, 0, PERIOD_FLOOR, PERIOD_CEILING, PERIOD_FACTOR)
        shimmer = call([sound, points], "Get shimmer (local)", 0, 0, PERIOD_FLOOR, PERIOD_CEILING, PERIOD_FACTOR, AMPLITUDE_FACTOR)
    except Exception:  # Praat refuses too few periods; that is "undefined", not an error
        jitter = shimmer = None
    try:
        harmonicity = sound.to_harmonicity_cc(time_step=HOP, minimum_pitch=config.f0_min, silence_threshold=0.1, periods_per_window=1.0)
        values = np.asarray(harmonicity.values[0])
        hnr = float(values[values > -199].mean()) if (values > -199).any() else None  # -200: unvoiced frame
    except Exception:
        hnr = None
    return _finite(jitter), _finite(shimmer), _finite(hnr)


def prosody_stats(
    samples: np.ndarray,
    config: ProsodyConfig,
    words: Sequence[Word] | None = None,
    span: tuple[float, float] | None = None,
    offset: float = 0.0,
) -> ProsodyStats:
    """Prosody of a stretch of 16 kHz mono speech.

    `offset`: source time (s) of samples[0]; `span`: (start, end) in source seconds to
    analyse, None for all of `samples`; `words`: ASR words (source times) whose midpoint
    falls in the span give `speech_rate_words`, None leaves it None. Rates are per second
    of the span (pauses included, as de Jong & Wempe's "speech rate"). Silence, input
    shorter than ~0.1 s, or no voiced frame give None for the F0 and voice-quality fields.
    """
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    start, end = span if span is not None else (offset, offset + samples.size / AUDIO_RATE)
    a = max(0, int(round((start - offset) * AUDIO_RATE)))
    b = min(samples.size, int(round((end - offset) * AUDIO_RATE)))
    clip = samples[a:b] if b > a else samples[:0]
    duration = clip.size / AUDIO_RATE
    stats: dict = {}
    if words is not None and duration > 0:
        inside = [w for w in words if start <= (w.start + w.end) / 2 < end]
        stats["speech_rate_words"] = len(inside) / duration
    if not _analysable(clip, config) or not np.any(clip):
        return ProsodyStats(**stats)

    sound = _sound(clip)
    track = _track_from(*_pitch_intensity(sound, config), offset + a / AUDIO_RATE)
    voiced = track.voiced
    levels = track.intensity[np.isfinite(track.intensity)]
    if levels.size:
        stats["intensity_mean"] = float(levels.mean())
        stats["intensity_sd"] = float(levels.std())
    stats["voiced_fraction"] = float(voiced.mean()) if voiced.size else 0.0
    count, total, longest = _pauses(track, config.min_pause)
    stats.update(pause_count=count, pause_total=total, pause_longest=longest)
    stats["speech_rate_syllables"] = syllable_nuclei(track).size / duration
    if voiced.sum() >= 2:
        f0, times = track.f0[voiced], track.times[voiced]
        low, high = np.percentile(f0, [5, 95])
        stats.update(f0_mean=float(f0.mean()), f0_sd=float(f0.std()), f0_range=float(high - low))
        # Least-squares line over voiced frames; with voicing confined to one instant the
        # slope is undefined.
        if times.max() - times.min() > 2 * HOP:
            stats["f0_slope"] = float(np.polyfit(times, f0, 1)[0])
        stats["jitter_local"], stats["shimmer_local"], stats["hnr"] = _voice_quality(sound, config)
    if config.egemaps:
        stats["egemaps"] = egemaps_functionals(clip)
    return ProsodyStats(**stats)


def word_prosody(track: ProsodyTrack, words: Sequence[Word]) -> list[dict[str, float | str | None]]:
    """Per word: text, start, end, duration (s), f0_mean (Hz, voiced frames; None if the
    word has none) and intensity_mean (dB; None if no frame falls inside the word)."""
    result = []
    for word in words:
        frames = track.window(word.start, word.end)
        f0 = frames.f0[np.isfinite(frames.f0)]
        level = frames.intensity[np.isfinite(frames.intensity)]
        result.append({
            "text": word.text,
            "start": word.start,
            "end": word.end,
            "duration": word.end - word.start,
            "f0_mean": float(f0.mean()) if f0.size else None,
            "intensity_mean": float(level.mean()) if level.size else None,
        })
    return result


class _Collect:
    """Audio consumer that keeps every block (for short files and tests)."""

    def __init__(self):
        self.blocks: list[np.ndarray] = []

    def process_audio(self, samples: np.ndarray, start_time: float) -> None:
        self.blocks.append(samples.copy())

    def finish(self, end_time: float) -> None:
        pass


def load_audio(path: Path) -> np.ndarray:
    """A whole media file's first audio stream as 16 kHz mono float32 (any format FFmpeg
    reads). Holds it all in memory: for clips and tests, not for long sources. Raises
    MediaError when the file cannot be opened."""
    collector = _Collect()
    decode_once(Path(path), audio_consumers=[collector])
    return np.concatenate(collector.blocks) if collector.blocks else np.zeros(0, dtype=np.float32)
