"""Prefect flows for ingest and sampling: thin wrappers over the library functions.

Tasks receive the workspace folder and ids (not live objects), so they run the same
under any task runner. Progress reporting for an interactive run is handed over
through `merforge.flows.pipeline.progress_bridge`, which only the CLI sets.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from merforge.flows.pipeline import ingest_inputs, sample_one
from merforge.preprocess.sampling import SampleOutcome, SampleReport, needs_sampling
from merforge.storage.records import SourceStatus
from merforge.storage.workspace import Workspace


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(workspace_dir: str, inputs: list[str]) -> dict[str, int]:
    return ingest_inputs(workspace_dir, inputs)["counts"]


@task(name="sample-source", cache_policy=NO_CACHE)
def sample_source_task(workspace_dir: str, source_id: str) -> dict:
    return sample_one(workspace_dir, source_id)


@flow(name="ingest")
def ingest_flow(workspace_dir: str, inputs: list[str]) -> dict[str, int]:
    return ingest_task(workspace_dir, inputs)


@flow(name="sample")
def sample_flow(workspace_dir: str, force: bool = False) -> dict:
    """Sample every usable source that needs it; one task per source."""
    workspace = Workspace.open(workspace_dir)
    try:
        sources = workspace.store.sources(SourceStatus.OK)
        todo = [s for s in sources if force or needs_sampling(workspace, s)]
        skipped = [SampleOutcome(s.id, s.path, "skipped") for s in sources if s not in todo]
    finally:
        workspace.close()
    outcomes = [SampleOutcome(**sample_source_task(workspace_dir, s.id)) for s in todo]
    report = SampleReport(outcomes=outcomes + skipped)
    create_markdown_artifact(key="sample-summary", markdown=sample_markdown(report), description="merforge sampling")
    return {"done": report.count("done"), "failed": report.count("failed"), "skipped": report.count("skipped"),
            "clips": sum(o.clips for o in report.outcomes)}


def sample_markdown(report: SampleReport) -> str:
    lines = ["| file | state | clips | reason |", "|---|---|---|---|"]
    for o in report.outcomes:
        lines.append(f"| {Path(o.path).name} | {o.state} | {o.clips} | {o.reason or '; '.join(o.warnings)} |")
    return "\n".join(lines)
