"""The whole pipeline as one Prefect flow, on the local machine or scaled out on Dask or Ray.

`pipeline_flow` runs `merforge.flows.pipeline.run_pipeline` with each stage's items as
Prefect tasks. The task runner is a flow *parameter* (not a decoration-time option), so a
deployment made by `merforge serve --task-runner dask` runs its scheduled runs on Dask:

- local: the items run one after another in the flow's process (what `merforge run` does
  by default; progress bars work);
- dask: a temporary `distributed.LocalCluster` with `workers` processes, or the running
  scheduler at `address` (workers on other machines: `dask worker tcp://host:8786`);
- ray: a local Ray instance with `workers` CPUs, or the cluster at `address`.

Items are shipped as (workspace folder, ids), so every worker needs the workspace at the
same path (a shared file system) and the same database (`store.database_url`, PostgreSQL
for several machines). The run summary is also published as the markdown artifact
`run-summary`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from merforge.errors import ConfigError
from merforge.flows import pipeline
from merforge.flows.pipeline import TASK_RUNNERS, Runner, default_workers, run_pipeline, workspace_lock

_TASKS = {
    function.__name__: task(function, name=function.__name__.replace("_", "-"), cache_policy=NO_CACHE)
    for function in (pipeline.ingest_inputs, pipeline.sample_one, pipeline.preprocess_one, pipeline.annotate_batch,
                     pipeline.judge_all, pipeline.report_all)
}


def math_thread_environment() -> dict[str, str]:
    """The OpenMP / MKL / OpenBLAS thread counts of this process (all cores where unset),
    for worker processes, so that their numbers equal a local run's."""
    cores = str(os.cpu_count() or 1)
    return {name: os.environ.get(name, cores) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def make_task_runner(name: str, workers: int = 0, address: str = ""):
    """The Prefect task runner for `name` ('dask' or 'ray'); None for 'local'."""
    if name not in TASK_RUNNERS:
        raise ConfigError(f"--task-runner must be one of {', '.join(TASK_RUNNERS)}, not {name!r}")
    workers = workers or default_workers()
    if name == "dask":
        import dask
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        # Workers inherit this process's math-library thread settings: Dask's nanny sets
        # OMP_NUM_THREADS=1 by default, and CTranslate2's int8 results (Whisper word and
        # language probabilities) change with it, so a Dask run would differ from a local one.
        dask.config.set({"distributed.nanny.pre-spawn-environ": dict(
            dask.config.get("distributed.nanny.pre-spawn-environ", {}), **math_thread_environment())})
        # one single-threaded process per worker: the stages use their own threads
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    if name == "ray":
        from prefect_ray import RayTaskRunner

        # as for Dask: Ray also sets OMP_NUM_THREADS=1 in its workers unless told otherwise
        init = {"include_dashboard": False, "log_to_driver": False,
                "runtime_env": {"env_vars": math_thread_environment()}}
        if not address:
            init["num_cpus"] = workers
        return RayTaskRunner(address=address or None, init_kwargs=init)
    return None


class PrefectRunner(Runner):
    """Each item is a Prefect task run: inline for 'local', submitted to Dask/Ray otherwise."""

    name = "prefect"

    def __init__(self, task_runner_name: str, task_runner=None, parallel: int = 1):
        self.task_runner = task_runner_name
        self._runner = task_runner
        self.parallel = parallel if task_runner is not None else 1

    def each(self, stage: str, function: Callable, calls: Sequence[tuple]) -> list:
        prefect_task = _TASKS[function.__name__]
        if self._runner is None:
            return [prefect_task(*args) for args in calls]
        signature = inspect.signature(prefect_task.fn)
        futures = [self._runner.submit(prefect_task, parameters=dict(signature.bind(*args).arguments))
                   for args in calls]
        progress = pipeline.current_progress()  # workers report nothing: count finished items here
        progress.start(f"{stage} ({len(futures)} items on {self.task_runner})", len(futures))
        for _ in as_completed(futures):
            progress.advance(1)
        progress.finish()
        return [future.result() for future in futures]  # raises the first item's unexpected error

    def one(self, stage: str, function: Callable, *args: Any) -> Any:
        return _TASKS[function.__name__](*args)  # whole-run steps (judge, report) run in the flow's process


@flow(name="merforge-pipeline", description="ingest, sample, preprocess, annotate, judge and route, report")
def pipeline_flow(workspace_dir: str, inputs: list[str] | None = None, force: bool = False,
                  task_runner: str = "local", workers: int = 0, address: str = "") -> dict:
    """Run the whole pipeline on the workspace; new inputs are ingested first. Returns the run summary."""
    runner_object = make_task_runner(task_runner, workers, address)
    summary = None
    with workspace_lock(workspace_dir):
        if runner_object is None:
            summary = _run(workspace_dir, inputs, force, PrefectRunner("local"))
        else:
            with runner_object as started:
                summary = _run(workspace_dir, inputs, force,
                               PrefectRunner(task_runner, started, workers or default_workers()))
    return summary.as_dict()


def _run(workspace_dir: str, inputs, force: bool, runner: PrefectRunner):
    try:
        summary = run_pipeline(workspace_dir, inputs or [], force, runner)
    except BaseException as error:
        _publish_failure(workspace_dir, error)
        raise
    create_markdown_artifact(key="run-summary", markdown=summary.to_markdown(),
                             description=f"merforge run {summary.run_id}")
    if not pipeline.progress_bridge:  # a scheduled run: one line in the `merforge serve` terminal
        print(f"merforge run {summary.run_id} {summary.state} in {summary.seconds:.1f} s: "
              + "; ".join(f"{stage} " + ", ".join(f"{k} {v}" for k, v in data.items()
                                                  if k != "seconds" and v and not isinstance(v, dict))
                          for stage, data in summary.stages.items())
              + f"; {len(summary.failures)} failures; summary in {summary.path()}", flush=True)
    return summary


def _publish_failure(workspace_dir: str, error: BaseException) -> None:
    try:
        create_markdown_artifact(key="run-summary", markdown=f"# merforge run stopped\n\n{error}",
                                 description=f"merforge run on {workspace_dir} stopped")
    except Exception:  # the artifact is a courtesy; the error itself is raised
        pass
