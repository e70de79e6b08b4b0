"""The acoustic specialist's speech-emotion model: the shipped file, its card, its
training rows, its predictions on labelled speech read in place, and its errors.

The labelled clips live in ../shared/data/labelled (licences forbid copying them into the
repository); tests that need them skip with a message when the folder is missing.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from merforge.agents.labels import get_space
from merforge.agents.speech_emotion import (
    EMOTIONS,
    MAX_MISSING_SHARE,
    SPEECH_EMOTION_MODEL_PATH,
    MissingFeaturesError,
    SpeechEmotionError,
    SpeechEmotionModelError,
    cross_validated_predictions,
    feature_contributions,
    fit_speech_emotion,
    load_speech_emotion_model,
    predict_proba,
    save_speech_emotion_model,
    scores,
)
from merforge.agents.train_speech_emotion import (
    TrainingDataError,
    file_clips,
    main,
    model_card,
    rows_digest,
    training_rows,
)
from merforge.storage.records import AnnotationStatus

LABELLED = Path(__file__).resolve().parents[2] / "shared" / "data" / "labelled"
EKMAN = get_space("ekman7")

# Training clips of the shipped model, over the three corpora, that it names correctly: the
# features computed here must reproduce the training features for that to hold. How well it
# does on speakers and corpora it never saw is in its card (held-out UAR), not here.
LABELLED_CLIPS = {
    "audio/ravdess/03-01-05-02-02-02-05.wav": "anger",
    "audio/emovo/pau-m2-n1.wav": "fear",
    "audio/emovo/sor-f3-n1.wav": "surprise",
    "audio/urdu/SM20_F1_N05.wav": "neutral",
    "audio/urdu/SM18_F1_H049.wav": "happiness",
}


def needs_labelled():
    if not (LABELLED / "labels.csv").exists():
        pytest.skip(f"the labelled development set is not at {LABELLED} (see ../shared/data/labelled/README.md)")


@pytest.fixture(scope="module")
def shipped():
    return load_speech_emotion_model(SPEECH_EMOTION_MODEL_PATH)


@pytest.fixture(scope="module")
def labelled_features():
    """{path: (emotion, eGeMAPS of its first clip)} for LABELLED_CLIPS, computed as the pipeline does."""
    needs_labelled()
    found = {}
    for path, emotion in LABELLED_CLIPS.items():
        clips = file_clips(LABELLED / path)
        assert clips, f"{path} gave no voiced clip"
        start, end, voiced, egemaps = clips[0]
        assert 0.0 <= start < end and voiced > 0.2 and len(egemaps) == 88
        found[path] = (emotion, egemaps)
    return found


def test_shipped_model_card_is_generated_from_the_model_file(shipped):
    card = SPEECH_EMOTION_MODEL_PATH.with_suffix(".md").read_text(encoding="utf-8")
    assert card == model_card(shipped)
    evaluation = shipped["evaluation"]
    corpus_out, speaker_out = evaluation["leave_one_corpus_out"], evaluation["leave_one_speaker_out"]
    # The headline numbers of the card are the stored ones.
    assert f"Mean UAR over the three test corpora: **{corpus_out['mean_corpus_uar']:.3f}**" in card
    assert f"UAR **{speaker_out['pooled']['uar']:.3f}**" in card
    # The stored summary agrees with its own confusion table.
    for result in (corpus_out, speaker_out):
        confusion = result["confusion"]
        total = sum(sum(row.values()) for row in confusion.values())
        assert total == result["pooled"]["clips"] == shipped["training"]["clips"]
        correct = sum(confusion[e][e] for e in confusion)
        assert correct / total == pytest.approx(result["pooled"]["accuracy"], abs=1e-4)
        for emotion, row in confusion.items():
            assert row[emotion] / sum(row.values()) == pytest.approx(result["pooled"]["recall"][emotion], abs=1e-4)
    assert evaluation["chosen"] == shipped["classifier"]["name"]
    best = max(evaluation["candidates"].values(), key=lambda c: c["selection_uar"])
    assert best["selection_uar"] == evaluation["candidates"][evaluation["chosen"]]["selection_uar"]
    # Held out, the model is well above chance (1/7) on unseen speakers and unseen corpora.
    assert speaker_out["pooled"]["uar"] > 0.4 and corpus_out["mean_corpus_uar"] > 0.3


def test_stored_digest_is_the_digest_of_the_training_rows_read_in_place(shipped):
    needs_labelled()
    rows = training_rows(LABELLED)
    assert len(rows) == shipped["training"]["rows"]
    assert rows_digest(rows) == shipped["training"]["rows_digest"]
    assert {row["corpus"] for row in rows} == set(shipped["training"]["clips_per_corpus_and_emotion"])
    # Changing one label changes the digest.
    changed = copy.deepcopy(rows)
    changed[0]["emotion"] = "anger" if changed[0]["emotion"] != "anger" else "fear"
    assert rows_digest(changed) != rows_digest(rows)


def test_predictions_on_labelled_clips_read_in_place(shipped, labelled_features):
    for path, (emotion, egemaps) in labelled_features.items():
        probabilities = predict_proba(shipped, egemaps)
        assert set(probabilities) == set(shipped["classes"]) == set(EMOTIONS)
        assert sum(probabilities.values()) == pytest.approx(1.0)
        top = max(probabilities, key=probabilities.get)
        print(path, emotion, {k: round(v, 2) for k, v in sorted(probabilities.items(), key=lambda kv: -kv[1])[:3]})
        assert top == emotion, (path, probabilities)
        # The contributions explain the answer: the top emotion's leading features raise it.
        drivers = feature_contributions(shipped, egemaps, top)
        assert drivers[0][3] > 0 and len(drivers) == 88


def test_missing_features_enter_at_the_training_mean(shipped, labelled_features):
    _, egemaps = next(iter(labelled_features.values()))
    names = shipped["features"]
    means = dict(zip(names, shipped["means"]))
    few = dict(egemaps)
    for name in names[:5]:
        del few[name]
    at_mean = dict(egemaps) | {name: means[name] for name in names[:5]}
    assert predict_proba(shipped, few) == pytest.approx(predict_proba(shipped, at_mean))
    too_few = {name: value for name, value in egemaps.items() if name in names[: int(len(names) * 0.7)]}
    with pytest.raises(MissingFeaturesError, match=r"prosody.egemaps = true"):
        predict_proba(shipped, too_few)
    assert len(names) - len(too_few) > MAX_MISSING_SHARE * len(names)
    with pytest.raises(MissingFeaturesError):
        predict_proba(shipped, {})


@pytest.mark.parametrize("damage, message", [
    (lambda m: m.pop("coefficients"), "'coefficients' is missing"),
    (lambda m: m["coefficients"][0].pop(), "every coefficient row"),
    (lambda m: m.__setitem__("classes", ["anger", "joy"] + m["classes"][2:]), "class\\(es\\) joy are not among"),
    (lambda m: m["scales"].__setitem__(0, 0.0), "scale <= 0"),
    (lambda m: m["means"].__setitem__(3, "x"), "not a number"),
    (lambda m: m.__setitem__("format_version", 99), "version 99"),
])
def test_malformed_model_file_is_refused_with_a_clear_error(shipped, tmp_path, damage, message):
    model = copy.deepcopy(shipped)
    damage(model)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(model))
    with pytest.raises(SpeechEmotionModelError, match=message) as error:
        load_speech_emotion_model(path)
    assert str(path) in str(error.value) and "train_speech_emotion" in str(error.value)


def test_missing_or_unparsable_model_file(tmp_path):
    with pytest.raises(SpeechEmotionModelError, match="not found at .*annotate.acoustic_model"):
        load_speech_emotion_model(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": ')
    with pytest.raises(SpeechEmotionModelError, match="not valid JSON"):
        load_speech_emotion_model(broken)


def test_fit_and_cross_validated_predictions_keep_each_group_out(labelled_features):
    """Each row is predicted by a model fitted without its group, through the stored form."""
    rows = list(labelled_features.values())
    # Two copies of each clip, slightly scaled, as two "speakers": a real fit on real features.
    features = [e for _, e in rows] + [{k: v * 1.01 for k, v in e.items()} for _, e in rows]
    labels = [emotion for emotion, _ in rows] * 2
    groups = ["a"] * len(rows) + ["b"] * len(rows)
    held_out = cross_validated_predictions(features, labels, groups)
    only_b = fit_speech_emotion(features[len(rows):], labels[len(rows):])
    for row in range(len(rows)):
        expected = predict_proba(only_b, features[row])
        assert {k: v for k, v in held_out[row].items() if v > 0} == pytest.approx(expected)
        assert set(held_out[row]) == set(EMOTIONS)
    model = fit_speech_emotion(features, labels)
    assert json.loads(json.dumps(model)) == model  # plain JSON, no pickle
    with pytest.raises(SpeechEmotionError, match="at least two groups"):
        cross_validated_predictions(features, labels, ["a"] * len(features))
    with pytest.raises(SpeechEmotionError, match=r"label\(s\) joy are not among"):
        fit_speech_emotion(features, ["joy"] * len(features))
    with pytest.raises(SpeechEmotionError, match="unknown classifier"):
        fit_speech_emotion(features, labels, classifier="forest")


def test_scores_are_accuracy_and_unweighted_average_recall():
    truth = ["anger"] * 4 + ["sadness"] * 2
    predicted = ["anger", "anger", "anger", "fear", "sadness", "anger"]
    result = scores(truth, predicted)
    assert result["accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    assert result["recall"] == {"anger": 0.75, "sadness": 0.5}
    assert result["uar"] == pytest.approx(0.625)


def test_training_needs_the_labels_file(tmp_path, capsys):
    with pytest.raises(TrainingDataError, match="labels.csv"):
        training_rows(tmp_path)
    assert main(["--labelled", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "labels.csv" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- the acoustic agent with the model --------------------------------------------------


@pytest.fixture(scope="module")
def labelled_workspace(tmp_path_factory):
    """A workspace with two labelled RAVDESS files (anger, sadness; both among the model's training
    clips), sampled and preprocessed by the pipeline."""
    needs_labelled()
    from merforge.agents.evidence import load_clip_evidence
    from merforge.preprocess.features import preprocess_sources
    from merforge.preprocess.ingest import ingest
    from merforge.preprocess.sampling import sample_sources
    from merforge.storage.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("speech_emotion") / "ws")
    files = {"anger": LABELLED / "audio/ravdess/03-01-05-02-02-02-05.wav",
             "sadness": LABELLED / "audio/ravdess/03-01-04-02-01-02-21.wav"}
    ingest(ws, list(files.values()))
    sample_sources(ws)
    assert preprocess_sources(ws).count("failed") == 0
    evidence = {}
    for emotion, path in files.items():
        (source,) = [s for s in ws.store.sources() if Path(s.path).name == path.name]
        (clip,) = ws.store.clips(source.id)
        evidence[emotion] = load_clip_evidence(ws, clip)
    yield ws, evidence
    ws.close()


def test_acoustic_agent_labels_real_emotional_speech(labelled_workspace, shipped):
    from merforge.agents.specialists import AcousticAgent

    _, evidence = labelled_workspace
    agent = AcousticAgent()
    for emotion, clip in evidence.items():
        annotation = asyncio.run(agent.annotate(clip, EKMAN))
        print(emotion, annotation.label, annotation.label_probabilities, *annotation.steps, sep="\n  ")
        assert annotation.status == AnnotationStatus.OK and annotation.label == emotion
        assert annotation.valence is not None and annotation.arousal is not None
        assert annotation.coverage > 0.5
        # The model's held-out UAR from its card is quoted, and the eGeMAPS drivers by name.
        uar = shipped["evaluation"]["leave_one_corpus_out"]["mean_corpus_uar"]
        assert any(f"held-out UAR {uar:.2f}" in step for step in annotation.steps)
        assert any("eGeMAPS functionals over" in step and "_sma3" in step for step in annotation.steps)
        # Evidence items are checkable Praat measures over the clip or the F0 peak.
        assert {item.feature for item in annotation.evidence} <= {
            "f0_mean", "f0_sd", "f0_range", "hnr", "jitter_local", "shimmer_local", "voiced_fraction",
            "speech_rate_syllables", "intensity_sd", "f0"}
    assert agent.version == "acoustic-specialist-v2"


def test_acoustic_agent_judged_claims_hold(labelled_workspace):
    """The evidence-grounded judge finds no contradicted claim in the agent's answer."""
    from merforge.agents.judge import ClipFacts, check_claims
    from merforge.agents.specialists import AcousticAgent

    _, evidence = labelled_workspace
    agent = AcousticAgent()
    for clip in evidence.values():
        annotation = asyncio.run(agent.annotate(clip, EKMAN))
        checks = check_claims(annotation, ClipFacts.from_evidence(clip))
        verdicts = [c.verdict for c in checks]
        print([(c.verdict, c.reason) for c in checks])
        assert "contradicted" not in verdicts and "supported" in verdicts


def test_acoustic_agent_abstains_without_egemaps_and_uses_the_configured_model(labelled_workspace, shipped,
                                                                                tmp_path):
    from merforge.agents.annotate import build_agents
    from merforge.agents.specialists import AcousticAgent, specialist_agents
    from merforge.errors import ConfigError
    from merforge.storage.config import parse_config

    ws, evidence = labelled_workspace
    clip = evidence["anger"]
    bare = dataclasses.replace(clip, prosody=clip.prosody.model_copy(update={"egemaps": {}}))
    annotation = asyncio.run(AcousticAgent().annotate(bare, EKMAN))
    assert annotation.status == AnnotationStatus.ABSTAINED and annotation.label is None
    assert "egemaps" in annotation.reason

    # A model trained elsewhere (here: the shipped one with neutral's intercept raised) is used
    # when annotate.acoustic_model names it, relative to the workspace.
    tilted = copy.deepcopy(shipped)
    tilted["intercepts"][tilted["classes"].index("neutral")] += 50.0
    (ws.root / "fold.json").write_text(json.dumps(tilted))
    config = ws.config.model_copy(update={"annotate": ws.config.annotate.model_copy(
        update={"acoustic_model": "fold.json", "agents": ("acoustic",)})})
    (agent,) = build_agents(dataclasses.replace(ws, config=config, _store=None))
    assert agent.emotion_model["intercepts"] == tilted["intercepts"]
    assert asyncio.run(agent.annotate(clip, EKMAN)).label == "neutral"
    assert "fold.json" in agent.model
    # A fold model as a benchmark makes it: fitted on some clips, saved, named in the config.
    emotions = ("anger", "sadness")
    fold = fit_speech_emotion([evidence[e].prosody.egemaps for e in emotions], list(emotions))
    save_speech_emotion_model(fold, ws.root / "fold_bare.json")
    (agent,) = specialist_agents(["acoustic"], acoustic_model=ws.root / "fold_bare.json")
    answer = asyncio.run(agent.annotate(clip, EKMAN))
    assert answer.label == "anger" and "held-out results are not stored with this model" in answer.steps[1]
    (default,) = specialist_agents(["acoustic"])
    assert default.emotion_model == shipped
    with pytest.raises(SpeechEmotionModelError, match="not found"):
        specialist_agents(["acoustic"], acoustic_model=tmp_path / "absent.json")
    with pytest.raises(ConfigError, match="annotate.acoustic_model"):
        parse_config({"annotate": {"acoustic_model": "model.pkl"}})
    assert np.isfinite(shipped["intercepts"]).all()
