"""Prefect flow for preprocessing: one task per source (its clips share diarization and prosody)."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from merforge.flows.pipeline import preprocess_one
from merforge.preprocess.features import PreprocessOutcome, PreprocessReport, needs_preprocessing, summarise
from merforge.storage.workspace import Workspace


@task(name="preprocess-source", cache_policy=NO_CACHE)
def preprocess_source_task(workspace_dir: str, source_id: str, clip_ids: list[str]) -> dict:
    return preprocess_one(workspace_dir, source_id, clip_ids)


@flow(name="preprocess")
def preprocess_flow(workspace_dir: str, force: bool = False) -> dict:
    """ASR, speakers, prosody, faces and the aligned timeline for every clip that needs them."""
    workspace = Workspace.open(workspace_dir)
    try:
        plan: dict[str, list[str]] = {}
        skipped = []
        for clip in workspace.store.iter_clips():
            if force or needs_preprocessing(workspace, clip):
                plan.setdefault(clip.source_id, []).append(clip.id)
            else:
                skipped.append(PreprocessOutcome(clip.id, "", "skipped"))
    finally:
        workspace.close()
    report = PreprocessReport(outcomes=list(skipped))
    for source_id, clip_ids in plan.items():
        result = preprocess_source_task(workspace_dir, source_id, clip_ids)
        report.outcomes += [PreprocessOutcome(**o) for o in result["outcomes"]]
        for key, value in result["timings"].items():
            report.timings[key] = report.timings.get(key, 0.0) + value
    lines = ["| part | seconds |", "|---|---|"] + [f"| {k} | {v:.2f} |" for k, v in sorted(report.timings.items())]
    failures = [f"- {o.clip_id}: {o.reason}" for o in report.outcomes if o.state == "failed"]
    create_markdown_artifact(key="preprocess-summary", description="merforge preprocessing",
                             markdown="\n".join(lines + ["", "failures:" if failures else "no failures"] + failures))
    return summarise(report)


