"""Prefect flow for preprocessing: one task per group of `preprocess.features.plan_groups` (a
long source alone: its clips share diarization and prosody; short sources together: their
speech shares ASR windows)."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from merforge.flows.pipeline import plan_preprocessing, preprocess_one
from merforge.preprocess.features import PreprocessOutcome, PreprocessReport, summarise


@task(name="preprocess-sources", cache_policy=NO_CACHE)
def preprocess_group_task(workspace_dir: str, group: list[tuple[str, list[str]]]) -> dict:
    return preprocess_one(workspace_dir, group)


@flow(name="preprocess")
def preprocess_flow(workspace_dir: str, force: bool = False) -> dict:
    """ASR, speakers, prosody, faces and the aligned timeline for every clip that needs them."""
    groups, skipped = plan_preprocessing(workspace_dir, force)
    report = PreprocessReport(outcomes=[PreprocessOutcome(clip_id, "", "skipped") for clip_id in skipped])
    for group in groups:
        result = preprocess_group_task(workspace_dir, group)
        report.outcomes += [PreprocessOutcome(**o) for o in result["outcomes"]]
        for key, value in result["timings"].items():
            report.timings[key] = report.timings.get(key, 0.0) + value
    lines = ["| part | seconds |", "|---|---|"] + [f"| {k} | {v:.2f} |" for k, v in sorted(report.timings.items())]
    failures = [f"- {o.clip_id}: {o.reason}" for o in report.outcomes if o.state == "failed"]
    create_markdown_artifact(key="preprocess-summary", description="merforge preprocessing",
                             markdown="\n".join(lines + ["", "failures:" if failures else "no failures"] + failures))
    return summarise(report)


