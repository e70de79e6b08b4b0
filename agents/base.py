"""The annotator contract: every agent returns an Annotation for a ClipEvidence.

`AnnotatorAgent` is the small interface all agents share (offline specialists and LLM
endpoints). `finalise` enforces the contract on whatever an agent produced: the label
must be in the label space (else the answer is INVALID, never dropped), probabilities
are normalised over the space, the last rationale step states the label, evidence
lies inside the clip, intensity/valence/arousal are in range.
"""

from __future__ import annotations

import re
from typing import Protocol

from merforge.agents.evidence import ClipEvidence
from merforge.agents.labels import LabelSpace
from merforge.storage.records import Annotation, AnnotationStatus, EvidenceItem


class AnnotatorAgent(Protocol):
    id: str
    cost_rank: int  # cascade order: 0 for offline specialists, higher for paid endpoints

    async def annotate(self, evidence: ClipEvidence, space: LabelSpace) -> Annotation:
        """One answer for one clip; failures come back as an Annotation with a status, not an exception."""


STEP_PREFIX = re.compile(r"^\s*step\s*\d+\s*[:.)-]\s*", re.IGNORECASE)


def numbered_steps(steps: list[str]) -> tuple[str, ...]:
    """'Step 1: ...', 'Step 2: ...' whatever numbering the input had."""
    cleaned = [STEP_PREFIX.sub("", s).strip() for s in steps if s and s.strip()]
    return tuple(f"Step {i}: {text}" for i, text in enumerate(cleaned, start=1))


def states_label(step: str, label: str, space: LabelSpace) -> bool:
    text = STEP_PREFIX.sub("", step).lower()
    return any(space.normalise(token) == label for token in re.findall(r"[a-z]+(?: [a-z]+)?", text)) or label in text


def _clamp(value: float | None, low: float, high: float) -> float | None:
    if value is None:
        return None
    return min(high, max(low, float(value)))


def finalise(annotation: Annotation, evidence: ClipEvidence, space: LabelSpace) -> Annotation:
    """Validate and normalise an agent's answer against the contract (see module docstring)."""
    if annotation.status != AnnotationStatus.OK:
        return annotation
    problems: list[str] = []
    label = space.normalise(annotation.label) if annotation.label else None
    if label is None:
        problems.append(f"label {annotation.label!r} is not in the {space.name} label space ({', '.join(space.labels)})")
    probabilities: dict[str, float] = {}
    for raw, p in annotation.label_probabilities.items():
        mapped = space.normalise(raw)
        if mapped is None:
            problems.append(f"probability given for {raw!r}, which is not in the label space")
            continue
        probabilities[mapped] = probabilities.get(mapped, 0.0) + max(0.0, float(p))
    if label and not probabilities:
        probabilities = {label: 1.0}
    total = sum(probabilities.values())
    if total > 0:
        probabilities = {k: round(v / total, 4) for k, v in probabilities.items()}
    labels = tuple(dict.fromkeys([label] + [m for m in (space.normalise(x) for x in annotation.labels) if m]
                                 if label else []))
    steps = numbered_steps(list(annotation.steps))
    if label and steps and not states_label(steps[-1], label, space):
        steps = steps + (f"Step {len(steps) + 1}: Therefore the label is {label}.",)
    if label and not steps:
        steps = (f"Step 1: Therefore the label is {label}.",)
    evidence_items = []
    for item in annotation.evidence:
        start = _clamp(item.start, evidence.start, evidence.end)
        end = _clamp(item.end, start, evidence.end)
        evidence_items.append(item.model_copy(update={"start": round(start, 3), "end": round(end, 3)}))
    update = {
        "label": label,
        "labels": labels,
        "label_probabilities": probabilities,
        "steps": steps,
        "evidence": tuple(evidence_items),
        "intensity": _clamp(annotation.intensity, 0.0, 1.0),
        "valence": _clamp(annotation.valence, -1.0, 1.0),
        "arousal": _clamp(annotation.arousal, -1.0, 1.0),
        "label_space": space.name,
    }
    if problems:
        update["status"] = AnnotationStatus.INVALID
        update["reason"] = "; ".join(problems)
    return annotation.model_copy(update=update)


def relative_evidence(modality: str, start: float, end: float, claim: str, feature: str = "",
                      value: float | None = None) -> EvidenceItem:
    return EvidenceItem(modality=modality, start=round(start, 3), end=round(end, 3), claim=claim, feature=feature,
                        value=None if value is None else round(float(value), 4))
