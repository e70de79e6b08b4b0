"""Prefect flow for the judge stage: score annotations, aggregate per clip, route."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from merforge.agents.judge_stage import judge_workspace
from merforge.flows.pipeline import current_progress as _progress
from merforge.storage.workspace import Workspace


@task(name="judge-aggregate-route", cache_policy=NO_CACHE)
def judge_task(workspace_dir: str) -> dict:
    workspace = Workspace.open(workspace_dir)
    try:
        return judge_workspace(workspace, progress=_progress()).as_dict()
    finally:
        workspace.close()


@flow(name="judge")
def judge_flow(workspace_dir: str) -> dict:
    """Judge every annotation, build one consensus per clip and route it."""
    summary = judge_task(workspace_dir)
    lines = ["| route | clips |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(summary["routes"].items())]
    lines += ["", "| annotator | reliability (Dawid-Skene) | mean S_final |", "|---|---|---|"]
    lines += [f"| {a} | {r} | {summary['mean_s_final'].get(a, '')} |" for a, r in sorted(summary["reliabilities"].items())]
    create_markdown_artifact(key="judge-summary", markdown="\n".join(lines), description="merforge judge and routing")
    return summary
