"""Shot cuts with PySceneDetect detectors, fed from our single decode pass.

The detectors are used through their own interface (`process_frame(timecode, image)`
and `post_process`), with frames at the size PySceneDetect's SceneManager uses (auto
downscale to an effective width of 256 px), so thresholds mean what PySceneDetect's
documentation says they mean and its golden cut lists are reproduced exactly
(tests/test_shots.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scenedetect.common import FrameTimecode, Timecode
from scenedetect.detectors import (
    AdaptiveDetector,
    ContentDetector,
    HashDetector,
    HistogramDetector,
    ThresholdDetector,
)
from scenedetect.scene_manager import compute_downscale_factor

from merforge.preprocess.media import Frame
from merforge.storage.config import ShotsConfig

BACKEND = "pyscenedetect"


@dataclass(frozen=True)
class Cut:
    """A shot boundary: the first frame of a new shot."""

    frame: int  # 0-based frame number at the detector's frame rate
    time: float  # seconds


def make_detector(config: ShotsConfig):
    """The PySceneDetect detector named in config, with its threshold."""
    if config.detector == "content":
        return ContentDetector(threshold=config.content_threshold, min_scene_len=config.min_shot_frames)
    if config.detector == "adaptive":
        return AdaptiveDetector(adaptive_threshold=config.adaptive_threshold, min_scene_len=config.min_shot_frames)
    if config.detector == "histogram":
        return HistogramDetector(
            threshold=config.histogram_threshold, bins=config.histogram_bins, min_scene_len=config.min_shot_frames
        )
    if config.detector == "hash":
        return HashDetector(threshold=config.hash_threshold, min_scene_len=config.min_shot_frames)
    if config.detector == "threshold":
        return ThresholdDetector(threshold=config.fade_threshold, min_scene_len=config.min_shot_frames)
    raise ValueError(f"unknown shot detector {config.detector!r}")


def detector_version() -> str:
    import scenedetect

    return scenedetect.__version__


class ShotDetector:
    """Frame consumer that collects shot cuts as the decode pass goes."""

    def __init__(self, config: ShotsConfig, fps: float, detector=None):
        self.config = config
        self.detector = detector if detector is not None else make_detector(config)
        self.fps = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
        self._cut_positions: list[FrameTimecode] = []
        self._last: FrameTimecode | None = None
        self._target: tuple[int, int] | None = None

    def _detector_image(self, frame: Frame) -> np.ndarray:
        if self._target is None:
            # The effective size SceneManager's auto-downscale would use for this video.
            factor = compute_downscale_factor(frame.native_size[0])
            width = max(1, round(frame.native_size[0] / factor))
            height = max(1, round(frame.native_size[1] / factor))
            self._target = (width, height)
        return frame.sampled(*self._target)

    def process_frame(self, frame: Frame) -> None:
        position = FrameTimecode(Timecode(pts=frame.pts, time_base=frame.time_base), fps=self.fps)
        self._last = position
        self._cut_positions += self.detector.process_frame(position, self._detector_image(frame))

    def finish(self, end_time: float) -> None:
        if self._last is not None:
            self._cut_positions += self.detector.post_process(self._last)

    @property
    def cuts(self) -> list[Cut]:
        unique = sorted({(tc.frame_num, round(tc.seconds, 6)) for tc in self._cut_positions})
        return [Cut(frame=f, time=t) for f, t in unique]
