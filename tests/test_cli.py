"""The command line, as a curator uses it."""

import json

import pytest
from typer.testing import CliRunner

from merforge.flows.cli import app

runner = CliRunner()
COMMANDS = ["init", "ingest", "sample", "preprocess", "annotate", "judge", "calibrate", "status", "export", "demo",
            "run", "serve"]


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

    # Labels a curator can trust: no clip whose agents saw little is auto-accepted on one voice.
    from merforge.storage.records import AnnotationStatus, Route
    from merforge.storage.workspace import Workspace

    ws = Workspace.open(tmp_path / "demo")
    (video,) = [s for s in ws.store.sources() if s.path.endswith("testvideo.mp4")]
    glimpses = []
    for clip in ws.store.clips(video.id):
        decided, features = ws.store.consensus(clip.id), ws.store.get_features(clip.id)
        informative = [a for a in ws.store.annotations(clip.id) if a.status == AnnotationStatus.OK]
        if features.faces.presence < 0.2:
            glimpses.append(clip)
            assert decided.route != Route.AUTO_ACCEPT, (clip.start, clip.end, decided)
        if decided.route == Route.AUTO_ACCEPT:
            assert sum(a.label == decided.label for a in informative) >= 2, (clip.start, clip.end, decided)
    # the shot at about 13-24 s, with a face in about a tenth of its frames, is among them
    assert any(12.5 < c.start < 14 and c.end > 20 for c in glimpses), [(c.start, c.end) for c in glimpses]

    # merforge calibrate: labels by file name, a warning for a name that matches nothing, a saved calibration
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nWolfgangLanger_Pexels.mp4,happiness\njfk.flac,neutral\nsingle_face.mp4,neutral\n"
                      "testvideo.mp4,neutral\nnot_here.mp4,anger\n")
    result = runner.invoke(app, ["calibrate", "-w", str(tmp_path / "demo"), "--labels", str(labels)])
    assert result.exit_code == 0, result.output
    assert "not_here.mp4 matches no ingested source" in result.output and "re-routed" in result.output
    saved = json.loads((tmp_path / "demo" / "calibration.json").read_text())
    assert saved["provenance"]["labelled_clips"] == len(ws.store.clips())
    assert saved["provenance"]["labels_sha256"] == __import__("hashlib").sha256(labels.read_bytes()).hexdigest()
    ws.close()
    report = runner.invoke(app, ["report", "-w", str(tmp_path / "demo")])
    assert report.exit_code == 0, report.output
    html = (tmp_path / "demo" / "reports" / "agreement_report.html").read_text()
    assert 'id="calibration"' in html and "Fitted on" in html and 'id="answers"' in html
