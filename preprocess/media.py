"""Media I/O with PyAV: probing, and the single decode pass that feeds every consumer.

`probe_media` says what a file holds or raises MediaError with a reason a curator can
read. `decode_once` demuxes a file ONCE and streams each video frame (scaled to the
working width, BGR) to every frame consumer and each block of audio (16 kHz mono
float32) to every audio consumer, in the manner of PySceneDetect's SceneManager.
Nothing holds the whole video or the whole audio track in memory.

Decoding runs on the calling thread; frame consumers and audio consumers each run on
a worker thread fed through a small bounded queue, so on a multi-core machine shot
detection and voice activity detection overlap with decoding (FFmpeg, OpenCV and
ONNX Runtime release the GIL). Consumers see frames and audio strictly in order.
"""

from __future__ import annotations

import os
import queue
import threading
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
# Frames waiting for the consumer thread; bounds memory (a 720p frame is ~1.4 MB).
QUEUE_FRAMES = 8
# Audio is handed to the consumer thread in blocks of this many samples (0.5 s), not per
# codec frame (~23 ms), so thread hand-offs stay rare.
AUDIO_BLOCK = AUDIO_RATE // 2


class Frame:
    """One decoded video frame. `time` is seconds from the start of the file.

    Pixels are converted lazily and once: `native` (BGR at the coded size), `image`
    (BGR at the working size), `resized()` and `sampled()` are computed when a consumer
    first asks, so a consumer that needs few frames costs nothing on the others.
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

    def sampled(self, width: int, height: int) -> np.ndarray:
        """BGR uint8 at (width, height) by point sampling in swscale, straight from the
        decoded YUV picture: about twice as fast as converting the full picture and
        resizing, and for shot detection it matches OpenCV's INTER_LINEAR downscale
        (PySceneDetect's) on its goldens (tests/test_shots.py)."""
        key = (width, height, -2)
        if key not in self._cache:
            self._cache[key] = self._av_frame.to_ndarray(format="bgr24", width=width, height=height, interpolation="POINT")
        return self._cache[key]

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


class _Worker:
    """Runs `handle(item)` for each queued item on its own thread, in order.

    An exception in `handle` is kept and re-raised on the caller's thread by `put` or
    `close`; the worker keeps draining so the producer never blocks on a dead queue.
    """

    _STOP = object()

    def __init__(self, handle, name: str):
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            if self.error is None:
                try:
                    self._handle(item)
                except BaseException as error:  # re-raised on the producer's thread
                    self.error = error

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(item)

    def close(self) -> None:
        self._queue.put(self._STOP)
        self._thread.join()
        if self.error is not None:
            raise self.error


def decoder_threads() -> int:
    """Decoder threads when config says 0: the cores left after the two consumer threads.

    Frame threading costs ~30% more CPU for the same frames, so on a small machine the
    consumers doing real work on the other core beat a threaded decoder.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores - 2))


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
        completed = False
        try:
            for packet in container.demux(streams):
                if audio is not None and packet.stream is audio_stream:
                    audio.feed_packet(packet)  # decoded on the audio thread
                    if video is not None:
                        continue
                    position = audio.position
                else:
                    try:
                        video.feed(packet.decode())
                    except av.error.FFmpegError as error:
                        stats.decode_errors += 1
                        if stats.decode_errors >= MAX_DECODE_ERRORS:
                            stats.warnings.append(
                                f"stopped after {stats.decode_errors} decode errors at {video.position:.2f} s "
                                f"(last: {error}); the file is corrupt or truncated, kept what decoded"
                            )
                            break
                        continue
                    position = video.position
                if position - reported >= 1.0:
                    progress.advance(position - reported)
                    reported = position
            else:
                # Flush the video decoder: frames held back by B-frame reordering or threading.
                if video is not None:
                    try:
                        video.feed(video_stream.codec_context.decode(None))
                    except av.error.FFmpegError:
                        stats.decode_errors += 1
            completed = True
        except av.error.FFmpegError as error:
            # A demux error (truncated container): keep what decoded so far.
            stats.warnings.append(f"reading stopped at {max(s.position for s in (video, audio) if s):.2f} s: {error}")
            completed = True
        finally:
            progress.finish()
            # Always stop the worker threads; on success this also runs consumers' finish().
            errors = []
            for side in (video, audio):
                if side is not None:
                    try:
                        side.close(run_finish=completed)
                    except BaseException as error:
                        errors.append(error)
            if errors and completed:
                raise errors[0]
        if video:
            stats.video_frames = video.count
            stats.video_end = video.end_time
        if audio:
            stats.audio_samples = audio.samples
            stats.decode_errors += audio.decode_errors
            stats.warnings.extend(audio.warnings)
        if duration and video and stats.video_end < duration - 1.0:
            stats.warnings.append(f"video decoded to {stats.video_end:.2f} s of {duration:.2f} s: truncated?")
    return stats


class _VideoSide:
    def __init__(self, stream, consumers, working_width: int, threads: int, start_offset: float):
        threads = threads or decoder_threads()
        if threads > 1:
            stream.thread_type = "FRAME"
            stream.codec_context.thread_count = threads
        else:
            stream.thread_type = "NONE"
        self.stream = stream
        self.consumers = consumers
        ctx = stream.codec_context
        self.size = working_size(ctx.width, ctx.height, working_width)
        self.time_base = Fraction(stream.time_base.numerator, stream.time_base.denominator)
        rate = stream.average_rate or stream.guessed_rate
        self.frame_duration = 1.0 / float(rate) if rate else 0.0
        self.start_offset = start_offset
        self.first_pts: int | None = None
        self.count = 0
        self.position = 0.0
        self.end_time = 0.0
        self._worker = _Worker(self._deliver, "merforge-frames")

    def _deliver(self, frame: Frame | None) -> None:
        if frame is None:
            self._finish()
            return
        for consumer in self.consumers:
            consumer.process_frame(frame)

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
                time_base=self.time_base,
                time=max(0.0, time),
                av_frame=av_frame,
                working_size=self.size,
            )
            self._worker.put(frame)
            self.count += 1
            self.position = frame.time
            self.end_time = max(self.end_time, frame.time + self.frame_duration)

    def close(self, run_finish: bool) -> None:
        try:
            if run_finish:
                self._worker.put(None)
        finally:
            self._worker.close()

    def _finish(self) -> None:
        for consumer in self.consumers:
            consumer.finish(self.end_time)


class _AudioSide:
    """Decodes, resamples and delivers audio on its own thread; the caller only demuxes."""

    def __init__(self, stream, consumers, start_offset: float):
        self.stream = stream
        self.consumers = consumers
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        self.start_offset = start_offset
        self.samples = 0
        self.started = False
        self.decode_errors = 0
        self.warnings: list[str] = []
        self._block: list[np.ndarray] = []
        self._block_size = 0
        self._worker = _Worker(self._handle, "merforge-audio")

    @property
    def position(self) -> float:
        return self.samples / AUDIO_RATE

    def feed_packet(self, packet) -> None:
        self._worker.put(packet)

    def _handle(self, packet) -> None:
        if packet is None:  # end of input: flush the decoder and resampler, then finish
            self._decode(None)
            for out in self.resampler.resample(None):
                self._emit(out.to_ndarray().reshape(-1))
            self._flush()
            for consumer in self.consumers:
                consumer.finish(self.position)
            return
        self._decode(packet)

    def _decode(self, packet) -> None:
        if self.decode_errors >= MAX_DECODE_ERRORS:
            return
        try:
            frames = packet.decode() if packet is not None else self.stream.codec_context.decode(None)
        except av.error.FFmpegError as error:
            self.decode_errors += 1
            if self.decode_errors == MAX_DECODE_ERRORS:
                self.warnings.append(f"audio: stopped after {self.decode_errors} decode errors at "
                                     f"{self.position:.2f} s (last: {error}); kept what decoded")
            return
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
        self._block.append(samples.astype(np.float32, copy=False))
        self._block_size += samples.size
        self.samples += samples.size
        if self._block_size >= AUDIO_BLOCK:
            self._flush()

    def _flush(self) -> None:
        if self._block_size:
            block = np.concatenate(self._block) if len(self._block) > 1 else self._block[0]
            start = (self.samples - self._block_size) / AUDIO_RATE
            self._block, self._block_size = [], 0
            for consumer in self.consumers:
                consumer.process_audio(block, start)

    def close(self, run_finish: bool) -> None:
        try:
            if run_finish:
                self._worker.put(None)
        finally:
            self._worker.close()


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
