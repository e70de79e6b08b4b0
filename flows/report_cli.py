"""`merforge report`: write the agreement report (JSON + HTML) for a workspace.

Register in flows/cli.py with:
    app.command(name="report")(report_command)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from merforge.errors import MerforgeError

console = Console()
err_console = Console(stderr=True)


def report_command(
    workspace: Annotated[Path, typer.Option("--workspace", "-w", envvar="MERFORGE_WORKSPACE",
                                            help="Workspace folder (made by `merforge init`).")] = Path("."),
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder for agreement_report.json and "
                                                   ".html (default: <workspace>/reports).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit with code 2 when any check fails "
                                         "(for CI).")] = False,
) -> None:
    """Agreement between annotator agents, pipeline and reviewers, with confidence intervals and
    pass/fail against report.kappa_threshold and report.icc_threshold. The verdict is printed and
    written into the report; exit code 0 unless --strict and the report fails."""
    from merforge.storage.report import agreement_report, save_report
    from merforge.storage.workspace import Workspace

    try:
        ws = Workspace.open(workspace)
        try:
            report = agreement_report(ws)
        finally:
            ws.close()
    except MerforgeError as error:
        err_console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(code=1)
    out_dir = output if output is not None else ws.root / "reports"
    json_path, html_path = save_report(report, out_dir)
    verdict = "[green]PASS[/]" if report["passed"] else "[red]FAIL[/]"
    console.print(f"agreement {verdict}: {len(report['checks'])} checks, {len(report['failures'])} failing")
    for failure in report["failures"]:
        value = "n/a" if failure["value"] is None else f"{failure['value']:.3f}"
        console.print(f"  {failure['section']}: {failure['subject']} {failure['statistic']} {value} "
                      f"<= {failure['threshold']} (n={failure['n']})", markup=False)
    console.print(f"wrote {json_path}\nwrote {html_path}", markup=False)
    if strict and not report["passed"]:
        raise typer.Exit(code=2)
