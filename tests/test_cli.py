"""The command line, as a curator uses it."""

import json

import pytest
from typer.testing import CliRunner

from merforge.flows.cli import app

runner = CliRunner()
COMMANDS = ["init", "ingest", "sample", "preprocess", "annotate", "judge", "status", "export", "demo", "run", "serve"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output and len(result.output) > 200


def test_init_ingest_sample_status_export(tmp_path, media_dir):
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["init", str(ws)]).exit_code == 0
    result = runner.invoke(app, ["ingest", str(media_dir), "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert "new 3" in result.output
    result = runner.invoke(app, ["sample", "-w", str(ws), "--engine", "library"])
    assert result.exit_code == 0, result.output
    assert "3 sampled" in result.output

    status = json.loads(runner.invoke(app, ["status", "-w", str(ws), "--json"]).stdout)
    assert status["stages"]["sample"] == {"done": 3, "failed": 0, "pending": 0}
    assert status["stages"]["ingest"]["usable"] == 3
    assert status["clips"] > 0 and status["failures"] == []

    out = tmp_path / "clips.jsonl"
    assert runner.invoke(app, ["export", "-w", str(ws), "-o", str(out)]).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == status["clips"]
    for row in rows:
        assert set(row) == {"id", "source_id", "source_path", "start", "end", "origin", "keyframes"}
        assert row["start"] < row["end"]
        for kf in row["keyframes"]:
            assert row["start"] <= kf["time"] < row["end"]
            assert kf["path"].endswith(".jpg")

    again = runner.invoke(app, ["sample", "-w", str(ws), "--engine", "library"])
    assert "0 sampled, 3 unchanged" in again.output


def test_status_lists_failures_with_reasons(tmp_path, media_dir):
    ws = tmp_path / "ws"
    runner.invoke(app, ["init", str(ws)])
    (media_dir / "broken.mp4").write_bytes(b"\x00" * 100)
    runner.invoke(app, ["ingest", str(media_dir), "-w", str(ws)])
    status = json.loads(runner.invoke(app, ["status", "-w", str(ws), "--json"]).stdout)
    (failure,) = status["failures"]
    assert failure["path"].endswith("broken.mp4") and "not a media file" in failure["reason"]
    text = runner.invoke(app, ["status", "-w", str(ws)]).output
    assert "broken.mp4" in text


def test_config_errors_are_plain_messages_not_tracebacks(tmp_path):
    ws = tmp_path / "ws"
    runner.invoke(app, ["init", str(ws)])
    (ws / "merforge.toml").write_text("[planner]\nmode = 'sometimes'\n")
    result = runner.invoke(app, ["status", "-w", str(ws)])
    assert result.exit_code == 1
    assert "planner.mode = 'sometimes'" in result.output
    assert "Traceback" not in result.output


def test_missing_workspace_says_how_to_make_one(tmp_path):
    result = runner.invoke(app, ["status", "-w", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "merforge init" in result.output


def test_demo_on_the_bundled_samples(tmp_path):
    result = runner.invoke(app, ["demo", str(tmp_path / "demo"), "--engine", "library"])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "demo" / "clips.jsonl").read_text().splitlines()
    sources = {json.loads(r)["source_path"].rsplit("/", 1)[-1] for r in rows}
    assert sources == {"WolfgangLanger_Pexels.mp4", "single_face.mp4", "testvideo.mp4", "jfk.flac"}
    assert "demo finished" in result.output
