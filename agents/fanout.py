"""Fan-out: every configured agent on every clip, concurrently, with an optional cascade.

Without the cascade all agents answer each clip at once. With it, agents run in
groups of increasing `cost_rank` (offline specialists first, paid endpoints later); a
group is skipped when the agents that already answered agree on a label (share of
valid answers >= cascade_min_agreement) with enough confidence (mean probability of
that label >= cascade_min_confidence). What ran, what was skipped and why is recorded
per clip.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from merforge.agents.base import AnnotatorAgent, finalise
from merforge.agents.evidence import ClipEvidence
from merforge.agents.labels import LabelSpace
from merforge.errors import resource_error
from merforge.storage.config import AnnotateConfig
from merforge.storage.records import Annotation, AnnotationStatus


@dataclass
class ClipResult:
    clip_id: str
    annotations: list[Annotation] = field(default_factory=list)
    cascade: dict = field(default_factory=dict)  # {"ran": [...], "skipped": [...], "reason": "..."}


def agreement(annotations: Sequence[Annotation]) -> tuple[str | None, float, float]:
    """(top label, share of valid answers giving it, mean probability of it among all valid answers)."""
    # Agents that abstained (no words, no voice, no face) hold no opinion: they do not vote.
    valid = [a for a in annotations if a.status == AnnotationStatus.OK and a.label]
    if not valid:
        return None, 0.0, 0.0
    label, votes = Counter(a.label for a in valid).most_common(1)[0]
    confidence = sum(a.label_probabilities.get(label, 0.0) for a in valid) / len(valid)
    return label, votes / len(valid), confidence


async def _run(agent: AnnotatorAgent, evidence: ClipEvidence, space: LabelSpace) -> Annotation:
    try:
        annotation = await agent.annotate(evidence, space)
    except Exception as error:  # an agent bug must not lose the other agents' answers
        if resource_error(error):  # a full disk is not the agent's fault: stop the run
            raise resource_error(error) from error
        from merforge.storage.records import annotation_id

        annotation = Annotation(id=annotation_id(evidence.clip.id, agent.id, "error"), clip_id=evidence.clip.id,
                                annotator_id=agent.id, status=AnnotationStatus.ERROR,
                                reason=f"agent failed: {type(error).__name__}: {error}", label_space=space.name)
    return finalise(annotation, evidence, space)


async def annotate_clip(evidence: ClipEvidence, agents: Sequence[AnnotatorAgent], space: LabelSpace,
                        config: AnnotateConfig) -> ClipResult:
    result = ClipResult(clip_id=evidence.clip.id)
    if not config.cascade:
        result.annotations = list(await asyncio.gather(*(_run(a, evidence, space) for a in agents)))
        result.cascade = {"ran": [a.id for a in agents], "skipped": [], "reason": "cascade off"}
        return result
    ranks = sorted({a.cost_rank for a in agents})
    ran: list[str] = []
    skipped: list[str] = []
    reason = "every group ran"
    for rank in ranks:
        group = [a for a in agents if a.cost_rank == rank]
        if result.annotations:
            label, share, confidence = agreement(result.annotations)
            if label and share >= config.cascade_min_agreement and confidence >= config.cascade_min_confidence:
                skipped += [a.id for a in agents if a.cost_rank >= rank]
                reason = (f"cheaper agents agreed on {label!r} ({share:.0%} of answers, mean probability "
                          f"{confidence:.2f}); skipped rank >= {rank}")
                break
        result.annotations += await asyncio.gather(*(_run(a, evidence, space) for a in group))
        ran += [a.id for a in group]
    result.cascade = {"ran": ran, "skipped": skipped, "reason": reason}
    return result


async def annotate_clips(
    evidences: Sequence[ClipEvidence] | Callable[[], Sequence[ClipEvidence]],
    agents: Sequence[AnnotatorAgent],
    space: LabelSpace,
    config: AnnotateConfig,
    on_result: Callable[[ClipResult], Awaitable[None] | None] | None = None,
) -> list[ClipResult]:
    """Annotate clips with at most `config.concurrency` clips in flight.

    `on_result` is called as each clip completes (e.g. to commit it), so an interrupted
    run keeps every clip already finished.
    """
    items = evidences() if callable(evidences) else evidences
    gate = asyncio.Semaphore(config.concurrency)
    results: list[ClipResult] = []

    async def one(evidence: ClipEvidence) -> None:
        async with gate:
            result = await annotate_clip(evidence, agents, space, config)
        results.append(result)
        if on_result is not None:
            maybe = on_result(result)
            if asyncio.iscoroutine(maybe):
                await maybe

    await asyncio.gather(*(one(e) for e in items))
    return results
