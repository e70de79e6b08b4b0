"""Key frames: candidates spooled during the decode pass, diverse ones chosen per clip.

During the single decode pass `KeyframeCandidates` saves one frame every
1/candidate_fps seconds as a JPEG in a spool folder and keeps only a small grey
thumbnail and a sharpness score in memory (about 5 KB a candidate), so memory stays
small on long media. Once clips are planned, `select_keyframes` picks, for each clip,
up to `per_clip` candidates inside it that differ most from each other (greedy
farthest-point selection, seeded with the sharpest frame) under one of three
distances: frame difference, ORB feature similarity, or optical flow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from merforge.preprocess.media import Frame
from merforge.storage.config import KeyframesConfig

THUMB_SIZE = (96, 54)  # width, height of the grey thumbnails used for distances
# Candidates closer than this (0..1 distance) to an already chosen key frame add nothing.
MIN_DIVERSITY = 0.02


@dataclass
class Candidate:
    time: float  # seconds
    path: Path  # spooled JPEG
    thumb: np.ndarray  # grey uint8 thumbnail
    sharpness: float  # variance of the Laplacian on the thumbnail
    _orb: np.ndarray | None = field(default=None, repr=False)


class KeyframeCandidates:
    """Frame consumer: spools a candidate frame every 1/candidate_fps seconds."""

    def __init__(self, config: KeyframesConfig, spool_dir: Path):
        self.config = config
        self.spool_dir = spool_dir
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.interval = 1.0 / config.candidate_fps
        self._next_time = 0.0
        self.candidates: list[Candidate] = []

    def process_frame(self, frame: Frame) -> None:
        if frame.time + 1e-6 < self._next_time:
            return
        # Stay on the grid even when frames are dropped or the rate is irregular.
        self._next_time = (int(frame.time / self.interval + 1e-6) + 1) * self.interval
        image = frame.image
        path = self.spool_dir / f"{round(frame.time * 1000):09d}.jpg"
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        if not ok:
            return
        path.write_bytes(encoded.tobytes())
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        thumb = cv2.resize(grey, THUMB_SIZE, interpolation=cv2.INTER_AREA)
        sharpness = float(cv2.Laplacian(thumb, cv2.CV_32F).var())
        self.candidates.append(Candidate(time=frame.time, path=path, thumb=thumb, sharpness=sharpness))

    def finish(self, end_time: float) -> None:
        pass

    def within(self, start: float, end: float) -> list[Candidate]:
        return [c for c in self.candidates if start - 1e-6 <= c.time < end]


def frame_difference(a: Candidate, b: Candidate) -> float:
    """Mean absolute grey-level difference of the thumbnails, 0..1."""
    return float(np.mean(cv2.absdiff(a.thumb, b.thumb))) / 255.0


_ORB = None


def _orb_descriptors(candidate: Candidate) -> np.ndarray:
    global _ORB
    if candidate._orb is None:
        if _ORB is None:
            _ORB = cv2.ORB_create(nfeatures=300)
        grey = cv2.imread(str(candidate.path), cv2.IMREAD_GRAYSCALE)
        _, descriptors = _ORB.detectAndCompute(grey, None) if grey is not None else (None, None)
        candidate._orb = descriptors if descriptors is not None else np.zeros((0, 32), np.uint8)
    return candidate._orb


def orb_dissimilarity(a: Candidate, b: Candidate) -> float:
    """1 - share of ORB features that match across the two frames (Hamming, cross-checked), 0..1.

    Frames without texture (no features) fall back to frame difference.
    """
    da, db = _orb_descriptors(a), _orb_descriptors(b)
    if len(da) < 10 or len(db) < 10:
        return frame_difference(a, b)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    good = [m for m in matcher.match(da, db) if m.distance < 48]
    return 1.0 - len(good) / min(len(da), len(db))


def optical_flow_distance(a: Candidate, b: Candidate) -> float:
    """Motion between the frames: mean Farneback flow magnitude over the thumbnail
    diagonal, plus what motion does not explain (residual difference after warping), 0..1."""
    flow = cv2.calcOpticalFlowFarneback(a.thumb, b.thumb, None, 0.5, 3, 9, 3, 5, 1.1, 0)
    magnitude = float(np.mean(np.linalg.norm(flow, axis=2)))
    diagonal = float(np.hypot(*THUMB_SIZE))
    h, w = a.thumb.shape
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    warped = cv2.remap(b.thumb, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR)
    residual = float(np.mean(cv2.absdiff(a.thumb, warped))) / 255.0
    return min(1.0, magnitude / diagonal * 10.0 + residual)


DISTANCES: dict[str, Callable[[Candidate, Candidate], float]] = {
    "frame_difference": frame_difference,
    "orb": orb_dissimilarity,
    "optical_flow": optical_flow_distance,
}


def select_diverse(candidates: list[Candidate], count: int, method: str) -> list[Candidate]:
    """Up to `count` mutually distant candidates, in time order.

    Seeded with the sharpest candidate; each next one maximises its distance to the
    nearest already chosen. Stops early when the rest are near-duplicates.
    """
    if not candidates:
        return []
    distance = DISTANCES[method]
    chosen = [max(candidates, key=lambda c: c.sharpness)]
    nearest = {id(c): distance(c, chosen[0]) for c in candidates if c is not chosen[0]}
    while len(chosen) < count and nearest:
        best = max((c for c in candidates if id(c) in nearest), key=lambda c: nearest[id(c)])
        if nearest[id(best)] < MIN_DIVERSITY:
            break
        chosen.append(best)
        del nearest[id(best)]
        for c in candidates:
            if id(c) in nearest:
                nearest[id(c)] = min(nearest[id(c)], distance(c, best))
    return sorted(chosen, key=lambda c: c.time)


def nearest_candidate(candidates: list[Candidate], time: float) -> Candidate | None:
    return min(candidates, key=lambda c: abs(c.time - time), default=None)
