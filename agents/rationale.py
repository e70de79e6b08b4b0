"""Rationale extraction: any free-form answer as numbered steps whose last one states the label.

Models answer in many shapes: numbered lists ("1.", "2)", "Step 3:"), bullet points,
"First ... Then ... Finally ..." prose, or plain paragraphs. `extract_steps` turns each
into "Step 1: ...", ..., "Step N: ..." and, given the label, makes sure the last step
states it. `extract_label` finds the label a prose answer settled on. Used when a JSON
answer has no steps (only a "reasoning" text) or the endpoint answers in prose.
"""

from __future__ import annotations

import re

from merforge.agents.base import numbered_steps, states_label
from merforge.agents.labels import LabelSpace

_LIST_MARKER = re.compile(r"^\s*(?:(?:step\s*)?\d+\s*[.):-]|[-*\u2022\u2023\u25e6]|#+\s*step\s*\d+\s*[.):-]?)\s+",
                          re.IGNORECASE)
_SEQUENCE_WORDS = (r"first(?:ly)?|second(?:ly)?|third(?:ly)?|next|then|after that|afterwards|also|moreover|"
                   r"finally|lastly|in conclusion|overall|therefore|thus|so")
_SEQUENCE_START = re.compile(rf"(?:(?<=^)|(?<=[.!?]\s)|(?<=\n))\s*(?=(?:{_SEQUENCE_WORDS})\b[ ,:])", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_FENCE = re.compile(r"```[a-zA-Z]*\s*|```")
_LABEL_LINE = re.compile(
    r"(?:final\s+)?(?:label|emotion|answer|classification|prediction)\s*(?:is|:|=|-)\s*"
    r"\**\s*[\"'`]?([A-Za-z][A-Za-z -]*)",
    re.IGNORECASE)


def _clean(step: str) -> str:
    step = re.sub(r"\*\*|__", "", step)  # markdown emphasis
    return re.sub(r"\s+", " ", step).strip()


def split_steps(text: str) -> list[str]:
    """The reasoning steps of a free-form answer, without their numbering.

    Lists (numbered or bulleted) split at their markers, continuation lines join the item
    above; prose with sequence words (First, Then, Finally, ...) splits before each of them;
    other prose splits into paragraphs, and a single paragraph into sentences.
    """
    text = _FENCE.sub("", text or "").strip()
    if not text:
        return []
    lines = [line for line in text.splitlines() if line.strip()]
    if sum(1 for line in lines if _LIST_MARKER.match(line)) >= 2:
        steps: list[str] = []
        current: list[str] | None = None
        for line in lines:
            if _LIST_MARKER.match(line):
                current = [_LIST_MARKER.sub("", line, count=1)]
                steps.append(current)  # type: ignore[arg-type]
            elif current is None:
                # A lead-in before the list ("Here is my reasoning:") is not a step.
                if not line.rstrip().endswith(":"):
                    steps.append([line])
            elif _LABEL_LINE.match(line.strip()) or re.match(r"\s*(therefore|so|thus|overall)\b", line, re.I):
                current = None  # a closing line after the list is a step of its own
                steps.append([line])
            else:
                current.append(line)
        return [s for s in (_clean(" ".join(parts)) for parts in steps) if s]
    if len(_SEQUENCE_START.findall(text)) >= 2:
        pieces = _SEQUENCE_START.split(text)
        return [s for s in (_clean(p) for p in pieces) if s]
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    if len(paragraphs) >= 2:
        return [_clean(p) for p in paragraphs]
    return [s for s in (_clean(p) for p in _SENTENCE_END.split(text)) if s]


def extract_steps(text: str, label: str | None = None, space: LabelSpace | None = None) -> tuple[str, ...]:
    """'Step 1: ...', ..., 'Step N: ...' from a free-form answer; with a label, the last step states it."""
    steps = list(numbered_steps(split_steps(text)))
    if label:
        stated = states_label(steps[-1], label, space) if steps and space else bool(
            steps and label.lower() in steps[-1].lower())
        if not stated:
            steps.append(f"Step {len(steps) + 1}: Therefore the label is {label}.")
    return tuple(steps)


def extract_label(text: str, space: LabelSpace) -> str | None:
    """The label a prose answer settled on: the last "label: X" / "emotion is X" line, else the
    label named in the last step; None when neither names a label of the space."""
    for match in reversed(list(_LABEL_LINE.finditer(text or ""))):
        label = space.normalise(match.group(1).strip().split("\n")[0][:40])
        if label:
            return label
    steps = split_steps(text)
    if steps:
        return space.normalise(steps[-1])
    return None
