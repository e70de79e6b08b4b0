"""PySceneDetect's golden cut lists, reproduced through merforge's single decode pass."""

import json

import pytest

from merforge.preprocess.media import decode_once, probe_media
from merforge.preprocess.shots import ShotDetector
from merforge.storage.config import ShotsConfig

# Golden file name part -> our config. "default" is the detector default the goldens were
# made with (HistogramDetector: threshold 0.05 with 256 bins).
DETECTORS = {
    "ContentDetector.default": ShotsConfig(detector="content"),
    "ContentDetector.t30": ShotsConfig(detector="content", content_threshold=30),
    "AdaptiveDetector.default": ShotsConfig(detector="adaptive"),
    "AdaptiveDetector.t5": ShotsConfig(detector="adaptive", adaptive_threshold=5),
    "HistogramDetector.default": ShotsConfig(detector="histogram"),
    "HashDetector.default": ShotsConfig(detector="hash"),
    "ThresholdDetector.default": ShotsConfig(detector="threshold"),
}
VIDEOS = ["testvideo.mp4", "fades.mp4", "counter.mp4"]


@pytest.mark.parametrize("video", VIDEOS)
def test_goldens(data, video):
    """All detectors run from ONE decode of the file, as in the sampling stage."""
    path = data / "pyscenedetect" / video
    fps = probe_media(path).video.fps
    detectors = {name: ShotDetector(config, fps) for name, config in DETECTORS.items()}
    stats = decode_once(path, list(detectors.values()))
    assert stats.video_frames > 0
    for name, detector in detectors.items():
        golden = json.loads((data / "pyscenedetect" / "goldens" / f"{video}.{name}.json").read_text())["cuts"]
        assert [cut.frame for cut in detector.cuts] == golden, f"{video} {name}"


def test_cut_times_match_frame_numbers(data):
    path = data / "pyscenedetect" / "testvideo.mp4"
    fps = probe_media(path).video.fps
    detector = ShotDetector(ShotsConfig(), fps)
    decode_once(path, [detector])
    for cut in detector.cuts:
        assert cut.time == pytest.approx(cut.frame / fps, abs=1e-3)
