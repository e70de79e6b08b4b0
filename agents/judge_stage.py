"""The judge stage: score every annotation, build one consensus per clip, route it.

Order, because each step needs the one before:
  1. Dawid-Skene over every annotated clip of the run estimates each annotator's
     accuracy; these are the reliabilities in the leave-one-out part of S_rec.
  2. The judge scores each annotation (evidence-grounded by default, or an LLM judge):
     S_rec, S_reason, S_cot, S_final, with the checked claims and reasons, and a
     sufficiency verdict.
  3. Aggregation builds the consensus per clip (majority, S_final-weighted and
     Dawid-Skene votes, distribution, confidence, entropy, cross-modal conflict).
  4. Routing sends each clip to auto-accept, review or audit, with reasons and a
     review priority.
Each clip's scores and consensus are committed together with its stage status. The
whole run is re-judged each time (Dawid-Skene is a property of the run, not of one
clip); at ~30 s per 100,000 clips that is cheaper than tracking what changed.
When reviews exist, `calibration_report` fits confidence to P(reviewer agrees).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from merforge.agents.aggregate import DawidSkene, build_consensus, tabulate
from merforge.agents.annotate import STAGE as ANNOTATE_STAGE
from merforge.agents.evidence import load_clip_evidence
from merforge.agents.judge import ClipFacts, judge_clip
from merforge.agents.labels import get_space
from merforge.errors import ConfigError
from merforge.progress import NoProgress, Progress
from merforge.storage.records import Annotation, JudgeScores, StageState, StageStatus
from merforge.storage.workspace import Workspace

STAGE = "judge"


@dataclass
class JudgeReport:
    clips: int = 0
    annotations: int = 0
    routes: Counter = field(default_factory=Counter)
    reliabilities: dict[str, float] = field(default_factory=dict)
    mean_s_final: dict[str, float] = field(default_factory=dict)  # per annotator
    judge_status: Counter = field(default_factory=Counter)
    abstained: Counter = field(default_factory=Counter)  # per annotator: answers with nothing to judge
    calibrated: bool = False  # routed with <workspace>/calibration.json

    def as_dict(self) -> dict:
        return {"clips": self.clips, "annotations": self.annotations, "routes": dict(self.routes),
                "abstained": dict(self.abstained), "calibrated": self.calibrated,
                "reliabilities": {k: round(v, 3) for k, v in self.reliabilities.items()},
                "mean_s_final": {k: round(v, 3) for k, v in self.mean_s_final.items()},
                "judge_status": dict(self.judge_status)}


def annotator_reliabilities(annotations_by_clip: dict[str, list[Annotation]], space) -> dict[str, float]:
    """Dawid-Skene accuracy per annotator over the run (annotators never valid: 0)."""
    table = tabulate(annotations_by_clip, None, space)
    if not table.clip_ids or not table.annotator_ids:
        return {}
    model = DawidSkene().fit(table.matrix, table.n_labels)
    return {annotator: (0.0 if np.isnan(acc) else float(acc))
            for annotator, acc in zip(table.annotator_ids, model.accuracies_)}


def _llm_scores(workspace: Workspace, annotations_by_clip, evidences, space) -> dict[str, list[JudgeScores]]:
    from merforge.agents.llm_judge import LLMJudge

    config = workspace.config
    endpoints = {e.name: e for e in config.annotate.endpoints}
    if config.judge.llm_endpoint not in endpoints:
        raise ConfigError(f"judge.backend = 'llm' needs judge.llm_endpoint to name an [[annotate.endpoints]] entry; "
                          f"got {config.judge.llm_endpoint!r} (configured: {', '.join(endpoints) or 'none'})")
    judge = LLMJudge(endpoints[config.judge.llm_endpoint], workspace.root / "cache" / "llm",
                     max_key_frames=config.annotate.max_key_frames, weights=config.judge.weights)

    async def run() -> dict[str, list[JudgeScores]]:
        gate = asyncio.Semaphore(config.annotate.concurrency)

        async def one(annotation: Annotation) -> JudgeScores:
            async with gate:
                return await judge.judge(annotation, evidences[annotation.clip_id], space)

        results = {}
        for clip_id, annotations in annotations_by_clip.items():
            results[clip_id] = list(await asyncio.gather(*(one(a) for a in annotations)))
        await judge.aclose()
        return results

    return asyncio.run(run())


def judge_workspace(workspace: Workspace, progress: Progress | None = None) -> JudgeReport:
    """Judge, aggregate and route every annotated clip (see the module docstring)."""
    progress = progress or NoProgress()
    config = workspace.config
    space = get_space(config.annotate.label_space)
    store = workspace.store
    report = JudgeReport()
    annotated = {s.item_id for s in store.statuses(ANNOTATE_STAGE, StageState.DONE)}
    clips = [c for c in store.iter_clips() if c.id in annotated]
    annotations_by_clip: dict[str, list[Annotation]] = {c.id: [] for c in clips}
    for annotation in store.annotations():
        if annotation.clip_id in annotations_by_clip:
            annotations_by_clip[annotation.clip_id].append(annotation)
    report.reliabilities = annotator_reliabilities(annotations_by_clip, space)

    progress.start("judge", len(clips))
    evidences = {c.id: load_clip_evidence(workspace, c) for c in clips}
    if config.judge.backend == "llm":
        scores_by_clip = _llm_scores(workspace, annotations_by_clip, evidences, space)
    else:
        scores_by_clip = {}
        for clip in clips:
            facts = ClipFacts.from_evidence(evidences[clip.id])
            scores_by_clip[clip.id] = judge_clip(annotations_by_clip[clip.id], facts, space, config.judge.weights,
                                                 report.reliabilities, config.judge.sufficiency)
            progress.advance(1)
    scores_by_annotation = {s.annotation_id: s for scores in scores_by_clip.values() for s in scores}
    from merforge.agents.calibrate_stage import load_calibration

    calibration = load_calibration(workspace)
    report.calibrated = calibration is not None
    consensus = build_consensus(annotations_by_clip, scores_by_annotation, space, config.route, route=True,
                                calibration=calibration)

    judge_hash = config.judge_hash()
    finals: dict[str, list[float]] = {}
    for clip in clips:
        scores = scores_by_clip.get(clip.id, [])
        for s in scores:
            report.judge_status[s.status] += 1
            if s.status == "abstained":
                report.abstained[s.annotator_id] += 1
            if s.s_final is not None:
                finals.setdefault(s.annotator_id, []).append(s.s_final)
        decided = consensus[clip.id]
        report.routes[decided.route.value] += 1
        store.save_judgement(clip.id, scores, decided, StageStatus(
            item_id=clip.id, stage=STAGE, state=StageState.DONE, config_hash=judge_hash,
            details={"route": decided.route.value, "label": decided.label, "reasons": list(decided.route_reasons)}))
        report.clips += 1
        report.annotations += len(scores)
    report.mean_s_final = {k: float(np.mean(v)) for k, v in finals.items()}
    progress.finish()
    return report


def calibration_report(workspace: Workspace) -> dict | None:
    """Fit consensus confidence to P(reviewer agrees) from the reviews so far (isotonic):
    ECE before/after and the auto-accept threshold reaching route.target_precision with
    the fewest reviews. None until reviews with a decision on a label exist."""
    from merforge.agents.calibration import fit_calibration, threshold_for_precision
    from merforge.storage.records import ReviewDecision

    try:
        from merforge.storage.reviews import ReviewStore
    except ImportError:
        return None
    reviews = ReviewStore(workspace.store, workspace.config.review).reviews()
    pairs = []
    for review in reviews:
        if review.decision not in (ReviewDecision.ACCEPT, ReviewDecision.CORRECT):
            continue
        decided = workspace.store.consensus(review.clip_id)
        if decided is None or decided.label is None:
            continue
        agreed = review.decision == ReviewDecision.ACCEPT or review.label == decided.label
        pairs.append((decided.confidence, agreed))
    if len(pairs) < 10:
        return None
    confidence = np.array([p[0] for p in pairs])
    agreed = np.array([p[1] for p in pairs], dtype=bool)
    calibration = fit_calibration(confidence, agreed)
    threshold = threshold_for_precision(confidence, agreed, workspace.config.route.target_precision)
    return {"reviews": len(pairs), "agreement": float(agreed.mean()),
            "ece_before": calibration.ece_before, "ece_after": calibration.ece_after,
            "threshold": threshold[0], "precision": threshold[1], "reviews_needed": threshold[2],
            "coverage": threshold[3]}
