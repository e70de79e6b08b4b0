"""Prefect flow for annotation: fan-out to the annotator agents over every preprocessed clip."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from merforge.agents.annotate import annotate_workspace
from merforge.flows.pipeline import current_progress as _progress
from merforge.storage.workspace import Workspace


@task(name="annotate-clips", cache_policy=NO_CACHE)
def annotate_task(workspace_dir: str, force: bool) -> dict:
    workspace = Workspace.open(workspace_dir)
    try:
        return annotate_workspace(workspace, force=force, progress=_progress()).as_dict()
    finally:
        workspace.close()


@flow(name="annotate")
def annotate_flow(workspace_dir: str, force: bool = False) -> dict:
    """Annotate every preprocessed clip whose annotations are missing or out of date."""
    summary = annotate_task(workspace_dir, force)
    lines = ["| what | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in summary.items()]
    create_markdown_artifact(key="annotate-summary", markdown="\n".join(lines), description="merforge annotation")
    return summary
