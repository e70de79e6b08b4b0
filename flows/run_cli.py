"""`merforge run` (the whole pipeline) and `merforge serve` (scheduled runs on an inbox folder)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from merforge.errors import MerforgeError, resource_error

console = Console()
err_console = Console(stderr=True)

TaskRunnerOption = Annotated[str, typer.Option(
    "--task-runner",
    help="Where each stage's items run: 'local' (this process, one after another), 'dask' (a local Dask "
         "cluster, or the scheduler at --address) or 'ray' (a local Ray instance, or the cluster at --address). "
         "Needs --engine prefect.")]
WorkersOption = Annotated[int, typer.Option(
    "--workers", min=0, help="Worker processes: with --engine library, for sampling and preprocessing when a run "
                             "has 8 or more files (or groups of short files) to work; with Dask or Ray, of the local "
                             "cluster. 0: one per core (at most 8); 1: everything in this process.")]
AddressOption = Annotated[str, typer.Option(
    "--address", help="A running Dask scheduler (tcp://host:8786) or Ray cluster (ray://host:10001) to use "
                      "instead of starting a local one.")]


def _fail(error: BaseException) -> None:
    err_console.print(f"[bold red]error:[/] {error}")
    raise typer.Exit(code=1)


def execute(workspace: Path, inputs: list[Path], engine: str, task_runner: str, workers: int, address: str,
            force: bool, quiet: bool = False) -> dict:
    """Run the pipeline under the chosen engine; returns the summary as a dict. Raises MerforgeError."""
    from merforge.flows import cli
    from merforge.flows.pipeline import PoolRunner, default_workers, progress_bridge, run_pipeline, workspace_lock
    from merforge.flows.progress import RichProgress

    cli._check_engine(engine)
    ws = cli._open(workspace)
    root = str(ws.root)  # opening validated merforge.toml
    ws.close()
    if engine == "library" and task_runner != "local":
        raise MerforgeError("--task-runner dask/ray needs --engine prefect (the library engine runs items in this process)")
    output = err_console if quiet else console
    with RichProgress(output, unit="items") as progress:
        progress_bridge["progress"] = progress
        try:
            if engine == "library":
                with workspace_lock(root), PoolRunner(workers or default_workers()) as runner:
                    return run_pipeline(root, [str(p) for p in inputs], force, runner).as_dict()
            cli._prefect_environment()
            if not os.environ.get("PREFECT_API_URL"):
                output.print("starting Prefect's embedded server (about 10-30 s; set PREFECT_API_URL to use a running one)...")
            from merforge.flows.pipeline_flow import pipeline_flow

            return pipeline_flow(root, [str(p) for p in inputs], force, task_runner, workers, address)
        finally:
            progress_bridge.clear()


def run_command(
    inputs: Annotated[Optional[list[Path]], typer.Argument(
        help="Media files, folders or manifest CSVs to ingest first (optional: without them the run works on what "
             "the workspace holds).")] = None,
    workspace: Annotated[Path, typer.Option("--workspace", "-w", envvar="MERFORGE_WORKSPACE",
                                            help="Workspace folder (made by `merforge init`).")] = Path("."),
    engine: Annotated[str, typer.Option("--engine", help="'prefect' runs the pipeline as a Prefect flow (task runs, "
                                                          "artifacts, UI); 'library' calls the same functions directly."
                                        )] = "prefect",
    task_runner: TaskRunnerOption = "local",
    workers: WorkersOption = 0,
    address: AddressOption = "",
    force: Annotated[bool, typer.Option("--force", help="Redo every stage even where nothing changed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON (progress goes to stderr).")] = False,
) -> None:
    """Run the whole pipeline: ingest (INPUTS), sample, preprocess, annotate, judge and route, report.

    Incremental: every stage skips what is already current, and every item is committed as it
    finishes, so rerunning after a crash or a kill continues where it stopped. Ends with a summary
    (counts, failures with reasons, seconds per stage, LLM tokens and cost), also saved as
    <workspace>/runs/<run id>.json and, under Prefect, as the artifact 'run-summary'.
    """
    try:
        summary = execute(workspace, inputs or [], engine, task_runner, workers, address, force, quiet=as_json)
    except MerforgeError as error:
        _fail(error)
    except Exception as error:
        translated = resource_error(error)
        if translated is None:
            raise
        _fail(translated)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    if summary["state"] != "finished":
        raise typer.Exit(code=1)


def print_summary(summary: dict) -> None:
    table = Table(title=f"merforge run {summary['run_id']} ({summary['engine']}, task runner {summary['task_runner']})")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("counts")
    for stage, data in summary["stages"].items():
        counts = ", ".join(f"{k} {v}" for k, v in data.items()
                           if k != "seconds" and not isinstance(v, dict) and (v or k in ("failed",)))
        parts = next((v for v in data.values() if isinstance(v, dict)), None)
        if parts:
            counts += "\n" + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items())
        table.add_row(stage, f"{data['seconds']:.1f}", counts or "nothing to do")
    console.print(table)
    llm = summary["llm"]
    console.print(f"LLM requests sent {llm['calls']}, tokens in/out {llm['tokens_in']}/{llm['tokens_out']}, "
                  f"cost ${llm['cost_usd']:.4f}")
    if summary["routes"]:
        console.print("routes: " + ", ".join(f"{k} {v}" for k, v in summary["routes"].items()))
    if summary["interrupted_runs"]:
        console.print(f"continued after interrupted run(s): {', '.join(summary['interrupted_runs'])}")
    failures = summary["failures"]
    if failures:
        console.print(f"[yellow]{len(failures)} failure(s)[/] (the other items went on):")
        for failure in failures[:15]:
            console.print(f"  {failure['stage']}: {failure['item']}: {failure['reason']}")
        if len(failures) > 15:
            console.print(f"  ... {len(failures) - 15} more")
    path = Path(summary["workspace"]) / "runs" / f"{summary['run_id']}.json"
    console.print(f"[bold]run {summary['state']} in {summary['seconds']:.1f} s[/]; summary: {path}")


# ---------------------------------------------------------------- serve


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_prefect_server(home: Path, port: int, timeout_s: float = 180.0) -> tuple[subprocess.Popen, str]:
    """Start `prefect server start` on 127.0.0.1:port with its database under `home`; wait until healthy."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": env.get("PREFECT_LOGGING_LEVEL", "WARNING")})
    log = open(home / "server.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    api_url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise MerforgeError(f"the Prefect server exited with code {process.returncode}; see {home / 'server.log'}")
        if _healthy(api_url):
            return process, api_url
        time.sleep(0.5)
    stop_process(process)
    raise MerforgeError(f"the Prefect server did not answer within {timeout_s:.0f} s; see {home / 'server.log'}")


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)


def serve_command(
    cron: Annotated[str, typer.Option("--cron", help="When to run, as a cron expression, e.g. '*/30 * * * *' "
                                                      "(every 30 minutes) or '0 2 * * *' (02:00 daily).")],
    inbox: Annotated[Path, typer.Option("--inbox", help="Folder watched by each run: new or changed media (and "
                                                         "manifest CSVs) in it are processed; the rest is skipped.")],
    workspace: Annotated[Path, typer.Option("--workspace", "-w", envvar="MERFORGE_WORKSPACE",
                                            help="Workspace folder (made by `merforge init`).")] = Path("."),
    name: Annotated[str, typer.Option("--name", help="Deployment name; default merforge-<workspace folder name>.")] = "",
    task_runner: TaskRunnerOption = "local",
    workers: WorkersOption = 0,
    address: AddressOption = "",
    port: Annotated[int, typer.Option("--port", help="Port for the Prefect server merforge starts when "
                                                     "PREFECT_API_URL is not set; 0 picks a free one.")] = 4200,
) -> None:
    """Register a scheduled Prefect deployment of the whole pipeline on INBOX and run it until stopped.

    Needs a Prefect server: with PREFECT_API_URL set (e.g. after `prefect server start`), that server
    is used; otherwise merforge starts one on 127.0.0.1:PORT with its database in
    <workspace>/.prefect and stops it on exit. Each scheduled run ingests the inbox and processes new
    files only; runs go one at a time, and one that finds another run working on the workspace
    stops at once with that reason. Runs can also be started
    by hand from the Prefect UI or with `prefect deployment run 'merforge-pipeline/NAME'`.
    """
    from merforge.flows import cli
    from merforge.flows.pipeline import TASK_RUNNERS

    # Prefect reads PREFECT_API_URL when it is first imported: nothing here imports it before
    # the server (ours or the user's) is settled.
    try:
        ws = cli._open(workspace)
        root = ws.root
        ws.close()
        if task_runner not in TASK_RUNNERS:
            raise MerforgeError(f"--task-runner must be one of {', '.join(TASK_RUNNERS)}, not {task_runner!r}")
        if len(cron.split()) not in (5, 6):
            raise MerforgeError(f"--cron {cron!r} is not a cron expression: it needs 5 fields "
                                "(minute hour day-of-month month day-of-week), e.g. '*/30 * * * *'")
        inbox = inbox.resolve()
        if not inbox.is_dir():
            inbox.mkdir(parents=True)
            console.print(f"created the inbox folder {inbox}")
    except MerforgeError as error:
        _fail(error)
    cli._prefect_environment()
    server = None
    try:
        if not os.environ.get("PREFECT_API_URL"):
            port = port or _free_port()
            console.print(f"PREFECT_API_URL is not set: starting a Prefect server on 127.0.0.1:{port} "
                          f"(database in {root / '.prefect'})...")
            try:
                server, api_url = start_prefect_server(root / ".prefect", port)
            except MerforgeError as error:
                _fail(error)
            os.environ["PREFECT_API_URL"] = api_url
            console.print(f"Prefect server ready: UI at {api_url[:-4]}")
        elif not _healthy(os.environ["PREFECT_API_URL"]):
            _fail(MerforgeError(f"no Prefect server answers at PREFECT_API_URL={os.environ['PREFECT_API_URL']}; "
                                "start one with `prefect server start` or unset PREFECT_API_URL"))
        try:
            _check_cron(cron)
        except MerforgeError as error:
            _fail(error)
        from prefect.deployments.runner import EntrypointType

        from merforge.flows.pipeline_flow import pipeline_flow

        deployment = name or f"merforge-{root.name}"
        console.print(f"deployment merforge-pipeline/{deployment}: cron '{cron}' on {inbox}, task runner {task_runner}")
        pipeline_flow.serve(
            name=deployment, cron=cron, limit=1,
            parameters={"workspace_dir": str(root), "inputs": [str(inbox)], "force": False,
                        "task_runner": task_runner, "workers": workers, "address": address},
            description=f"merforge pipeline on {root}, inbox {inbox}",
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
    finally:
        if server is not None:
            stop_process(server)


def _check_cron(cron: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except Exception as error:  # pydantic's ValidationError
        raise MerforgeError(f"--cron {cron!r} is not a valid cron expression (minute hour day month weekday): "
                            f"{str(error).splitlines()[-1]}") from None
