"""`merforge release --version X` and `merforge evaluate --release DIR --predictions FILE`.

Register in flows/cli.py with:
    app.command("release")(release_command)
    app.command("evaluate")(evaluate_command)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from merforge.errors import MerforgeError

console = Console()
err_console = Console(stderr=True)

WORKSPACE_ENV = "MERFORGE_WORKSPACE"


def _fail(error: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {error}")
    raise typer.Exit(code=1)


def release_command(
    version: Annotated[str, typer.Option("--version", help="Release version; becomes releases/<version>.")],
    workspace: Annotated[Path, typer.Option("--workspace", "-w", envvar=WORKSPACE_ENV,
                                            help="Workspace folder (made by `merforge init`).")] = Path("."),
) -> None:
    """Build a versioned dataset release: Parquet + JSONL splits, media, dataset card, manifest, diff."""
    from merforge.storage.release import build_release
    from merforge.storage.workspace import Workspace

    try:
        ws = Workspace.open(workspace)
        try:
            result = build_release(ws, version, progress=lambda message: console.print(message))
        finally:
            ws.close()
    except MerforgeError as error:
        _fail(error)
        return
    console.print(f"release {result.version} written to {result.path}")
    console.print("clips per split: " + ", ".join(f"{s}={n}" for s, n in result.counts.items()))
    if result.excluded:
        console.print("left out: " + ", ".join(f"{why}={n}" for why, n in sorted(result.excluded.items())))
    console.print(f"leakage check: {'clean' if not result.leakage else result.leakage}")
    diff = result.diff
    console.print(f"diff vs {diff.get('previous') or 'nothing'}: added {len(diff['added'])}, "
                  f"removed {len(diff['removed'])}, relabelled {len(diff['relabelled'])}")


def evaluate_command(
    release: Annotated[Path, typer.Option("--release", help="Release folder (releases/<version>).")],
    predictions: Annotated[Path, typer.Option("--predictions", help="JSONL or CSV: id,label[,labels][,rationale].")],
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Private test labels (when hidden).")] = None,
) -> None:
    """Score predictions on a release's test split (accuracy, UAR, WAR, F1, ROUGE-L, BLEU, evidence coverage)."""
    from merforge.storage.evaluate import evaluate

    try:
        metrics = evaluate(release, predictions, labels)
    except MerforgeError as error:
        _fail(error)
        return
    console.print_json(json.dumps(metrics))
