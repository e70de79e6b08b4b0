"""`merforge review` (serve the review UI, Label Studio round trip) and `merforge reviewer`.

    merforge review [--host H] [--port P] [--workers N]   serve the web app on the workspace store
    merforge review export-label-studio OUT               review/audit clips as Label Studio tasks
    merforge review import-label-studio FILE              finished Label Studio annotations as reviews
    merforge reviewer add NAME [--admin] [--password-stdin]
    merforge reviewer list

Register in flows/cli.py with:
    app.add_typer(review_app, name="review")
    app.add_typer(reviewer_app, name="reviewer")
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from merforge.errors import MerforgeError

console = Console()
err_console = Console(stderr=True)

WORKSPACE_ENV = "MERFORGE_WORKSPACE"

WorkspaceOption = Annotated[
    Path,
    typer.Option("--workspace", "-w", envvar=WORKSPACE_ENV, help="Workspace folder (made by `merforge init`)."),
]

review_app = typer.Typer(
    help="Serve the review UI on the workspace store (SQLite by default, PostgreSQL for a team); "
    "export and import Label Studio tasks.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
reviewer_app = typer.Typer(help="Reviewer accounts for the review UI.", no_args_is_help=True,
                           add_completion=False, pretty_exceptions_enable=False)


def _fail(error: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {error}")
    raise typer.Exit(code=1)


def _open(workspace: Path):
    from merforge.storage.workspace import Workspace

    return Workspace.open(workspace)


@review_app.callback()
def serve(
    ctx: typer.Context,
    workspace: WorkspaceOption = Path("."),
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 serves the whole network "
                                           "(put HTTPS in front and pass --secure-cookies).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Server processes.")] = 1,
    secure_cookies: Annotated[bool, typer.Option("--secure-cookies", help="Mark the session cookie Secure "
                                                                          "(when served over HTTPS).")] = False,
) -> None:
    """Serve the review web app: queue, clip pages with media, transcript, timeline and the
    annotators' reasoning, keyboard-driven decisions. Accounts: `merforge reviewer add`."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    try:
        ws = _open(workspace)
        from merforge.storage.reviews import ReviewStore

        if not ReviewStore(ws.store, ws.config.review).reviewers():
            err_console.print("[yellow]no reviewer accounts yet[/]; create one with "
                              f"`merforge reviewer add NAME --admin -w {ws.root}`")
        root = ws.root
        ws.close()
    except MerforgeError as error:
        _fail(error)
    console.print(f"review UI on http://{host}:{port}/ (workspace {root}); Ctrl-C stops it")
    # The factory reads the workspace from the environment so that every worker process builds its own app.
    os.environ[WORKSPACE_ENV] = str(root)
    os.environ["MERFORGE_REVIEW_SECURE_COOKIES"] = "1" if secure_cookies else "0"
    uvicorn.run("merforge.flows.review_cli:app_factory", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False, proxy_headers=False)


def app_factory():
    """uvicorn factory: the review app for the workspace named in MERFORGE_WORKSPACE."""
    from merforge.review_ui.app import create_app

    return create_app(os.environ.get(WORKSPACE_ENV, "."),
                      secure_cookies=os.environ.get("MERFORGE_REVIEW_SECURE_COOKIES") == "1")


@review_app.command("export-label-studio")
def export_label_studio(
    output: Annotated[Path, typer.Argument(help="JSON file of Label Studio tasks to write.")],
    workspace: WorkspaceOption = Path("."),
    local_files_root: Annotated[Optional[Path], typer.Option(
        help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT; media under it get /data/local-files URLs.")] = None,
) -> None:
    """Write the clips routed to review or audit as Label Studio tasks, with the annotator
    agents' answers as predictions."""
    from merforge.storage.label_studio import export_tasks, label_config

    try:
        ws = _open(workspace)
        count = export_tasks(ws, output, local_files_root=local_files_root)
        config_path = output.with_suffix(".label_config.xml")
        from merforge.storage.workspace import write_atomic

        write_atomic(config_path, label_config(ws.config.annotate.label_space).encode())
        ws.close()
    except MerforgeError as error:
        _fail(error)
    console.print(f"wrote {count} tasks to {output}; labeling interface in {config_path}")


@review_app.command("import-label-studio")
def import_label_studio(
    file: Annotated[Path, typer.Argument(help="Label Studio JSON export with finished annotations.")],
    workspace: WorkspaceOption = Path("."),
    reviewer_prefix: Annotated[str, typer.Option(help="Prefix of the reviewer names given to "
                                                      "Label Studio annotators.")] = "ls:",
) -> None:
    """Store each completed Label Studio annotation as a review (accept when it matches the
    pipeline's label, correct otherwise)."""
    from merforge.storage.label_studio import import_annotations

    try:
        ws = _open(workspace)
        report = import_annotations(ws, file, reviewer_prefix=reviewer_prefix)
        ws.close()
    except MerforgeError as error:
        _fail(error)
    console.print(f"imported {report.imported} reviews, skipped {report.skipped}")
    for title, items in (("cancelled", report.cancelled), ("unknown label", report.unknown_labels),
                         ("clip not in this workspace", report.unknown_clips),
                         ("no emotion chosen", report.without_choice)):
        for item in items:
            console.print(f"  [yellow]{title}[/] {item}")


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@reviewer_app.command("add")
def reviewer_add(
    name: Annotated[str, typer.Argument(help="Login name (no spaces).")],
    workspace: WorkspaceOption = Path("."),
    admin: Annotated[bool, typer.Option("--admin", help="May see everyone's progress and reassign clips.")] = False,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first "
                                                                          "line of standard input.")] = False,
) -> None:
    """Create a reviewer account; the password is asked twice (or read from stdin) and stored
    as an argon2id hash."""
    from merforge.storage.reviews import ReviewStore

    try:
        ws = _open(workspace)
        password = _read_password(password_stdin)
        reviewer = ReviewStore(ws.store, ws.config.review).add_reviewer(name, password, is_admin=admin)
        ws.close()
    except MerforgeError as error:
        _fail(error)
    console.print(f"reviewer [bold]{reviewer.name}[/] added{' (admin)' if reviewer.is_admin else ''}")


@reviewer_app.command("list")
def reviewer_list(workspace: WorkspaceOption = Path(".")) -> None:
    """Reviewer accounts with their progress."""
    from merforge.storage.reviews import ReviewStore

    try:
        ws = _open(workspace)
        progress = ReviewStore(ws.store, ws.config.review).progress()
        ws.close()
    except MerforgeError as error:
        _fail(error)
    for row in progress:
        console.print(f"{row['name']}{' (admin)' if row['is_admin'] else ''}: {row['done_total']} decided, "
                      f"{row['skipped']} skipped, {row['claimed']} claimed")
