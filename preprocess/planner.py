"""Segment planner: clips from shots and speech. Pure functions over seconds.

Modes (planner.mode):
- "speech": speech segments, merged across short gaps, padded, split when too long.
- "shots": one clip per shot, split when too long.
- "both" (default): speech clips that never cross a shot cut, plus each shot with no
  speech in it as a visual-only clip.
Audio-only media always gives speech clips; media without audio or without speech
gives shot clips. Speech clips shorter than min_length are widened around their
centre (a short "yes!" is still an emotional moment); shots shorter than min_length
are transitions and are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from merforge.storage.config import PlannerConfig
from merforge.storage.records import ClipOrigin

EPS = 1e-6


@dataclass(frozen=True)
class PlannedClip:
    start: float
    end: float
    origin: ClipOrigin

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Plan:
    clips: list[PlannedClip]
    dropped_short: int  # spans shorter than min_length that could not be widened


def merge_segments(segments: list[tuple[float, float]], gap: float) -> list[list[tuple[float, float]]]:
    """Group time-ordered (start, end) segments whose gaps are below `gap` seconds."""
    groups: list[list[tuple[float, float]]] = []
    for start, end in sorted(segments):
        if groups and start - groups[-1][-1][1] < gap:
            groups[-1].append((start, end))
        else:
            groups.append([(start, end)])
    return groups


def split_at_pauses(start: float, end: float, pauses: list[float], min_length: float, max_length: float) -> list[tuple[float, float]]:
    """Split [start, end] into pieces of at most max_length seconds, preferring the given
    pause times as split points; falls back to equal parts where no pause fits."""
    pieces = []
    cursor = start
    while end - cursor > max_length + EPS:
        fitting = [p for p in pauses if cursor + min_length <= p <= cursor + max_length and end - p >= min_length]
        if fitting:
            split = max(fitting)
        else:
            remaining = math.ceil((end - cursor) / max_length)
            split = cursor + (end - cursor) / remaining
        pieces.append((cursor, split))
        cursor = split
    pieces.append((cursor, end))
    return pieces


def _widen(start: float, end: float, min_length: float, lower: float, upper: float) -> tuple[float, float] | None:
    """Widen [start, end] to min_length around its centre within [lower, upper]; None if impossible."""
    if end - start >= min_length - EPS:
        return start, end
    if upper - lower < min_length - EPS:
        return None
    centre = (start + end) / 2
    new_start = min(max(lower, centre - min_length / 2), upper - min_length)
    return new_start, new_start + min_length


def plan_clips(
    duration: float,
    speech: list[tuple[float, float]],
    cuts: list[float],
    has_video: bool,
    config: PlannerConfig,
) -> Plan:
    """Plan clips over [0, duration] seconds from speech segments and shot cut times."""
    boundaries = [0.0] + sorted(c for c in cuts if EPS < c < duration - EPS) + [duration]
    shots = list(zip(boundaries[:-1], boundaries[1:])) if has_video else []
    mode = config.mode
    if not has_video:
        mode = "speech"
    elif not speech:
        mode = "shots"

    clips: list[PlannedClip] = []
    dropped = 0

    if mode in ("speech", "both"):
        for group in merge_segments(speech, config.merge_gap):
            region_start = max(0.0, group[0][0] - config.padding)
            region_end = min(duration, group[-1][1] + config.padding)
            pauses = [(a[1] + b[0]) / 2 for a, b in zip(group[:-1], group[1:])]
            # In "both" mode a speech region never crosses a cut: cut it into per-shot parts.
            parts = [(region_start, region_end, None)]
            if mode == "both":
                parts = []
                for shot_start, shot_end in shots:
                    lo, hi = max(region_start, shot_start), min(region_end, shot_end)
                    if hi - lo > EPS:
                        parts.append((lo, hi, (shot_start, shot_end)))
            crossed = len(parts) > 1
            origin = ClipOrigin.SPEECH_IN_SHOT if crossed else ClipOrigin.SPEECH
            for lo, hi, shot in parts:
                bound_lo, bound_hi = shot if shot else (0.0, duration)
                for piece_start, piece_end in split_at_pauses(lo, hi, pauses, config.min_length, config.max_length):
                    widened = _widen(piece_start, piece_end, config.min_length, bound_lo, bound_hi)
                    if widened is None:
                        dropped += 1
                        continue
                    clips.append(PlannedClip(widened[0], widened[1], origin))

    if mode == "shots" or mode == "both":
        for shot_start, shot_end in shots:
            if mode == "both" and any(s < shot_end - EPS and e > shot_start + EPS for s, e in speech):
                continue
            if shot_end - shot_start < config.min_length - EPS:
                dropped += 1
                continue
            for piece_start, piece_end in split_at_pauses(shot_start, shot_end, [], config.min_length, config.max_length):
                clips.append(PlannedClip(piece_start, piece_end, ClipOrigin.SHOT))

    clips = _dedupe(sorted(clips, key=lambda c: (c.start, c.end)))
    return Plan(clips=clips, dropped_short=dropped)


def _dedupe(clips: list[PlannedClip]) -> list[PlannedClip]:
    """Round to milliseconds (clip ids use ms) and drop exact repeats."""
    seen = set()
    unique = []
    for clip in clips:
        key = (round(clip.start, 3), round(clip.end, 3))
        if key in seen:
            continue
        seen.add(key)
        unique.append(PlannedClip(key[0], key[1], clip.origin))
    return unique
