"""The demo end to end, per stage, and Prefect's overhead against calling the library directly.

Runs `merforge demo` (init, the whole pipeline on the bundled samples, release, export) in
fresh workspaces, alternately with `--engine library` (the stages' library functions called
in order) and `--engine prefect` (the same work as a Prefect flow with one task run per
item, against a running Prefect server, as `merforge serve` and a team's server use it).
Each is a separate `merforge` process, timed from start to exit, so imports and model
loading count on both sides. Prefect's cold start of its embedded server (no
PREFECT_API_URL) is measured once and reported on its own line.

    python benchmarks/pipeline_bench.py [--repeats 2]

LAST line: prefect_overhead_ratio=<median prefect seconds / median library seconds>.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MERFORGE = str(Path(sys.executable).parent / "merforge")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"HF_HUB_OFFLINE": "1", "PREFECT_LOGGING_LEVEL": "WARNING"})
    env.update(extra)
    return env


def demo(folder: Path, engine: str, env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    result = subprocess.run([MERFORGE, "demo", str(folder), "--engine", engine], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"merforge demo --engine {engine} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    (summary_path,) = sorted((folder / "runs").glob("*.json"))
    return seconds, json.loads(summary_path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="runs per engine (alternating); medians are compared")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from merforge.flows.run_cli import start_prefect_server, stop_process

    work = Path(tempfile.mkdtemp(prefix="merforge-pipeline-bench-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    print("starting a Prefect server for the flow runs (not timed: a deployment has one running)...", flush=True)
    server, api_url = start_prefect_server(work / "prefect-home", port)
    times: dict[str, list[float]] = {"library": [], "prefect": []}
    summaries: dict[str, dict] = {}
    try:
        # warm the file cache and the models' first load once, untimed
        demo(work / "warm", "library", _env())
        for repeat in range(args.repeats):
            for engine in ("library", "prefect") if repeat % 2 == 0 else ("prefect", "library"):
                env = _env(PREFECT_API_URL=api_url) if engine == "prefect" else _env()
                seconds, summary = demo(work / f"{engine}-{repeat}", engine, env)
                times[engine].append(seconds)
                summaries[engine] = summary
                print(f"  {engine:8s} run {repeat + 1}: {seconds:6.1f} s (pipeline {summary['seconds']:.1f} s)", flush=True)
        cold, _ = demo(work / "prefect-cold", "prefect", _env())
    finally:
        stop_process(server)
        shutil.rmtree(work, ignore_errors=True)

    media = summaries["library"]["stages"]["sample"]["media seconds"]
    clips = summaries["library"]["stages"]["sample"]["new clips"]
    print(f"\nmerforge demo on the bundled samples: {media:.0f} s of media, {clips} clips")
    print(f"{'stage':12s} {'library s':>10s} {'prefect s':>10s}")
    for stage in summaries["library"]["stages"]:
        print(f"{stage:12s} {summaries['library']['stages'][stage]['seconds']:10.2f} "
              f"{summaries['prefect']['stages'][stage]['seconds']:10.2f}")
    library, prefect = statistics.median(times["library"]), statistics.median(times["prefect"])
    print(f"{'pipeline':12s} {summaries['library']['seconds']:10.2f} {summaries['prefect']['seconds']:10.2f}")
    print(f"whole demo command (median of {args.repeats}): library {library:.1f} s, prefect {prefect:.1f} s "
          f"(running Prefect server); prefect with a cold embedded server {cold:.1f} s "
          f"(ratio {cold / library:.2f})")
    print(f"demo_seconds={prefect:.1f}")
    print(f"prefect_overhead_ratio={prefect / library:.3f}")


if __name__ == "__main__":
    main()
