"""Media I/O with PyAV: probing, and the single decode pass that feeds every consumer.

`probe_media` says what a file holds or raises MediaError with a reason a curator can
read. `decode_once` demuxes a file ONCE and streams each video frame (scaled to the
working width, BGR) to every frame consumer and each block of audio (16 kHz mono
float32) to every audio consumer, in the manner of PySceneDetect's SceneManager.
Nothing holds the whole video or the whole audio track in memory.
"""

from __future__ import annotations

import os
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import cv2
import numpy as np

from merforge.errors import MediaError
from merforge.progress import NoProgress, Progress
from merforge.storage.records import AudioInfo, MediaInfo, VideoInfo

AUDIO_RATE = 16_000
# A stream that keeps failing is corrupt; stop there and keep what decoded.
MAX_DECODE_ERRORS = 32


class Frame:
    """One decoded video frame. `time` is seconds from the start of the file.

    Pixels are converted lazily and once: `native` (BGR at the coded size), `image`
    (BGR at the working size) and `resized()` are computed when a consumer first asks.
    """

    __slots__ = ("index", "pts", "time_base", "time", "native_size", "_av_frame", "_working_size", "_cache")

    def __init__(self, index: int, pts: int, time_base: Fraction, time: float, av_frame, working_size: tuple[int, int]):
        self.index = index  # 0-based decode order
        self.pts = pts  # presentation timestamp in `time_base` units, relative to the first frame
        self.time_base = time_base
        self.time = time
        self.native_size = (av_frame.width, av_frame.height)
        self._av_frame = av_frame
        self._working_size = working_size
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}

    @property
    def native(self) -> np.ndarray:
        """BGR uint8 at the coded size."""
        key = (*self.native_size, -1)
        if key not in self._cache:
            self._cache[key] = self._av_frame.to_ndarray(format="bgr24")
        return self._cache[key]

    @property
    def image(self) -> np.ndarray:
        """BGR uint8 at the working size."""
        return self.resized(*self._working_size, interpolation=cv2.INTER_AREA)

    def resized(self, width: int, height: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """BGR uint8 at (width, height), scaled from the native picture with OpenCV."""
        if (width, height) == self.native_size:
            return self.native
        key = (width, height, interpolation)
        if key not in self._cache:
            self._cache[key] = cv2.resize(self.native, (width, height), interpolation=interpolation)
        return self._cache[key]


class FrameConsumer(Protocol):
    def process_frame(self, frame: Frame) -> None: ...

    def finish(self, end_time: float) -> None: ...


class AudioConsumer(Protocol):
    def process_audio(self, samples: np.ndarray, start_time: float) -> None:
        """`samples`: float32 mono at 16 kHz in [-1, 1]; `start_time` in seconds."""

    def finish(self, end_time: float) -> None: ...


def _open(path: Path) -> av.container.InputContainer:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise MediaError(f"file not found: {path}") from None
    except OSError as error:
        raise MediaError(f"cannot read {path}: {error.strerror}") from None
    if size == 0:
        raise MediaError("empty file (0 bytes)")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError:
        raise MediaError("not a media file, or truncated before its header ended (FFmpeg: invalid data)") from None
    except av.error.FFmpegError as error:
        raise MediaError(f"FFmpeg cannot open it: {error}") from None
    except OSError as error:
        raise MediaError(f"cannot read it: {error}") from None


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def probe_media(path: Path) -> MediaInfo:
    """Streams, duration (s), fps, resolution, audio rate and channels.

    Decodes the first frame of each used stream so that an undecodable codec or a file
    cut short in its first packets is caught here. Raises MediaError with the reason.
    """
    with _open(path) as container:
        video_stream = container.streams.video[0] if container.streams.video else None
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        if video_stream is None and audio_stream is None:
            raise MediaError("no audio or video stream in the file")
        video = audio = None
        if video_stream is not None:
            ctx = video_stream.codec_context
            rate = video_stream.average_rate or video_stream.guessed_rate or video_stream.base_rate
            if not ctx.width or not ctx.height:
                raise MediaError(f"video stream has no picture size (codec {ctx.name}); the file may be truncated")
            video = VideoInfo(
                codec=ctx.name,
                width=ctx.width,
                height=ctx.height,
                fps=float(rate) if rate else 0.0,
                frames=video_stream.frames or None,
                duration=_seconds(video_stream.duration, video_stream.time_base),
            )
        if audio_stream is not None:
            ctx = audio_stream.codec_context
            audio = AudioInfo(
                codec=ctx.name,
                sample_rate=ctx.sample_rate or 0,
                channels=ctx.channels if hasattr(ctx, "channels") else ctx.layout.nb_channels,
                duration=_seconds(audio_stream.duration, audio_stream.time_base),
            )
        duration = container.duration / av.time_base if container.duration else None
        if duration is None:
            duration = max(d for d in [video and video.duration, audio and audio.duration, 0.0] if d is not None)
        _check_first_frames(container, video_stream, audio_stream)
    if not duration or duration <= 0:
        raise MediaError("the file reports no duration and no decodable length")
    return MediaInfo(container=container.format.name, duration=float(duration), video=video, audio=audio)


def _check_first_frames(container, video_stream, audio_stream) -> None:
    wanted = [s for s in (video_stream, audio_stream) if s is not None]
    seen: set[int] = set()
    try:
        for packet in container.demux(wanted):
            if packet.stream.index in seen:
                continue
            if packet.size == 0 and packet.pts is None:
                continue
            if packet.decode():
                seen.add(packet.stream.index)
            if len(seen) == len(wanted):
                return
    except av.error.FFmpegError as error:
        raise MediaError(f"cannot decode the first frames: {error}") from None
    missing = [f"{s.type} ({s.codec_context.name})" for s in wanted if s.index not in seen]
    if video_stream is not None and video_stream.index not in seen:
        raise MediaError(f"no decodable frame in stream(s): {', '.join(missing)}; the file is truncated or corrupt")
    if audio_stream is not None and audio_stream.index not in seen and video_stream is None:
        raise MediaError(f"no decodable audio in stream(s): {', '.join(missing)}; the file is truncated or corrupt")


def working_size(width: int, height: int, working_width: int) -> tuple[int, int]:
    """Scale (width, height) down to at most `working_width` wide, keeping even sizes."""
    if width <= working_width:
        return width - width % 2 or width, height - height % 2 or height
    scale = working_width / width
    return working_width - working_width % 2, max(2, int(round(height * scale / 2)) * 2)


@dataclass
class DecodeStats:
    video_frames: int = 0
    video_end: float = 0.0  # seconds; end of the last decoded frame
    audio_samples: int = 0
    decode_errors: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def audio_seconds(self) -> float:
        return self.audio_samples / AUDIO_RATE


def decode_once(
    path: Path,
    frame_consumers: Sequence[FrameConsumer] = (),
    audio_consumers: Sequence[AudioConsumer] = (),
    working_width: int = 640,
    threads: int = 0,
    progress: Progress | None = None,
) -> DecodeStats:
    """Decode `path` once, feeding frames and 16 kHz mono audio to the consumers.

    Frames arrive in presentation order with times relative to the file start. Decode
    errors are counted; after MAX_DECODE_ERRORS the file is treated as truncated and
    decoding stops, keeping what was decoded (stats.warnings says so).
    Raises MediaError when the file cannot be opened.
    """
    progress = progress or NoProgress()
    stats = DecodeStats()
    with _open(path) as container:
        video_stream = container.streams.video[0] if (frame_consumers and container.streams.video) else None
        audio_stream = container.streams.audio[0] if (audio_consumers and container.streams.audio) else None
        streams = [s for s in (video_stream, audio_stream) if s is not None]
        if not streams:
            return stats
        start_offset = container.start_time / av.time_base if container.start_time else 0.0
        duration = container.duration / av.time_base if container.duration else None
        progress.start(f"decode {path.name}", duration)

        video = _VideoSide(video_stream, frame_consumers, working_width, threads, start_offset) if video_stream else None
        audio = _AudioSide(audio_stream, audio_consumers, start_offset) if audio_stream else None
        reported = 0.0
        try:
            for packet in container.demux(streams):
                side = video if (video and packet.stream is video_stream) else audio
                if side is None:
                    continue
                try:
                    side.feed(packet.decode())
                except av.error.FFmpegError as error:
                    stats.decode_errors += 1
                    if stats.decode_errors >= MAX_DECODE_ERRORS:
                        stats.warnings.append(
                            f"stopped after {stats.decode_errors} decode errors at {side.position:.2f} s "
                            f"(last: {error}); the file is corrupt or truncated, kept what decoded"
                        )
                        break
                    continue
                position = side.position
                if position - reported >= 1.0:
                    progress.advance(position - reported)
                    reported = position
            else:
                # Flush decoders: frames held back by B-frame reordering or threading.
                for side, stream in ((video, video_stream), (audio, audio_stream)):
                    if side is not None:
                        try:
                            side.feed(stream.codec_context.decode(None))
                        except av.error.FFmpegError:
                            stats.decode_errors += 1
        except av.error.FFmpegError as error:
            # A demux error (truncated container): keep what decoded so far.
            stats.warnings.append(f"reading stopped at {max(s.position for s in (video, audio) if s):.2f} s: {error}")
        finally:
            progress.finish()
        if video:
            video.finish()
            stats.video_frames = video.count
            stats.video_end = video.end_time
        if audio:
            audio.finish()
            stats.audio_samples = audio.samples
        if duration and video and stats.video_end < duration - 1.0:
            stats.warnings.append(f"video decoded to {stats.video_end:.2f} s of {duration:.2f} s: truncated?")
    return stats


class _VideoSide:
    def __init__(self, stream, consumers, working_width: int, threads: int, start_offset: float):
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        self.stream = stream
        self.consumers = consumers
        ctx = stream.codec_context
        self.size = working_size(ctx.width, ctx.height, working_width)
        self.time_base = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
        self.frame_duration = 1.0 / float(rate) if rate else 0.0
        self.start_offset = start_offset
        self.first_pts: int | None = None
        self.count = 0
        self.position = 0.0
        self.end_time = 0.0

    def feed(self, frames) -> None:
        for av_frame in frames:
            pts = av_frame.pts if av_frame.pts is not None else av_frame.dts
            if pts is None:
                pts = self.count
            if self.first_pts is None:
                self.first_pts = pts
            time = float(pts * self.time_base) - self.start_offset
            frame = Frame(
                index=self.count,
                pts=pts - self.first_pts,
                time_base=Fraction(self.time_base.numerator, self.time_base.denominator),
                time=max(0.0, time),
                av_frame=av_frame,
                working_size=self.size,
            )
            for consumer in self.consumers:
                consumer.process_frame(frame)
            self.count += 1
            self.position = frame.time
            self.end_time = max(self.end_time, frame.time + self.frame_duration)

    def finish(self) -> None:
        for consumer in self.consumers:
            consumer.finish(self.end_time)


class _AudioSide:
    def __init__(self, stream, consumers, start_offset: float):
        self.stream = stream
        self.consumers = consumers
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        self.start_offset = start_offset
        self.samples = 0
        self.started = False

    @property
    def position(self) -> float:
        return self.samples / AUDIO_RATE

    def feed(self, frames) -> None:
        for av_frame in frames:
            if not self.started:
                self.started = True
                # Audio that starts late is padded with silence so sample 0 is time 0.
                first = float(av_frame.pts * av_frame.time_base) - self.start_offset if av_frame.pts is not None else 0.0
                if first > 0.01:
                    self._emit(np.zeros(int(round(first * AUDIO_RATE)), dtype=np.float32))
            for out in self.resampler.resample(av_frame):
                self._emit(out.to_ndarray().reshape(-1))

    def _emit(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        samples = samples.astype(np.float32, copy=False)
        start = self.samples / AUDIO_RATE
        for consumer in self.consumers:
            consumer.process_audio(samples, start)
        self.samples += samples.size

    def finish(self) -> None:
        for out in self.resampler.resample(None):
            self._emit(out.to_ndarray().reshape(-1))
        for consumer in self.consumers:
            consumer.finish(self.position)


class WavWriter:
    """Audio consumer that streams the 16 kHz mono track to a 16-bit WAV file.

    Later stages (ASR, prosody) read windows of this file instead of decoding again.
    Written to a temporary name and renamed when complete.
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._wav = wave.open(str(self._tmp), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(AUDIO_RATE)

    def process_audio(self, samples: np.ndarray, start_time: float) -> None:
        pcm = np.clip(samples, -1.0, 1.0) * 32767.0
        self._wav.writeframes(pcm.astype("<i2").tobytes())

    def finish(self, end_time: float) -> None:
        self._wav.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        try:
            self._wav.close()
        finally:
            self._tmp.unlink(missing_ok=True)


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit mono WAV as float32 in [-1, 1] (for tests and short files)."""
    with wave.open(str(path), "rb") as handle:
        data = handle.readframes(handle.getnframes())
        channels = handle.getnchannels()
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples
