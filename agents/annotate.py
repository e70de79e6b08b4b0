"""The annotation stage: every configured agent on every preprocessed clip.

`annotate_workspace` loads each clip's evidence, fans out to the configured agents
(offline specialists by name, OpenAI-compatible endpoints by their configured name),
and commits each clip's annotations with its stage status (including what the cascade
ran or skipped) as soon as that clip is done, so an interrupted run keeps finished
clips. Clips whose annotations are current (same annotate settings, same features) are
skipped; LLM calls also go through an on-disk request cache, so a re-run sends no
request twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from merforge.agents.evidence import detect_injection, load_clip_evidence
from merforge.agents.fanout import ClipResult, annotate_clips
from merforge.agents.labels import get_space
from merforge.errors import ConfigError
from merforge.preprocess.features import STAGE as PREPROCESS_STAGE
from merforge.preprocess.features import stage_hash as preprocess_stage_hash
from merforge.progress import NoProgress, Progress
from merforge.storage.records import AnnotationStatus, StageState, StageStatus
from merforge.storage.workspace import Workspace

STAGE = "annotate"
SPECIALISTS = ("text", "acoustic", "visual")


@dataclass
class AnnotateReport:
    clips: int = 0
    skipped: int = 0
    statuses: Counter = field(default_factory=Counter)  # annotation status -> count
    calls: int = 0  # requests actually sent to endpoints (cache misses)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    cascade_skipped_calls: int = 0
    failures: list = field(default_factory=list)  # {"item", "annotator", "status", "reason"} of answers not OK

    def as_dict(self) -> dict:
        return {"clips": self.clips, "skipped": self.skipped, "statuses": dict(self.statuses), "calls": self.calls,
                "tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "cost_usd": round(self.cost_usd, 6),
                "cascade_skipped_calls": self.cascade_skipped_calls, "failures": list(self.failures)}


def stage_hash(workspace: Workspace) -> str:
    """The annotate config, the preprocessing it read, and the bytes of the acoustic
    model file (a model retrained in place at the same path re-annotates the clips)."""
    digest = ""
    if "acoustic" in workspace.config.annotate.agents:
        from merforge.agents.speech_emotion import SPEECH_EMOTION_MODEL_PATH

        path = acoustic_model_path(workspace) or SPEECH_EMOTION_MODEL_PATH
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        except OSError:
            digest = "missing"  # the agent itself says what is wrong when it loads
    return workspace.config.annotate_hash() + preprocess_stage_hash(workspace)[:8] + digest


def acoustic_model_path(workspace: Workspace) -> Path | None:
    """annotate.acoustic_model resolved against the workspace; None: the shipped model."""
    configured = workspace.config.annotate.acoustic_model
    if not configured:
        return None
    path = Path(configured).expanduser()
    return path if path.is_absolute() else workspace.root / path


def build_agents(workspace: Workspace) -> list:
    """The agents named in annotate.agents, in that order."""
    config = workspace.config.annotate
    endpoints = {e.name: e for e in config.endpoints}
    agents = []
    unknown = [n for n in config.agents if n not in SPECIALISTS and n not in endpoints]
    if unknown:
        raise ConfigError(f"annotate.agents names {', '.join(map(repr, unknown))}, which is neither an offline agent "
                          f"({', '.join(SPECIALISTS)}) nor the name of an [[annotate.endpoints]] entry "
                          f"({', '.join(endpoints) or 'none configured'})")
    specialist_names = [n for n in config.agents if n in SPECIALISTS]
    if specialist_names:
        from merforge.agents.specialists import specialist_agents

        agents += specialist_agents(specialist_names, acoustic_model=acoustic_model_path(workspace))
    for name in config.agents:
        if name in endpoints:
            from merforge.agents.openai_agent import OpenAIAgent

            pool = None
            if config.few_shot and config.few_shot_pool:
                pool = Path(config.few_shot_pool)
                pool = pool if pool.is_absolute() else workspace.root / pool  # relative to the workspace
            agents.append(OpenAIAgent(endpoints[name], cache_dir=workspace.root / "cache" / "llm",
                                      few_shot_pool=pool, annotate_config=config))
    return agents


def needs_annotation(workspace: Workspace, clip_id: str, current: str) -> bool:
    status = workspace.store.get_status(clip_id, STAGE)
    return not (status and status.state == StageState.DONE and status.config_hash == current)


def clips_to_annotate(workspace: Workspace, force: bool = False) -> tuple[list[str], int]:
    """Ids of the preprocessed clips whose annotations are missing or out of date, and how many are current."""
    current = stage_hash(workspace)
    preprocessed = {s.item_id for s in workspace.store.statuses(PREPROCESS_STAGE, StageState.DONE)}
    clips = [c.id for c in workspace.store.iter_clips() if c.id in preprocessed]
    todo = [c for c in clips if force or needs_annotation(workspace, c, current)]
    return todo, len(clips) - len(todo)


def annotate_workspace(workspace: Workspace, force: bool = False, progress: Progress | None = None,
                       clip_ids: Collection[str] | None = None) -> AnnotateReport:
    """Annotate every preprocessed clip whose annotations are missing or out of date.

    `clip_ids` restricts the run to those clips (a scale-out worker's share of the work).
    """
    progress = progress or NoProgress()
    space = get_space(workspace.config.annotate.label_space)
    agents = build_agents(workspace)
    current = stage_hash(workspace)
    report = AnnotateReport()
    preprocessed = {s.item_id for s in workspace.store.statuses(PREPROCESS_STAGE, StageState.DONE)}
    clips = [c for c in workspace.store.iter_clips() if c.id in preprocessed]
    if clip_ids is not None:
        wanted = set(clip_ids)
        clips = [c for c in clips if c.id in wanted]
    todo = [c for c in clips if force or needs_annotation(workspace, c.id, current)]
    report.skipped = len(clips) - len(todo)
    evidences = [load_clip_evidence(workspace, clip) for clip in todo]
    injections = {e.clip.id: detect_injection((e.transcript.text or " ".join(w.text for w in e.transcript.words))
                                              + (" " + e.transcript.translation if e.transcript.translation else ""))
                  for e in evidences}
    progress.start("annotate", len(todo))

    def save(result: ClipResult) -> None:
        annotations = []
        for annotation in result.annotations:
            reason = injections.get(result.clip_id, "")
            if reason and not annotation.injection_flag:
                annotation = annotation.model_copy(update={"injection_flag": True, "injection_reason": reason})
            annotations.append(annotation)
            report.statuses[annotation.status.value] += 1
            if annotation.status not in (AnnotationStatus.OK, AnnotationStatus.ABSTAINED):  # abstaining is no failure
                report.failures.append({"item": result.clip_id, "annotator": annotation.annotator_id,
                                        "status": annotation.status.value, "reason": annotation.reason})
            report.tokens_in += annotation.tokens_in
            report.tokens_out += annotation.tokens_out
            report.cost_usd += annotation.cost_usd
            if annotation.endpoint not in ("", "offline") and not annotation.cached and annotation.status != AnnotationStatus.ERROR:
                report.calls += 1
        report.cascade_skipped_calls += len(result.cascade.get("skipped", []))
        workspace.store.save_annotations(result.clip_id, annotations, StageStatus(
            item_id=result.clip_id, stage=STAGE, state=StageState.DONE, config_hash=current,
            details={"cascade": result.cascade, "labels": {a.annotator_id: a.label for a in annotations}}))
        report.clips += 1
        progress.advance(1)

    asyncio.run(annotate_clips(evidences, agents, space, workspace.config.annotate, on_result=save))
    progress.finish()
    return report
