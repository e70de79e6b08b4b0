"""Prefect flow for the agreement report: write JSON + HTML, publish a Markdown artifact."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from merforge.storage.report import REPORT_HTML, REPORT_JSON, render_markdown
from merforge.storage.workspace import Workspace


@task(name="agreement-report", cache_policy=NO_CACHE)
def report_task(workspace_dir: str, out_dir: str | None = None) -> dict:
    import json

    from merforge.storage.report import write_report

    workspace = Workspace.open(workspace_dir)
    try:
        json_path, html_path = write_report(workspace, out_dir)
    finally:
        workspace.close()
    return {"json": str(json_path), "html": str(html_path), "report": json.loads(json_path.read_text())}


@flow(name="report")
def report_flow(workspace_dir: str, out_dir: str | None = None) -> dict:
    """Write <out_dir or workspace/reports>/agreement_report.{json,html} and a markdown artifact."""
    result = report_task(workspace_dir, out_dir)
    create_markdown_artifact(key="agreement-report", markdown=render_markdown(result["report"]),
                             description=f"merforge agreement report ({REPORT_JSON}, {REPORT_HTML})")
    return result
