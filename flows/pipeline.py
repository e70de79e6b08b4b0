"""The whole pipeline: ingest, sample, preprocess, annotate, judge and route, report.

This module holds what the Prefect flow (`merforge.flows.pipeline_flow`) and the plain
library run share, so both do exactly the same work:

- the per-item work functions (`sample_one`, `preprocess_one`, `annotate_batch`, ...) take
  the workspace folder and ids, never live objects, so any task runner can ship them to
  another process or machine; each opens the workspace, commits its own results and closes;
- `run_pipeline` plans each stage, hands the items to a `Runner` (a plain loop here, Prefect
  tasks on a thread, Dask or Ray in the flow), merges what comes back and times every stage;
- `RunSummary`: counts, failures with reasons, seconds per stage, tokens and cost, written to
  `<workspace>/runs/<run id>.json` and printed by the CLI (the flow also publishes it as a
  Prefect artifact).

Every stage skips what is already current, and every item commits as it finishes, so a
killed run loses at most the items in flight: rerunning continues where it stopped.
Only one run works on a workspace at a time (`run.lock`, released by the kernel even
when the process is killed).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from merforge.errors import MerforgeError, resource_error
from merforge.progress import NoProgress, Progress

STAGES = ("ingest", "sample", "preprocess", "annotate", "judge", "report")
TASK_RUNNERS = ("local", "dask", "ray")
RUNS_DIR = "runs"
ACTIVE_FILE = "active"  # runs/active names the run in progress; a run that is killed leaves it behind
LOCK_FILE = "run.lock"

# The CLI hands its progress bars to work functions running in its own process; work
# shipped to Dask or Ray workers reports nothing.
progress_bridge: dict[str, Progress] = {}


def current_progress() -> Progress:
    return progress_bridge.get("progress", NoProgress())


class RunLockedError(MerforgeError):
    """Another run is working on this workspace."""


@contextmanager
def workspace_lock(root: Path) -> Iterator[None]:
    """Hold <workspace>/run.lock for the run; refuse when another live process holds it."""
    path = Path(root) / LOCK_FILE
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunLockedError(f"another merforge run is working on {root} ({holder}); wait for it to finish "
                                 "(a scheduled run that finds the workspace busy does nothing)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


@contextmanager
def _workspace(workspace_dir: str):
    from merforge.storage.workspace import Workspace

    workspace = Workspace.open(workspace_dir)
    try:
        yield workspace
    finally:
        workspace.close()


# ---------------------------------------------------------------- per-item work


def ingest_inputs(workspace_dir: str, inputs: list[str]) -> dict:
    from merforge.preprocess.ingest import ingest

    with _workspace(workspace_dir) as workspace:
        report = ingest(workspace, [Path(p) for p in inputs], current_progress())
    failures = [{"stage": "ingest", "item": i.path, "reason": i.reason}
                for i in report.items if i.outcome in ("unusable", "missing")]
    return {"counts": report.counts, "failures": failures}


def plan_sampling(workspace_dir: str, force: bool) -> tuple[list[str], int]:
    from merforge.preprocess.sampling import needs_sampling
    from merforge.storage.records import SourceStatus

    with _workspace(workspace_dir) as workspace:
        sources = workspace.store.sources(SourceStatus.OK)
        todo = [s.id for s in sources if force or needs_sampling(workspace, s)]
    return todo, len(sources) - len(todo)


def sample_one(workspace_dir: str, source_id: str) -> dict:
    from merforge.preprocess.sampling import sample_source

    with _workspace(workspace_dir) as workspace:
        source = workspace.store.get_source(source_id)
        return asdict(sample_source(workspace, source, current_progress()))


def plan_preprocessing(workspace_dir: str, force: bool) -> tuple[list[list[tuple[str, list[str]]]], list[str]]:
    """Groups of (source id, clip ids) to preprocess (`preprocess.features.plan_groups`:
    a long source alone, short ones together) and the ids of the current clips."""
    from merforge.preprocess.features import plan_groups

    with _workspace(workspace_dir) as workspace:
        return plan_groups(workspace, force)


def preprocess_one(workspace_dir: str, group: list[tuple[str, list[str]]]) -> dict:
    from merforge.preprocess.features import preprocess_group

    with _workspace(workspace_dir) as workspace:
        timings: dict[str, float] = {}
        outcomes = preprocess_group(workspace, [(source_id, list(clip_ids)) for source_id, clip_ids in group],
                                    current_progress(), timings)
    return {"outcomes": [asdict(o) for o in outcomes], "timings": timings}


def plan_annotation(workspace_dir: str, force: bool, batches: int) -> tuple[list[list[str]], int]:
    """The clips to annotate, dealt into at most `batches` groups (one per worker)."""
    from merforge.agents.annotate import clips_to_annotate

    with _workspace(workspace_dir) as workspace:
        todo, current = clips_to_annotate(workspace, force)
    batches = max(1, min(batches, len(todo)))
    return [todo[i::batches] for i in range(batches)] if todo else [], current


def annotate_batch(workspace_dir: str, clip_ids: list[str], force: bool) -> dict:
    from merforge.agents.annotate import annotate_workspace

    with _workspace(workspace_dir) as workspace:
        return annotate_workspace(workspace, force=force, progress=current_progress(), clip_ids=clip_ids).as_dict()


def judge_all(workspace_dir: str) -> dict:
    from merforge.agents.judge_stage import judge_workspace

    with _workspace(workspace_dir) as workspace:
        return judge_workspace(workspace, progress=current_progress()).as_dict()


def report_all(workspace_dir: str) -> dict:
    from merforge.storage.report import write_report

    with _workspace(workspace_dir) as workspace:
        json_path, html_path = write_report(workspace)
    return {"json": str(json_path), "html": str(html_path)}


# ---------------------------------------------------------------- running and summarising


class Runner:
    """How a stage's items are executed. This one calls them one after another in this process."""

    name = "library"
    task_runner = "none"
    parallel = 1  # how many items may run at once (sizes the annotation batches)

    def each(self, stage: str, function: Callable, calls: Sequence[tuple]) -> list:
        return [function(*args) for args in calls]

    def one(self, stage: str, function: Callable, *args: Any) -> Any:
        return function(*args)


class PoolRunner(Runner):
    """The library engine on a corpus: the per-file stages (sample, preprocess) run in a
    pool of `workers` processes, each loading its models once and keeping them for the
    whole run; the other stages, and stages with fewer than MIN_POOLED items (starting
    processes and loading models in each costs seconds), run in this process.

    Sampling decodes, detects shots and analyses faces in a few threads that often wait on
    one another, so two processes on two cores sample 60 corpus files 1.6x faster than one.
    Results are the same: each worker uses as many math threads as this process would
    (ASR `threads = 0` counts the cores in every worker), and items write to the store as
    they do in this process. Workers start by forkserver (no copy of this process's state).
    """

    name = "library"
    task_runner = "pool"
    POOLED = ("sample", "preprocess")
    MIN_POOLED = 8

    def __init__(self, workers: int):
        self.parallel = max(1, workers)
        self._executor = None

    def __enter__(self) -> "PoolRunner":
        return self

    def __exit__(self, *exc) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def each(self, stage: str, function: Callable, calls: Sequence[tuple]) -> list:
        if stage not in self.POOLED or self.parallel < 2 or len(calls) < self.MIN_POOLED:
            return super().each(stage, function, calls)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, wait

        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.parallel, mp_context=multiprocessing.get_context("forkserver"))
        progress = current_progress()
        progress.start(f"{stage} ({len(calls)} items in {self.parallel} processes)", len(calls))
        futures = [self._executor.submit(function, *args) for args in calls]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when="FIRST_COMPLETED")
            progress.advance(len(done))
            for future in done:
                if future.exception() is not None:  # a ResourceError or a bug: stop, as in this process
                    for other in pending:
                        other.cancel()
                    progress.finish()
                    raise future.exception()
        progress.finish()
        return [future.result() for future in futures]


def default_workers() -> int:
    """Worker processes when none are asked for: one per core, at most 8."""
    return max(1, min(os.cpu_count() or 1, 8))


@dataclass
class RunSummary:
    run_id: str
    workspace: str
    engine: str
    task_runner: str
    inputs: list[str]
    started_at: str
    state: str = "running"  # running | finished | failed (a killed run stays "running"; the next run marks it)
    finished_at: str = ""
    seconds: float = 0.0
    error: str = ""
    interrupted_runs: list[str] = field(default_factory=list)
    stages: dict[str, dict] = field(default_factory=dict)  # stage -> {"seconds": s, ...counts}
    failures: list[dict] = field(default_factory=list)  # {"stage", "item", "reason"}
    llm: dict[str, Any] = field(default_factory=lambda: {"calls": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0})
    routes: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def path(self) -> Path:
        return Path(self.workspace) / RUNS_DIR / f"{self.run_id}.json"

    def save(self) -> Path:
        from merforge.storage.workspace import write_atomic

        path = self.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(self.as_dict(), indent=2) + "\n").encode())
        return path

    def to_markdown(self) -> str:
        lines = [f"# merforge run {self.run_id}", "",
                 f"{self.state} in {self.seconds:.1f} s; engine {self.engine}, task runner {self.task_runner}", "",
                 "| stage | seconds | counts |", "|---|---:|---|"]
        for stage, data in self.stages.items():
            counts = ", ".join(f"{k} {v}" for k, v in data.items() if k != "seconds" and not isinstance(v, dict))
            lines.append(f"| {stage} | {data.get('seconds', 0.0):.1f} | {counts} |")
        lines += ["", f"LLM calls {self.llm['calls']}, tokens in/out {self.llm['tokens_in']}/{self.llm['tokens_out']}, "
                      f"cost ${self.llm['cost_usd']:.4f}"]
        if self.routes:
            lines += ["", "routes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.routes.items()))]
        if self.failures:
            lines += ["", f"## {len(self.failures)} failures", "", "| stage | item | reason |", "|---|---|---|"]
            lines += [f"| {f['stage']} | {_cell(f['item'])} | {_cell(f['reason'])} |" for f in self.failures[:200]]
            if len(self.failures) > 200:
                lines.append(f"| ... | {len(self.failures) - 200} more in {self.path().name} | |")
        if self.error:
            lines += ["", f"**stopped:** {self.error}"]
        return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:300]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def mark_interrupted_runs(root: Path) -> list[str]:
    """The run named in runs/active was killed before it could remove that marker (we hold the
    lock now, so it is not running): mark its summary "interrupted". One file read, however
    many runs the workspace has had."""
    from merforge.storage.workspace import write_atomic

    runs = Path(root) / RUNS_DIR
    try:
        run_id = (runs / ACTIVE_FILE).read_text().strip()
    except FileNotFoundError:
        return []
    path = runs / f"{run_id}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if data.get("state") != "running":
        return []
    data["state"] = "interrupted"
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())
    return [run_id]


def run_pipeline(workspace_dir: str, inputs: Sequence[str] = (), force: bool = False,
                 runner: Runner | None = None) -> RunSummary:
    """Run every stage in order and return the summary (also saved under <workspace>/runs/).

    The caller holds `workspace_lock`. A stage's failed items are recorded with their
    reasons and never stop the others; a ResourceError (disk full, database locked) or a
    configuration error stops the run, and the summary says so before it is raised again.
    """
    runner = runner or Runner()
    summary = RunSummary(run_id=new_run_id(), workspace=str(Path(workspace_dir).resolve()),
                         engine=runner.name, task_runner=runner.task_runner, inputs=[str(p) for p in inputs],
                         started_at=_now())
    summary.interrupted_runs = mark_interrupted_runs(Path(workspace_dir))
    summary.save()
    from merforge.storage.workspace import write_atomic

    active = Path(workspace_dir) / RUNS_DIR / ACTIVE_FILE
    write_atomic(active, summary.run_id.encode())
    started = time.perf_counter()

    def stage(name: str, work: Callable[[], dict]) -> None:
        begun = time.perf_counter()
        data = work()
        data = {"seconds": round(time.perf_counter() - begun, 3), **data}
        summary.stages[name] = data
        summary.save()

    try:
        stage("ingest", lambda: _ingest(workspace_dir, list(summary.inputs), runner, summary))
        stage("sample", lambda: _sample(workspace_dir, force, runner, summary))
        stage("preprocess", lambda: _preprocess(workspace_dir, force, runner, summary))
        stage("annotate", lambda: _annotate(workspace_dir, force, runner, summary))
        stage("judge", lambda: _judge(workspace_dir, runner, summary))
        stage("report", lambda: _report(workspace_dir, runner, summary))
        summary.state = "finished"
    except BaseException as error:
        summary.state = "failed"
        summary.error = str(resource_error(error) or error) or type(error).__name__
        raise
    finally:
        summary.finished_at = _now()
        summary.seconds = round(time.perf_counter() - started, 3)
        try:
            summary.save()
            active.unlink(missing_ok=True)
        except OSError:
            pass  # a full disk: the error being raised says so
    return summary


def _ingest(workspace_dir: str, inputs: list[str], runner: Runner, summary: RunSummary) -> dict:
    if not inputs:
        return {"inputs": 0}
    result = runner.one("ingest", ingest_inputs, workspace_dir, inputs)
    summary.failures += result["failures"]
    return dict(sorted(result["counts"].items()))


def _sample(workspace_dir: str, force: bool, runner: Runner, summary: RunSummary) -> dict:
    todo, skipped = plan_sampling(workspace_dir, force)
    outcomes = runner.each("sample", sample_one, [(workspace_dir, source_id) for source_id in todo])
    states = Counter(o["state"] for o in outcomes)
    summary.failures += [{"stage": "sample", "item": o["path"], "reason": o["reason"]}
                         for o in outcomes if o["state"] == "failed"]
    return {"sampled": states["done"], "unchanged": skipped, "failed": states["failed"],
            "new clips": sum(o["clips"] for o in outcomes),
            "media seconds": round(sum(o["seconds_of_media"] for o in outcomes), 1)}


def _preprocess(workspace_dir: str, force: bool, runner: Runner, summary: RunSummary) -> dict:
    groups, skipped = plan_preprocessing(workspace_dir, force)
    results = runner.each("preprocess", preprocess_one, [(workspace_dir, group) for group in groups])
    outcomes = [o for r in results for o in r["outcomes"]]
    timings: Counter = Counter()
    for result in results:
        timings.update(result["timings"])
    states = Counter(o["state"] for o in outcomes)
    summary.failures += [{"stage": "preprocess", "item": f"{o['source_path']} clip {o['clip_id'][:12]}",
                          "reason": o["reason"]} for o in outcomes if o["state"] == "failed"]
    return {"clips done": states["done"], "unchanged": len(skipped) + states["skipped"], "failed": states["failed"],
            "time per part": {k: round(v, 2) for k, v in sorted(timings.items())}}


def _annotate(workspace_dir: str, force: bool, runner: Runner, summary: RunSummary) -> dict:
    batches, current = plan_annotation(workspace_dir, force, runner.parallel)
    results = runner.each("annotate", annotate_batch, [(workspace_dir, batch, force) for batch in batches])
    statuses: Counter = Counter()
    for result in results:
        statuses.update(result["statuses"])
        for key in ("calls", "tokens_in", "tokens_out", "cost_usd"):
            summary.llm[key] += result[key]
        summary.failures += [{"stage": "annotate", "item": f"clip {f['item'][:12]} {f['annotator']}",
                              "reason": f"{f['status']}: {f['reason']}"} for f in result["failures"]]
    summary.llm["cost_usd"] = round(summary.llm["cost_usd"], 6)
    return {"clips annotated": sum(r["clips"] for r in results), "unchanged": current,
            **{f"answers {k}": v for k, v in sorted(statuses.items())},
            "llm calls": sum(r["calls"] for r in results),
            "calls saved by the cascade": sum(r["cascade_skipped_calls"] for r in results)}


def _judge(workspace_dir: str, runner: Runner, summary: RunSummary) -> dict:
    result = runner.one("judge", judge_all, workspace_dir)
    summary.routes = dict(sorted(result["routes"].items()))
    return {"clips": result["clips"], "annotations": result["annotations"],
            **{f"route {k}": v for k, v in sorted(result["routes"].items())}}


def _report(workspace_dir: str, runner: Runner, summary: RunSummary) -> dict:
    result = runner.one("report", report_all, workspace_dir)
    summary.outputs.update({"report_html": result["html"], "report_json": result["json"]})
    return {"written": 2}
