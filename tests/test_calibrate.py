"""`merforge calibrate`'s parts without a pipeline: reading labels, fitting, storing, refusing bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from merforge.agents.calibrate_stage import (
    CALIBRATION_FILE,
    LabelsFileError,
    fit_from_annotations,
    load_calibration,
    read_labels_csv,
    save_calibration,
)
from merforge.agents.calibration import CalibrationError, IsotonicMap, wilson_interval
from merforge.agents.labels import get_space
from merforge.storage.records import Annotation, AnnotationStatus
from merforge.storage.workspace import Workspace

EKMAN = get_space("ekman7")


def test_labels_csv_by_file_or_clip_and_its_errors(tmp_path):
    by_file = tmp_path / "labels.csv"
    by_file.write_text("file,label\nclips/a.wav,anger\nb.mp4,Happiness\n,fear\n")
    assert read_labels_csv(by_file) == [("file", "clips/a.wav", "anger"), ("file", "b.mp4", "Happiness")]
    by_clip = tmp_path / "clips.csv"
    by_clip.write_text("clip,emotion\nabc123,sadness\n")
    assert read_labels_csv(by_clip) == [("clip", "abc123", "sadness")]
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("name,score\nx,1\n")
    with pytest.raises(LabelsFileError, match="needs a 'file'"):
        read_labels_csv(wrong)
    with pytest.raises(LabelsFileError, match="not found"):
        read_labels_csv(tmp_path / "missing.csv")


def test_wilson_interval_matches_its_formula_at_known_points():
    # Wilson 1927; e.g. 9 of 10: (0.596, 0.982) as tabulated by Newcombe, Stat Med 17 (1998), table II
    low, high = wilson_interval(9, 10)
    assert low == pytest.approx(0.5958, abs=1e-3) and high == pytest.approx(0.9821, abs=1e-3)
    assert all(np.isnan(v) for v in wilson_interval(0, 0))


def test_isotonic_map_is_monotone_and_flat_outside():
    conf = np.linspace(0.2, 0.9, 200)
    correct = np.random.default_rng(0).random(200) < conf
    curve = IsotonicMap.fit(conf, correct)
    values = curve(np.linspace(0, 1, 50))
    assert np.all(np.diff(values) >= -1e-12) and values[0] == curve(0.2) and values[-1] == curve(0.9)


def _answer(clip: str, agent: str, label: str | None, p: float = 0.8) -> Annotation:
    if label is None:
        return Annotation(id=f"{clip}-{agent}", clip_id=clip, annotator_id=agent, status=AnnotationStatus.ABSTAINED,
                          reason="no face was analysed", coverage=0.0)
    rest = (1 - p) / 6
    return Annotation(id=f"{clip}-{agent}", clip_id=clip, annotator_id=agent, label=label,
                      label_probabilities={x: p if x == label else rest for x in EKMAN.labels}, coverage=1.0)


def test_fit_counts_abstentions_stores_provenance_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    answers, truth = {}, {}
    for i in range(60):
        clip, true = f"c{i}", EKMAN.labels[i % 7]
        guess = true if rng.random() < 0.8 else EKMAN.labels[(i + 1) % 7]
        answers[clip] = [_answer(clip, "acoustic", guess, float(rng.uniform(0.4, 0.9))),
                         _answer(clip, "visual", None)]
        truth[clip] = true
    calibration = fit_from_annotations(answers, truth, EKMAN, 0.9, {"labels_file": "x.csv"})
    assert set(calibration.agents) == {"acoustic"}  # the visual agent never answered: nothing to calibrate
    assert calibration.agents["acoustic"].n == 60 and calibration.agents["acoustic"].abstained == 0
    assert calibration.provenance == {"labels_file": "x.csv", "clips": 60}
    assert calibration.consensus is not None and 0.7 < calibration.consensus.accuracy < 0.9

    ws = Workspace.init(tmp_path / "ws")
    assert load_calibration(ws) is None
    save_calibration(ws, calibration)
    assert load_calibration(ws) == calibration
    ws.config = ws.config.model_copy(update={"route": ws.config.route.model_copy(update={"use_calibration": False})})
    assert load_calibration(ws) is None  # switched off in config
    ws.config = Workspace.open(ws.root).config
    (ws.root / CALIBRATION_FILE).write_text(json.dumps({"labels": ["a"], "agents": {"x": {}}}))
    with pytest.raises(CalibrationError, match="malformed"):
        load_calibration(ws)
    other = calibration.to_json() | {"labels": ["calm", "angry"]}
    (ws.root / CALIBRATION_FILE).write_text(json.dumps(other))
    with pytest.raises(CalibrationError, match="run `merforge calibrate` again"):
        load_calibration(ws)
