"""Prefect flow for a release: build the versioned dataset folder from the workspace store."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from merforge.storage.release import build_release
from merforge.storage.workspace import Workspace


@task(name="build-release", cache_policy=NO_CACHE)
def release_task(workspace_dir: str, version: str) -> dict:
    workspace = Workspace.open(workspace_dir)
    try:
        result = build_release(workspace, version)
    finally:
        workspace.close()
    return {"version": result.version, "path": str(result.path), "counts": result.counts,
            "excluded": result.excluded, "leakage": result.leakage,
            "diff": {k: len(v) if isinstance(v, list) else v for k, v in result.diff.items()}}


@flow(name="release")
def release_flow(workspace_dir: str, version: str) -> dict:
    """Build releases/<version> (labels, splits, media, card, manifest, diff)."""
    summary = release_task(workspace_dir, version)
    lines = ["| split | clips |", "|---|---|"] + [f"| {s} | {n} |" for s, n in summary["counts"].items()]
    lines += ["", f"left out: {summary['excluded'] or 'nothing'}; diff: {summary['diff']}"]
    create_markdown_artifact(key="release-summary", markdown="\n".join(lines), description="merforge release")
    return summary
