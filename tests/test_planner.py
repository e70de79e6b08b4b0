"""The segment planner on hand-made timelines (seconds)."""

import pytest

from merforge.preprocess.planner import plan_clips, split_at_pauses
from merforge.storage.config import PlannerConfig
from merforge.storage.records import ClipOrigin

CONFIG = PlannerConfig(min_length=1.0, max_length=6.0, padding=0.25, merge_gap=0.6)


def spans(plan):
    return [(c.start, c.end, c.origin) for c in plan.clips]


def test_audio_only_gives_padded_merged_speech_clips():
    plan = plan_clips(20.0, [(1.0, 2.0), (2.3, 3.0), (10.0, 12.0)], [], has_video=False, config=CONFIG)
    assert spans(plan) == [(0.75, 3.25, ClipOrigin.SPEECH), (9.75, 12.25, ClipOrigin.SPEECH)]


def test_silent_video_gives_shot_clips_and_drops_flash_shots():
    plan = plan_clips(10.0, [], [4.0, 4.5], has_video=True, config=CONFIG)
    assert spans(plan) == [(0.0, 4.0, ClipOrigin.SHOT), (4.5, 10.0, ClipOrigin.SHOT)]
    assert plan.dropped_short == 1


def test_both_mode_never_crosses_a_cut_and_keeps_speechless_shots():
    plan = plan_clips(20.0, [(2.0, 7.0)], [5.0, 12.0], has_video=True, config=PlannerConfig(mode="both", max_length=15))
    assert spans(plan) == [
        (1.75, 5.0, ClipOrigin.SPEECH_IN_SHOT),
        (5.0, 7.25, ClipOrigin.SPEECH_IN_SHOT),
        (12.0, 20.0, ClipOrigin.SHOT),
    ]
    for clip in plan.clips:
        assert not any(clip.start < cut < clip.end for cut in (5.0, 12.0))


def test_long_speech_is_split_at_pauses_not_mid_word():
    speech = [(0.0, 2.5), (2.8, 5.0), (5.3, 9.0), (9.4, 11.0)]
    plan = plan_clips(12.0, speech, [], has_video=False, config=CONFIG)
    assert all(c.duration <= 6.0 + 1e-9 for c in plan.clips)
    pauses = [2.65, 5.15, 9.2]
    inner_boundaries = [c.end for c in plan.clips[:-1]]
    assert all(any(abs(b - p) < 1e-9 for p in pauses) for b in inner_boundaries)


def test_split_without_pauses_gives_equal_parts():
    pieces = split_at_pauses(0.0, 14.0, [], 1.0, 6.0)
    assert [p for piece in pieces for p in piece] == pytest.approx([0.0, 14 / 3, 14 / 3, 28 / 3, 28 / 3, 14.0])


def test_short_utterance_is_widened_to_min_length_inside_media():
    plan = plan_clips(5.0, [(0.05, 0.3)], [], has_video=False, config=CONFIG)
    (clip,) = plan.clips
    assert clip.start == 0.0 and clip.end == pytest.approx(1.0)


def test_shots_mode_ignores_speech_and_splits_long_shots():
    plan = plan_clips(13.0, [(1.0, 2.0)], [], has_video=True, config=PlannerConfig(mode="shots", max_length=6.0))
    assert [c.duration for c in plan.clips] == pytest.approx([13 / 3] * 3, abs=2e-3)
    assert {c.origin for c in plan.clips} == {ClipOrigin.SHOT}
