"""The `merforge` command line.

    merforge init DIR            create a workspace with a commented merforge.toml
    merforge run [INPUTS]        the whole pipeline, incremental (also per stage: the commands below)
    merforge serve --cron --inbox  scheduled runs on an inbox folder (a Prefect deployment)
    merforge ingest PATH...      add media files, folders or a manifest CSV
    merforge sample              cut sources into clips with key frames (one decode pass each)
    merforge status [--json]     counts per stage, failures with their reasons
    merforge export              clips as JSONL
    merforge demo                all of the above on the bundled samples, offline
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import warnings

import typer
from rich.console import Console
from rich.table import Table

from merforge import __version__
from merforge.errors import MerforgeError

app = typer.Typer(
    name="merforge",
    help="Build multimodal emotion-recognition datasets: raw video in, clips with key frames out "
    "(later stages: preprocessing, annotator agents, judge, review UI, releases).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
# webrtcvad (used by resemblyzer) imports pkg_resources; its deprecation notice is not
# something a curator can act on.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

WorkspaceOption = Annotated[
    Path,
    typer.Option("--workspace", "-w", envvar="MERFORGE_WORKSPACE", help="Workspace folder (made by `merforge init`)."),
]
EngineOption = Annotated[
    str,
    typer.Option(
        "--engine",
        help="'prefect' runs the stage as a Prefect flow (retries, artifacts, UI); "
        "'library' calls the same library functions directly (no Prefect server start).",
    ),
]
ROOT = Path(__file__).resolve().parent.parent


def _prefect_environment() -> None:
    # The embedded Prefect server takes 20-35 s to start on a small machine; the
    # default 20 s timeout fails there.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # merforge runs offline; Prefect's telemetry heartbeat also races its own SQLite file.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Dask's scheduler and nannies log every start and stop (and the kill of workers whose model
    # threads outlive the 4 s shutdown grace); keep the terminal for merforge.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def _fail(error: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {error}")
    raise typer.Exit(code=1)


def _open(workspace: Path):
    from merforge.storage.workspace import Workspace

    return Workspace.open(workspace)


def _check_engine(engine: str) -> None:
    if engine not in ("prefect", "library"):
        _fail(ValueError(f"--engine must be 'prefect' or 'library', not {engine!r}"))


def _run_stage(workspace: Path, engine: str, flow: tuple[str, str], flow_args: tuple, library, unit: str = "items"):
    """Run a stage as its Prefect flow or as the library call, under one progress bar.

    Returns (workspace, summary dict, seconds). `flow` names the module and function of
    the flow; `library(ws, progress)` returns the same summary without Prefect.
    """
    import importlib

    _check_engine(engine)
    from merforge.flows.progress import RichProgress

    ws = _open(workspace)
    started = time.perf_counter()
    with RichProgress(console, unit=unit) as progress:
        if engine == "prefect":
            _prefect_environment()
            if flow[1] == "sample_flow":
                console.print("starting Prefect (the embedded server can take ~30 s on first start)...")
            from merforge.flows import pipeline as bridge

            flow_function = getattr(importlib.import_module(flow[0]), flow[1])
            bridge.progress_bridge["progress"] = progress
            try:
                summary = flow_function(str(ws.root), *flow_args)
            finally:
                bridge.progress_bridge.clear()
        else:
            summary = library(ws, progress)
    return ws, summary, time.perf_counter() - started


@app.command()
def init(directory: Annotated[Path, typer.Argument(help="Folder to create (or reuse) as a workspace.")]) -> None:
    """Create a workspace: the folder, a commented default merforge.toml and the database."""
    from merforge.storage.workspace import Workspace

    try:
        workspace = Workspace.init(directory)
    except MerforgeError as error:
        _fail(error)
    console.print(f"workspace ready at [bold]{workspace.root}[/]; edit {workspace.root / 'merforge.toml'} to configure")
    workspace.close()


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Media files, folders (searched recursively) or manifest CSVs "
                                                     "(columns: path, license, consent, speaker, group; extra columns kept).")],
    workspace: WorkspaceOption = Path("."),
    engine: EngineOption = "library",
) -> None:
    """Probe media and record it. Re-ingesting is a no-op; moved files are recognised; bad files get a reason."""
    _check_engine(engine)
    try:
        ws = _open(workspace)
        if engine == "prefect":
            _prefect_environment()
            from merforge.flows.sample_flow import ingest_flow

            counts = ingest_flow(str(ws.root), [str(p) for p in paths])
            report_items = None
        else:
            from merforge.flows.progress import RichProgress
            from merforge.preprocess.ingest import ingest as run_ingest

            with RichProgress(console, unit="items") as progress:
                report = run_ingest(ws, paths, progress)
            counts, report_items = report.counts, report.items
    except MerforgeError as error:
        _fail(error)
    if report_items:
        bad = [i for i in report_items if i.outcome in ("unusable", "missing", "duplicate", "moved")]
        for item in bad:
            console.print(f"  [yellow]{item.outcome}[/] {item.path}: {item.reason}")
    console.print("ingest: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) if counts else "ingest: nothing found")


@app.command()
def sample(
    workspace: WorkspaceOption = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Re-sample sources even if nothing changed.")] = False,
    engine: EngineOption = "prefect",
) -> None:
    """Cut every usable source into clips with key frames: ONE decode pass per file feeds shot
    detection, key-frame candidates and voice activity detection. Sources already sampled with
    the same settings are skipped."""
    def library(ws, progress):
        from merforge.preprocess.sampling import sample_sources

        report = sample_sources(ws, force=force, progress=progress)
        return {"done": report.count("done"), "failed": report.count("failed"),
                "skipped": report.count("skipped"), "clips": sum(o.clips for o in report.outcomes)}

    try:
        ws, summary, elapsed = _run_stage(workspace, engine, ("merforge.flows.sample_flow", "sample_flow"), (force,),
                                          library, unit="seconds")
    except MerforgeError as error:
        _fail(error)
    console.print(
        f"sample: {summary['done']} sampled, {summary['skipped']} unchanged, {summary['failed']} failed, "
        f"{summary['clips']} new clips in {elapsed:.1f} s"
    )
    if summary["failed"]:
        console.print("see failures with: merforge status")


@app.command()
def preprocess(
    workspace: WorkspaceOption = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Redo clips even if nothing changed.")] = False,
    engine: EngineOption = "prefect",
) -> None:
    """Per clip: ASR with word times (faster-whisper), speakers (diarization), prosody (Praat,
    openSMILE), faces and action units (from the sampling pass), and an aligned timeline
    (Parquet). Clips whose inputs and settings are unchanged are skipped."""
    def library(ws, progress):
        from merforge.preprocess.features import preprocess_sources, summarise

        return summarise(preprocess_sources(ws, force=force, progress=progress))

    try:
        ws, summary, elapsed = _run_stage(workspace, engine, ("merforge.flows.preprocess_flow", "preprocess_flow"), (force,), library)
    except MerforgeError as error:
        _fail(error)
    console.print(f"preprocess: {summary['done']} clips done, {summary['skipped']} unchanged, "
                  f"{summary['failed']} failed in {elapsed:.1f} s")
    if summary["timings"]:
        console.print("  time per part: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(summary["timings"].items())))
    if summary["failed"]:
        console.print("see failures with: merforge status")


@app.command()
def annotate(
    workspace: WorkspaceOption = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Re-annotate clips even if nothing changed.")] = False,
    engine: EngineOption = "prefect",
) -> None:
    """Fan out every preprocessed clip to the annotator agents in annotate.agents (offline
    specialists "text", "acoustic", "visual" and configured OpenAI-compatible endpoints); each
    returns a label, step-by-step rationale and modality evidence. LLM requests are cached on
    disk, so a re-run costs nothing."""
    def library(ws, progress):
        from merforge.agents.annotate import annotate_workspace

        return annotate_workspace(ws, force=force, progress=progress).as_dict()

    try:
        ws, summary, elapsed = _run_stage(workspace, engine, ("merforge.flows.annotate_flow", "annotate_flow"), (force,), library)
    except MerforgeError as error:
        _fail(error)
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(summary["statuses"].items())) or "none"
    console.print(f"annotate: {summary['clips']} clips annotated, {summary['skipped']} unchanged in {elapsed:.1f} s; "
                  f"answers: {statuses}")
    if summary["calls"] or summary["cost_usd"]:
        console.print(f"  endpoint calls {summary['calls']}, tokens in/out {summary['tokens_in']}/{summary['tokens_out']}, "
                      f"cost ${summary['cost_usd']:.4f}, calls saved by the cascade {summary['cascade_skipped_calls']}")


@app.command()
def judge(
    workspace: WorkspaceOption = Path("."),
    engine: EngineOption = "prefect",
) -> None:
    """Score every annotation (S_rec, S_reason, S_cot and S_final = a*S_rec + b*S_reason + c*S_cot,
    each with reasons), build one consensus per clip (majority, S_final-weighted and Dawid-Skene
    votes) and route it: auto-accept, review (with reasons and a priority) or audit."""
    def library(ws, progress):
        from merforge.agents.judge_stage import judge_workspace

        return judge_workspace(ws, progress=progress).as_dict()

    try:
        ws, summary, elapsed = _run_stage(workspace, engine, ("merforge.flows.judge_flow", "judge_flow"), (), library)
        from merforge.agents.judge_stage import calibration_report

        calibration = calibration_report(ws)
    except MerforgeError as error:
        _fail(error)
    routes = ", ".join(f"{k} {v}" for k, v in sorted(summary["routes"].items())) or "nothing to judge"
    console.print(f"judge: {summary['annotations']} annotations of {summary['clips']} clips in {elapsed:.1f} s; routes: {routes}")
    for annotator, reliability in sorted(summary["reliabilities"].items()):
        console.print(f"  {annotator}: reliability {reliability:.2f} (Dawid-Skene), "
                      f"mean S_final {summary['mean_s_final'].get(annotator, float('nan')):.2f}")
    if calibration:
        console.print(f"  calibration on {calibration['reviews']} reviews: ECE {calibration['ece_before']:.3f} -> "
                      f"{calibration['ece_after']:.3f}; auto-accept at confidence >= {calibration['threshold']:.2f} "
                      f"for precision {calibration['precision']:.2f}")


@app.command()
def calibrate(
    workspace: WorkspaceOption = Path("."),
    labels: Annotated[Path | None, typer.Option("--labels", help="CSV of true labels: a 'file' (or 'path') or "
                                                "'clip' column and a 'label' column; a file's label applies to "
                                                "all its clips.")] = None,
    reviews: Annotated[bool, typer.Option("--reviews/--no-reviews", help="Also learn from the workspace's "
                                          "reviewed clips (accept / correct).")] = True,
) -> None:
    """Measure each agent against clips whose label is known (a labels CSV and/or reviewed
    clips): per-agent isotonic calibration and confusion matrix, the calibrated consensus and
    the auto-accept threshold reaching route.target_precision (with its 95% interval). Saved
    as <workspace>/calibration.json with where the labels came from; the clips are then
    re-judged and re-routed with it."""
    from merforge.agents.calibrate_stage import calibrate_workspace
    from merforge.agents.calibration import CalibrationError
    from merforge.agents.judge_stage import judge_workspace

    try:
        ws = _open(workspace)
        calibration, problems = calibrate_workspace(ws, labels, use_reviews=reviews)
        report = judge_workspace(ws)
    except (MerforgeError, CalibrationError) as error:
        _fail(error)
    for problem in problems[:10]:
        err_console.print(f"[yellow]warning:[/] {problem}")
    if len(problems) > 10:
        err_console.print(f"[yellow]warning:[/] ... and {len(problems) - 10} more")
    console.print(f"calibration on {calibration.provenance.get('clips', 0)} labelled clips "
                  f"-> {ws.root / 'calibration.json'}")
    for name, agent in sorted(calibration.agents.items()):
        console.print(f"  {name}: {agent.n} answers, {agent.abstained} abstentions, accuracy {agent.accuracy:.2f}, "
                      f"ECE {agent.ece_before:.3f} -> {agent.ece_after:.3f}")
    c = calibration.consensus
    if c is not None:
        target = calibration.target_precision
        if c.threshold == float("inf"):
            console.print(f"  consensus: accuracy {c.accuracy:.2f}, ECE {c.ece_before:.3f}; no threshold reaches "
                          f"precision {target:.2f}: every labelled clip would go to review")
        else:
            low, high = c.threshold_interval
            console.print(f"  consensus: accuracy {c.accuracy:.2f}, ECE {c.ece_before:.3f} -> {c.ece_after:.3f}; "
                          f"auto-accept at confidence >= {c.threshold:.2f}: precision {c.threshold_precision:.2f} "
                          f"(95% {low:.2f}-{high:.2f}) on {c.threshold_coverage:.0%} of the labelled clips")
    routes = ", ".join(f"{k} {v}" for k, v in sorted(report.routes.items())) or "nothing to route"
    console.print(f"re-routed {report.clips} clips: {routes}")


def collect_status(ws) -> dict[str, Any]:
    """Counts per stage and failures with reasons, as plain data (for --json)."""
    from merforge.storage.records import SourceStatus, StageState

    store = ws.store
    sources = store.sources()
    usable = [s for s in sources if s.status == SourceStatus.OK]
    counts = store.stage_counts()
    sampled_ok = {s.item_id for s in store.statuses("sample", StageState.DONE) if s.config_hash == ws.config.sampling_hash()}
    sample_failed = {s.item_id for s in store.statuses("sample", StageState.FAILED)}
    failures = [
        {"stage": "ingest", "path": s.path, "reason": s.reason}
        for s in sources if s.status == SourceStatus.UNUSABLE
    ]
    failures += [{"stage": st.stage, "path": st.details.get("path", st.item_id), "reason": st.reason}
                 for st in store.statuses(state=StageState.FAILED)]
    return {
        "workspace": str(ws.root),
        "database": ws.database_url if ws.config.store.database_url else "sqlite (merforge.db)",
        "stages": {
            "ingest": {"usable": len(usable), "unusable": len(sources) - len(usable),
                       "failed": counts.get("ingest", {}).get("failed", 0)},
            "sample": {"done": len(sampled_ok), "failed": len(sample_failed),
                       "pending": len([s for s in usable if s.id not in sampled_ok and s.id not in sample_failed])},
            "preprocess": _preprocess_counts(ws),
            "annotate": _annotate_counts(ws),
            "route": ws.store.route_counts(),
        },
        "clips": store.count_clips(),
        "failures": failures,
        "last_run": _last_run(ws.root),
    }


def _last_run(root: Path) -> dict[str, Any] | None:
    """The newest run summary (id, state, when, seconds, failures), or None before the first run."""
    for path in sorted((root / "runs").glob("*.json"), reverse=True):
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        return {"run_id": run.get("run_id", path.stem), "state": run.get("state", "?"),
                "started_at": run.get("started_at", ""), "seconds": run.get("seconds", 0.0),
                "failures": len(run.get("failures", [])), "error": run.get("error", ""), "summary": str(path)}
    return None


def _preprocess_counts(ws) -> dict[str, int]:
    from merforge.preprocess.features import STAGE, stage_hash
    from merforge.storage.records import StageState

    current = stage_hash(ws)
    clip_ids = {c.id for c in ws.store.iter_clips()}
    done = {s.item_id for s in ws.store.statuses(STAGE, StageState.DONE) if s.config_hash == current} & clip_ids
    failed = {s.item_id for s in ws.store.statuses(STAGE, StageState.FAILED)} & clip_ids
    return {"done": len(done), "failed": len(failed), "pending": len(clip_ids - done - failed)}


def _annotate_counts(ws) -> dict[str, int]:
    from merforge.agents.annotate import STAGE, stage_hash
    from merforge.storage.records import StageState

    current = stage_hash(ws)
    clip_ids = {c.id for c in ws.store.iter_clips()}
    done = {s.item_id for s in ws.store.statuses(STAGE, StageState.DONE) if s.config_hash == current} & clip_ids
    counts = {"clips done": len(done), "clips pending": len(clip_ids - done)}
    for annotator, by_status in sorted(ws.store.annotation_counts().items()):
        for state, count in sorted(by_status.items()):
            counts[f"{annotator} {state}"] = count
    return counts


@app.command()
def status(
    workspace: WorkspaceOption = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Counts per stage and every failure with its reason."""
    try:
        ws = _open(workspace)
        data = collect_status(ws)
    except MerforgeError as error:
        _fail(error)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(title=f"merforge workspace {data['workspace']}")
    table.add_column("stage")
    table.add_column("counts")
    for stage, counts in data["stages"].items():
        table.add_row(stage, ", ".join(f"{k} {v}" for k, v in counts.items()))
    table.add_row("clips", str(data["clips"]))
    console.print(table)
    last = data["last_run"]
    if last:
        state = "still running or killed" if last["state"] == "running" else last["state"]
        console.print(f"last run {last['run_id']}: {state}, {last['seconds']:.1f} s, {last['failures']} failures"
                      + (f"; stopped: {last['error']}" if last["error"] else "") + f" ({last['summary']})")
    for failure in data["failures"]:
        console.print(f"  [red]{failure['stage']} failed[/] {failure['path']}: {failure['reason']}")


def clip_export_rows(ws) -> Any:
    sources = {s.id: s for s in ws.store.sources()}
    for clip in ws.store.iter_clips():
        yield {
            "id": clip.id,
            "source_id": clip.source_id,
            "source_path": sources[clip.source_id].path,
            "start": round(clip.start, 3),
            "end": round(clip.end, 3),
            "origin": clip.origin.value,
            "keyframes": [{"time": kf.time, "path": str(ws.root / kf.path)} for kf in clip.keyframes],
        }


@app.command()
def export(
    workspace: WorkspaceOption = Path("."),
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="JSONL file to write; default stdout.")] = None,
) -> None:
    """Write clips as JSONL: id, source path, start, end (s), key-frame paths and times, origin."""
    try:
        ws = _open(workspace)
        rows = clip_export_rows(ws)
        if output is None:
            for row in rows:
                sys.stdout.write(json.dumps(row) + "\n")
            return
        from merforge.storage.workspace import write_atomic

        data = "".join(json.dumps(row) + "\n" for row in rows)
        write_atomic(output, data.encode())
    except MerforgeError as error:
        _fail(error)
    err_console.print(f"wrote {data.count(chr(10))} clips to {output}")


def print_sources_table(ws) -> None:
    """Per source: kind, duration, cuts, speech segments, clips and key frames."""
    table = Table(title="what sampling made")
    for column in ("file", "kind", "seconds", "cuts", "speech segments", "clips", "key frames", "note"):
        table.add_column(column, justify="right" if column not in ("file", "kind", "note") else "left")
    clips_by_source: dict[str, list] = {}
    for clip in ws.store.iter_clips():
        clips_by_source.setdefault(clip.source_id, []).append(clip)
    for source in ws.store.sources():
        status = ws.store.get_status(source.id, "sample")
        details = status.details if status else {}
        clips = clips_by_source.get(source.id, [])
        note = source.reason or (status.reason if status else "") or "; ".join(details.get("warnings", []))
        table.add_row(
            Path(source.path).name,
            source.media.kind if source.media else "-",
            f"{source.media.duration:.1f}" if source.media else "-",
            str(len(details.get("cuts", []))),
            str(len(details.get("speech", []))),
            str(len(clips)),
            str(sum(len(c.keyframes) for c in clips)),
            note[:60],
        )
    console.print(table)


def print_clips_table(ws) -> None:
    """Per clip: what preprocessing measured (words, speakers, F0, faces, strongest AUs)."""
    table = Table(title="what preprocessing measured")
    for column in ("clip", "s", "words", "speakers", "F0 Hz", "face", "top AUs (estimates)"):
        table.add_column(column)
    for clip in ws.store.iter_clips():
        features = ws.store.get_features(clip.id)
        if features is None:
            continue
        source = ws.store.get_source(clip.source_id)
        aus = sorted(features.faces.mean_aus.items(), key=lambda kv: -kv[1])[:3]
        table.add_row(
            f"{Path(source.path).stem[:14]} {clip.start:.1f}-{clip.end:.1f}",
            f"{clip.duration:.1f}",
            str(len(features.transcript.words)),
            ",".join(sorted({t.speaker for t in features.speaker_turns})) or "-",
            f"{features.prosody.f0_mean:.0f}" if features.prosody.f0_mean else "-",
            f"{features.faces.presence:.0%}" if features.faces.frames_analysed else "-",
            " ".join(f"{k} {v:.2f}" for k, v in aus) or "-",
        )
    console.print(table)


@app.command()
def demo(
    directory: Annotated[Path, typer.Argument(help="Workspace folder for the demo.")] = Path("demo-workspace"),
    samples: Annotated[Path, typer.Option(help="Folder of media (or a manifest CSV) to use.")] = ROOT / "samples" / "manifest.csv",
    engine: EngineOption = "prefect",
) -> None:
    """Run merforge on the bundled samples, offline: init, then the whole pipeline (`merforge run`:
    ingest, sample, preprocess, annotate with the offline agents, judge and route, report), a
    release and a clip export; then say where everything is and how to open the review UI."""
    started = time.perf_counter()
    init(directory)
    from merforge.flows.run_cli import execute, print_summary

    try:
        summary = execute(directory, [samples], engine, "local", 0, "", force=False)
    except MerforgeError as error:
        _fail(error)
    print_summary(summary)
    report_html = Path(summary["outputs"]["report_html"])
    release_dir = directory / "releases" / "demo-v1"
    if not release_dir.exists():
        from merforge.storage.release import build_release

        release_dir = build_release(_open(directory), "demo-v1").path
    ws = _open(directory)
    print_sources_table(ws)
    print_clips_table(ws)
    ws.close()
    export(workspace=directory, output=directory / "clips.jsonl")
    console.print(f"\n[bold]demo finished in {time.perf_counter() - started:.1f} s[/]")
    console.print(f"  clips: {directory / 'clips.jsonl'}")
    console.print(f"  key frames: {directory / 'keyframes'}")
    console.print(f"  features: {directory / 'features'} (per-clip timelines and word tables, Parquet)")
    console.print(f"  agreement report: {report_html} (and {report_html.with_suffix('.json').name})")
    console.print(f"  run summary: {directory / 'runs' / (summary['run_id'] + '.json')}")
    console.print(f"  release: {release_dir} (Parquet + JSONL splits, dataset card, manifest)")
    console.print(f"  status: .venv/bin/merforge status -w {directory}")
    console.print("  review the flagged clips in a browser:")
    console.print(f"    .venv/bin/merforge reviewer add YOURNAME --admin -w {directory}")
    console.print(f"    .venv/bin/merforge review -w {directory}   # then open http://127.0.0.1:8000")


@app.callback(invoke_without_command=True)
def _version(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(f"merforge {__version__}")
        raise typer.Exit()


def _register_review_commands() -> None:
    from merforge.flows.report_cli import report_command
    from merforge.flows.review_cli import review_app, reviewer_app

    app.command(name="report")(report_command)  # merforge report: agreement report (HTML + JSON)
    from merforge.flows.release_cli import evaluate_command, release_command

    app.command(name="release")(release_command)  # merforge release --version X
    app.command(name="evaluate")(evaluate_command)  # merforge evaluate --release DIR --predictions FILE
    app.add_typer(review_app, name="review")  # merforge review [--host --port]; export/import Label Studio
    app.add_typer(reviewer_app, name="reviewer")  # merforge reviewer add NAME [--admin]; reviewer list
    from merforge.flows.run_cli import run_command, serve_command

    app.command(name="run")(run_command)  # merforge run [INPUTS] [--task-runner local|dask|ray]
    app.command(name="serve")(serve_command)  # merforge serve --cron "..." --inbox DIR


_register_review_commands()


def main() -> None:
    app()
