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


def test_smoothed_map_does_not_promise_certainty_from_three_clips():
    conf = np.array([0.3, 0.35, 0.4, 0.45, 0.5, 0.9, 0.95, 0.97])
    correct = np.array([0, 1, 0, 0, 1, 1, 1, 1], dtype=bool)
    assert IsotonicMap.fit(conf, correct)(0.96) == pytest.approx(1.0)
    smoothed = IsotonicMap.fit(conf, correct, smoothed=True)
    assert smoothed(0.96) == pytest.approx((4 + 1) / (4 + 2))  # the top block: 4 right of 4 (0.5 joins it)
    values = smoothed(np.linspace(0, 1, 101))
    assert np.all(np.diff(values) >= -1e-12)


def _labelled_answers(n: int, seed: int) -> tuple[dict, dict]:
    """Two agents: a sure, mostly right acoustic one and a weak visual one."""
    rng = np.random.default_rng(seed)
    answers, truth = {}, {}
    for i in range(n):
        clip, true = f"c{i}", EKMAN.labels[i % 7]
        p = float(rng.uniform(0.3, 0.95))
        guess = true if rng.random() < p else EKMAN.labels[(i + 3) % 7]
        weak = true if rng.random() < 0.4 else EKMAN.labels[(i + 1) % 7]
        answers[clip] = [_answer(clip, "acoustic", guess, p), _answer(clip, "visual", weak, 0.5)]
        truth[clip] = true
    return answers, truth


def test_consensus_confidence_is_on_the_consensus_maps_scale_and_so_is_its_threshold():
    from merforge.agents.aggregate import build_consensus
    from merforge.storage.config import RouteConfig

    answers, truth = _labelled_answers(300, 2)
    calibration = fit_from_annotations(answers, truth, EKMAN, 0.85, {"labels_file": "x.csv"})
    consensus = build_consensus(answers, {}, EKMAN, RouteConfig(target_precision=0.85), calibration=calibration)
    conf = np.array([consensus[c].confidence for c in answers])
    right = np.array([consensus[c].label == truth[c] for c in answers])
    # every reported confidence is a value of the consensus map (its breakpoints' values)
    assert set(np.round(conf, 9)) <= set(np.round(calibration.consensus.precision.y, 9))
    # in-sample, clips at or above the threshold are right at about the target rate
    threshold = calibration.consensus.threshold
    assert np.isfinite(threshold)
    above = conf >= threshold - 1e-12
    assert right[above].mean() >= 0.85 - 1e-9
    assert abs(right[above].mean() - calibration.consensus.threshold_precision) < 1e-9
    # the reported confidence is calibrated in-sample: ECE after the map is small
    assert calibration.consensus.ece_after <= calibration.consensus.ece_before + 1e-9


def test_a_calibration_file_of_an_older_version_is_refused(tmp_path):
    answers, truth = _labelled_answers(60, 3)
    calibration = fit_from_annotations(answers, truth, EKMAN, 0.9, {"labels_file": "x.csv"})
    ws = Workspace.init(tmp_path / "ws")
    (ws.root / CALIBRATION_FILE).write_text(json.dumps(calibration.to_json() | {"version": 1}))
    with pytest.raises(CalibrationError, match="version 1 is not 2"):
        load_calibration(ws)
