"""Train the acoustic specialist's speech-emotion classifier and write its model card.

    python -m merforge.agents.train_speech_emotion --labelled ../shared/data/labelled --out agents/models

Reads the rows of `labels.csv` with modality "audio" (RAVDESS, URDU, EMOVO in the
labelled development set), reads each file IN PLACE (nothing is copied), and computes
its features through the same code as the pipeline:

1. the file is decoded to 16 kHz mono (`preprocess.prosody.load_audio`, the sampling
   pass's decoder);
2. silero-vad finds the speech (`preprocess.vad.speech_segments`, `[vad]` defaults) and
   the segment planner makes clips from it (`preprocess.planner.plan_clips`, `[planner]`
   defaults, audio-only): the speech region plus 0.25 s padding, widened to 1 s at least;
3. each clip's `ProsodyStats` comes from `preprocess.prosody.prosody_stats` with the
   `[prosody]` defaults, and its `egemaps` are the features.

So the model sees what the AcousticAgent sees at annotation time: eGeMAPS of the speech
region, not of the file with its leading and trailing silence (RAVDESS files keep about
1 s of silence at each end). A clip with no voiced frame (`f0_mean` None) is left out:
the agent abstains on such clips. Features are cached outside the repository, in
~/.cache/merforge/speech_emotion_features_<digest>.npz (override with --cache-dir); the
digest covers the training rows, the extraction settings and the library versions.

Evaluation: leave-one-corpus-out (train on two corpora, test on the third) and
leave-one-speaker-out (each speaker predicted by a model fitted without them, over all
corpora); each candidate classifier is scored on both, the one with the best mean
held-out UAR is fitted on every clip and written to `<out>/speech_emotion_v1.json` with
its card `<out>/speech_emotion_v1.md`, both generated from the same numbers.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np

from merforge.agents.speech_emotion import (
    EMOTIONS,
    MODEL_FILENAME,
    SpeechEmotionError,
    classifier_candidates,
    confusion_table,
    cross_validated_predictions,
    fit_speech_emotion,
    save_speech_emotion_model,
    scores,
)

# Bump when the way features are computed changes (invalidates the cache).
FEATURE_PIPELINE_VERSION = 1
AUDIO_MODALITY = "audio"
DEFAULT_CACHE = Path.home() / ".cache" / "merforge"


class TrainingDataError(SpeechEmotionError):
    """The labelled folder or its labels.csv cannot be used for training."""


@dataclass(frozen=True)
class TrainingClip:
    """One clip of a labelled file, as the pipeline would cut it (seconds in the file)."""

    path: str
    corpus: str
    speaker_id: str
    emotion: str
    start: float
    end: float
    voiced_fraction: float
    egemaps: dict[str, float]


def training_rows(labelled: Path) -> list[dict[str, str]]:
    """The rows of `labelled`/labels.csv with modality "audio", in file order, as read.

    Raises TrainingDataError when the file is missing, lacks a needed column, or an
    emotion is not one of the seven concepts.
    """
    labels = Path(labelled) / "labels.csv"
    if not labels.exists():
        raise TrainingDataError(f"{labels} not found; pass --labelled the folder that holds labels.csv "
                                "(../shared/data/labelled from the repository root)")
    with labels.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        needed = {"path", "corpus", "modality", "emotion", "speaker_id"}
        if not needed <= set(reader.fieldnames or ()):
            raise TrainingDataError(f"{labels} lacks the column(s) {', '.join(sorted(needed - set(reader.fieldnames or ())))}")
        rows = [row for row in reader if row["modality"] == AUDIO_MODALITY]
    unknown = sorted({row["emotion"] for row in rows} - set(EMOTIONS))
    if unknown:
        raise TrainingDataError(f"{labels}: emotion(s) {', '.join(unknown)} are not among {', '.join(EMOTIONS)}")
    if not rows:
        raise TrainingDataError(f"{labels} has no row with modality {AUDIO_MODALITY!r}")
    return rows


def rows_digest(rows: Sequence[dict[str, str]]) -> str:
    """sha256 (hex) of the training rows: each row's columns as JSON with sorted keys, one
    line per row, in file order. The model file stores it, so a changed labels.csv shows."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


def extraction_settings() -> dict:
    """The settings and library versions the features depend on (the cache key and the
    model file's record of them)."""
    from merforge.storage.config import Config

    config = Config()
    return {
        "feature_pipeline_version": FEATURE_PIPELINE_VERSION,
        "vad": config.vad.model_dump(mode="json"),
        "planner": config.planner.model_dump(mode="json"),
        "prosody": config.prosody.model_dump(mode="json"),
        "versions": {name: package_version(name) for name in ("opensmile", "praat-parselmouth", "silero-vad")},
    }


def file_clips(path: Path) -> list[tuple[float, float, float, dict[str, float]]]:
    """(start s, end s, voiced fraction, eGeMAPS) of each clip the pipeline would cut from
    an audio file, with the default config (see the module docstring). Clips with no
    voiced frame are left out. Raises MediaError when the file cannot be decoded."""
    from merforge.preprocess.media import AUDIO_RATE
    from merforge.preprocess.planner import plan_clips
    from merforge.preprocess.prosody import load_audio, prosody_stats
    from merforge.preprocess.vad import speech_segments
    from merforge.storage.config import Config

    config = Config()
    samples = load_audio(path)
    speech = speech_segments(samples, config.vad)
    plan = plan_clips(samples.size / AUDIO_RATE, [(s.start, s.end) for s in speech], [], False, config.planner)
    out = []
    for clip in plan.clips:
        # The same slice as preprocess.features.preprocess_source takes of the source audio.
        window = samples[int(clip.start * AUDIO_RATE): int(clip.end * AUDIO_RATE)]
        stats = prosody_stats(window, config.prosody, offset=clip.start)
        if stats.f0_mean is None or not stats.egemaps:
            continue
        out.append((clip.start, clip.end, stats.voiced_fraction, dict(stats.egemaps)))
    return out


def _cache_path(cache_dir: Path, rows: Sequence[dict[str, str]], settings: dict) -> Path:
    key = hashlib.sha256((rows_digest(rows) + json.dumps(settings, sort_keys=True)).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"speech_emotion_features_{key}.npz"


def _save_cache(path: Path, clips: list[TrainingClip], dropped: list[str]) -> None:
    names = sorted({name for clip in clips for name in clip.egemaps})
    matrix = np.array([[clip.egemaps.get(name, np.nan) for name in names] for clip in clips], dtype=np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, names=np.array(names, dtype=str), features=matrix,
                        path=np.array([c.path for c in clips], dtype=str),
                        corpus=np.array([c.corpus for c in clips], dtype=str),
                        speaker_id=np.array([c.speaker_id for c in clips], dtype=str),
                        emotion=np.array([c.emotion for c in clips], dtype=str),
                        span=np.array([[c.start, c.end] for c in clips], dtype=np.float64).reshape(-1, 2),
                        voiced_fraction=np.array([c.voiced_fraction for c in clips], dtype=np.float64),
                        dropped=np.array(dropped, dtype=str))
    partial.replace(path)


def _load_cache(path: Path) -> tuple[list[TrainingClip], list[str]]:
    with np.load(path, allow_pickle=False) as data:
        names = [str(n) for n in data["names"]]
        clips = []
        for i, row in enumerate(data["features"]):
            clips.append(TrainingClip(
                path=str(data["path"][i]), corpus=str(data["corpus"][i]), speaker_id=str(data["speaker_id"][i]),
                emotion=str(data["emotion"][i]), start=float(data["span"][i][0]), end=float(data["span"][i][1]),
                voiced_fraction=float(data["voiced_fraction"][i]),
                egemaps={n: float(v) for n, v in zip(names, row) if np.isfinite(v)}))
        return clips, [str(d) for d in data["dropped"]]


def training_clips(labelled: Path, rows: Sequence[dict[str, str]], cache_dir: Path = DEFAULT_CACHE,
                   log=print) -> tuple[list[TrainingClip], list[str]]:
    """Clips and their features for the training rows (cached; see the module docstring),
    and the paths of files that gave no voiced clip."""
    cache = _cache_path(cache_dir, rows, extraction_settings())
    if cache.exists():
        log(f"features: cached in {cache}")
        return _load_cache(cache)
    clips: list[TrainingClip] = []
    dropped: list[str] = []
    started = time.perf_counter()
    for number, row in enumerate(rows, start=1):
        found = file_clips(Path(labelled) / row["path"])
        if not found:
            dropped.append(row["path"])
        for start, end, voiced, egemaps in found:
            clips.append(TrainingClip(row["path"], row["corpus"], row["speaker_id"], row["emotion"], round(start, 3),
                                      round(end, 3), voiced, egemaps))
        if number % 50 == 0 or number == len(rows):
            log(f"features: {number}/{len(rows)} files, {time.perf_counter() - started:.0f} s")
    _save_cache(cache, clips, dropped)
    log(f"features: saved to {cache}")
    return clips, dropped


# -- evaluation ---------------------------------------------------------------------------

# How each corpus may be used, as its publisher states it (see the labelled folder's README).
CORPORA = {
    "RAVDESS": {"language": "English (North American), acted",
                "licence": "CC BY-NC-SA 4.0: non-commercial research; not redistributed",
                "citation": "Livingstone & Russo, PLoS ONE 13(5): e0196391, 2018"},
    "URDU": {"language": "Urdu, talk-show speech (natural)",
             "licence": "research use only (corpus README); not redistributed",
             "citation": "Latif, Qayyum, Usman & Qadir, FIT 2018, arXiv:1812.10411"},
    "EMOVO": {"language": "Italian, acted",
              "licence": "no licence published (Fondazione Ugo Bordoni): research use only; not redistributed",
              "citation": "Costantini, Iaderola, Paoloni & Todisco, LREC 2014"},
}


def _held_out_summary(clips: Sequence[TrainingClip], predictions: Sequence[dict[str, float]]) -> dict:
    truth = [c.emotion for c in clips]
    predicted = [max(p.items(), key=lambda kv: kv[1])[0] for p in predictions]
    per_corpus = {}
    for corpus in sorted({c.corpus for c in clips}):
        rows = [i for i, c in enumerate(clips) if c.corpus == corpus]
        per_corpus[corpus] = scores([truth[i] for i in rows], [predicted[i] for i in rows])
    return {"pooled": scores(truth, predicted), "per_corpus": per_corpus,
            "mean_corpus_uar": round(float(np.mean([s["uar"] for s in per_corpus.values()])), 4),
            "confusion": confusion_table(truth, predicted)}


def evaluate(clips: Sequence[TrainingClip], classifier: str, log=print) -> dict:
    """Leave-one-corpus-out and leave-one-speaker-out results of one classifier."""
    features = [c.egemaps for c in clips]
    labels = [c.emotion for c in clips]
    started = time.perf_counter()
    corpus_out = cross_validated_predictions(features, labels, [c.corpus for c in clips], classifier)
    speaker_out = cross_validated_predictions(features, labels, [c.speaker_id for c in clips], classifier)
    result = {"leave_one_corpus_out": _held_out_summary(clips, corpus_out),
              "leave_one_speaker_out": _held_out_summary(clips, speaker_out)}
    result["selection_uar"] = round((result["leave_one_corpus_out"]["mean_corpus_uar"]
                                     + result["leave_one_speaker_out"]["pooled"]["uar"]) / 2, 4)
    log(f"{classifier}: leave-one-corpus-out mean UAR {result['leave_one_corpus_out']['mean_corpus_uar']:.3f}, "
        f"leave-one-speaker-out UAR {result['leave_one_speaker_out']['pooled']['uar']:.3f} "
        f"({time.perf_counter() - started:.0f} s)")
    return result


def _short(value: float) -> float:
    """7 significant digits: the stored model stays readable and predicts as fitted (to ~1e-6)."""
    return float(f"{value:.7g}")


def train(labelled: Path, cache_dir: Path = DEFAULT_CACHE, classifiers: Sequence[str] | None = None,
          log=print) -> dict:
    """Features, evaluation of every candidate, and the final model fitted on all clips
    (the candidate with the best selection UAR), with its provenance and results."""
    rows = training_rows(labelled)
    clips, dropped = training_clips(labelled, rows, cache_dir, log)
    if len({c.corpus for c in clips}) < 2:
        raise TrainingDataError("leave-one-corpus-out needs clips from at least two corpora")
    candidates = list(classifiers or classifier_candidates())
    results = {name: evaluate(clips, name, log) for name in candidates}
    chosen = max(candidates, key=lambda name: results[name]["selection_uar"])
    model = fit_speech_emotion([c.egemaps for c in clips], [c.emotion for c in clips], chosen)
    for key in ("means", "scales", "intercepts"):
        model[key] = [_short(v) for v in model[key]]
    model["coefficients"] = [[_short(v) for v in row] for row in model["coefficients"]]
    counts: dict[str, dict[str, int]] = {}
    for clip in clips:
        counts.setdefault(clip.corpus, {}).setdefault(clip.emotion, 0)
        counts[clip.corpus][clip.emotion] += 1
    model["training"] = {
        "command": "python -m merforge.agents.train_speech_emotion --labelled ../shared/data/labelled "
                   "--out agents/models",
        "labels": "labels.csv rows with modality 'audio', read in place",
        "rows": len(rows),
        "rows_digest": rows_digest(rows),
        "clips": len(clips),
        "files_without_clip": dropped,
        "clips_per_corpus_and_emotion": {corpus: dict(sorted(counts[corpus].items())) for corpus in sorted(counts)},
        "speakers_per_corpus": {corpus: len({c.speaker_id for c in clips if c.corpus == corpus})
                                for corpus in sorted(counts)},
        "corpora": {corpus: CORPORA.get(corpus, {"language": "", "licence": "see the labelled folder's README",
                                                 "citation": ""}) for corpus in sorted(counts)},
        "feature_extraction": extraction_settings(),
    }
    model["evaluation"] = {
        "chosen": chosen,
        "selection": "highest mean of the leave-one-corpus-out mean UAR and the leave-one-speaker-out UAR; the "
                     "candidates were compared on the same folds, so the chosen figures are slightly optimistic",
        "candidates": {name: {"description": classifier_candidates()[name],
                              "leave_one_corpus_out_mean_uar": results[name]["leave_one_corpus_out"]["mean_corpus_uar"],
                              "leave_one_speaker_out_uar": results[name]["leave_one_speaker_out"]["pooled"]["uar"],
                              "selection_uar": results[name]["selection_uar"]} for name in candidates},
        "leave_one_corpus_out": results[chosen]["leave_one_corpus_out"],
        "leave_one_speaker_out": results[chosen]["leave_one_speaker_out"],
    }
    return model


# -- model card ---------------------------------------------------------------------------

REFERENCES = (
    "Human recognition, EMOVO: two groups of 24 listeners identified the intended emotion of two sentences per "
    "actor with an overall accuracy of 80%; joy and disgust were the hardest, anger, sadness and neutral the "
    "easiest (Costantini et al., LREC 2014, abstract).",
    "Human recognition, RAVDESS: 247 untrained North American raters judged every file 10 times; the paper reports "
    "proportion correct per modality, emotion and intensity (Livingstone & Russo 2018, validity results). The "
    "voice-only speech figure quoted in the literature is about 0.62; check it against the paper's tables before "
    "citing it further.",
    "Human recognition, Italian crowd-sourced acted speech (Emozionalmente, 431 speakers, 7 classes as here): "
    "listeners' UAR 0.66 (Catania, Wilke & Garzotto, IEEE/ACM TASLP 33, 2025).",
    "Machine, cross-corpus: eGeMAPS with logistic regression or an MLP across three Urdu corpora: self-corpus "
    "validation overestimated UAR by up to 13 points against cross-corpus testing (Talpur et al., "
    "arXiv:2510.26823, 2025). Cross-corpus SER falls far below within-corpus results in general (Schuller et al., "
    "'Cross-Corpus Acoustic Emotion Recognition: Variances and Strategies', IEEE Trans. Affective Computing 1(2), "
    "2010).",
    "Machine, this set: eGeMAPS + logistic regression trained on two of these three corpora and tested on the "
    "third gave UAR 0.27-0.45 when measured before this model (../shared/FEASIBILITY.md); Whisper-base encoder "
    "means 0.22-0.37.",
)


def _pct(value: float) -> str:
    return f"{value:.3f}"


def _recall_row(name: str, result: dict) -> str:
    recall = result["recall"]
    cells = [_pct(recall[e]) if e in recall else "-" for e in EMOTIONS]
    return f"| {name} | {result['clips']} | {_pct(result['accuracy'])} | {_pct(result['uar'])} | " + " | ".join(cells) + " |"


def _confusion_lines(confusion: dict[str, dict[str, int]]) -> list[str]:
    lines = ["| truth \\ predicted | " + " | ".join(EMOTIONS) + " |", "|---|" + "---|" * len(EMOTIONS)]
    for truth, row in confusion.items():
        lines.append(f"| {truth} | " + " | ".join(str(row[e]) for e in EMOTIONS) + " |")
    return lines


def model_card(model: dict) -> str:
    """The model card (Markdown), generated from the stored model alone, so its numbers
    are the model file's numbers."""
    training, evaluation = model["training"], model["evaluation"]
    corpus_out, speaker_out = evaluation["leave_one_corpus_out"], evaluation["leave_one_speaker_out"]
    header = "| | clips | accuracy | UAR | " + " | ".join(EMOTIONS) + " |"
    rule = "|---|---|---|---|" + "---|" * len(EMOTIONS)
    lines = [
        f"# Speech-emotion model {MODEL_FILENAME} (format {model['format']} v{model['format_version']})",
        "",
        "Used by the acoustic specialist (`merforge.agents.specialists.AcousticAgent`) for its label probabilities; "
        "arousal and valence still come from the ridge model in `acoustic_prosody.json`. Generated by "
        f"`{training['command']}` from the same numbers as the model file; do not edit by hand.",
        "",
        "## Data",
        "",
        f"{training['rows']} rows of `labels.csv` ({training['labels']}; sha256 of the rows "
        f"`{training['rows_digest']}`), giving {training['clips']} clips. The files stay in the labelled folder: "
        "none is copied into the repository or shipped with the model, whose file holds only feature statistics "
        "and coefficients.",
        "",
        "| corpus | language and kind | speakers | clips | licence | citation |",
        "|---|---|---|---|---|---|",
    ]
    for corpus, counts in training["clips_per_corpus_and_emotion"].items():
        info = training["corpora"][corpus]
        lines.append(f"| {corpus} | {info['language']} | {training['speakers_per_corpus'][corpus]} | "
                     f"{sum(counts.values())} | {info['licence']} | {info['citation']} |")
    lines += ["", "Clips per emotion:", "", "| corpus | " + " | ".join(EMOTIONS) + " |", "|---|" + "---|" * len(EMOTIONS)]
    for corpus, counts in training["clips_per_corpus_and_emotion"].items():
        lines.append(f"| {corpus} | " + " | ".join(str(counts.get(e, 0)) for e in EMOTIONS) + " |")
    dropped = training["files_without_clip"]
    lines += ["", f"Files the pipeline would not annotate (no speech clip with a voiced frame), left out: "
              f"{len(dropped)}" + (f" ({', '.join(dropped)})." if dropped else ".")]
    settings = training["feature_extraction"]
    lines += [
        "",
        "## Features",
        "",
        f"The {len(model['features'])} openSMILE eGeMAPSv02 functionals (Eyben et al., IEEE Trans. Affective "
        "Computing 7(2), 2016) of each clip, computed through the pipeline's own code: the file decoded to 16 kHz "
        "mono, silero-vad speech segments, the segment planner's clips (speech region plus padding, at least "
        "`planner.min_length` long), and `prosody_stats` on each clip. That is the speech region, not the whole "
        "file, as the acoustic agent sees it at annotation time.",
        "",
        f"Settings: vad {json.dumps(settings['vad'], sort_keys=True)}; planner "
        f"{json.dumps(settings['planner'], sort_keys=True)}; prosody {json.dumps(settings['prosody'], sort_keys=True)}; "
        f"versions {json.dumps(settings['versions'], sort_keys=True)}.",
        "",
        "Each feature is standardised with the training mean and sd. A feature missing at prediction time enters "
        "at its training mean; with more than a quarter missing the model refuses to predict.",
        "",
        "## Classifier",
        "",
        f"`{evaluation['chosen']}`: {model['classifier']['description']}; "
        f"{model['classifier']['prediction']}. Classes: {', '.join(model['classes'])}.",
        "",
        f"Chosen by held-out UAR among these candidates ({evaluation['selection']}):",
        "",
        "| candidate | leave-one-corpus-out mean UAR | leave-one-speaker-out UAR | selection UAR |",
        "|---|---|---|---|",
    ]
    for name, result in evaluation["candidates"].items():
        lines.append(f"| {name}: {result['description']} | {_pct(result['leave_one_corpus_out_mean_uar'])} | "
                     f"{_pct(result['leave_one_speaker_out_uar'])} | {_pct(result['selection_uar'])} |")
    lines += [
        "",
        "## Held-out results",
        "",
        "UAR is the mean recall over the emotions present in the test clips (URDU has 4); the model always chooses "
        "among all its classes, so chance UAR is 1/7 = 0.143 everywhere.",
        "",
        "### Leave one corpus out (trained on the other two corpora)",
        "",
        f"Mean UAR over the three test corpora: **{_pct(corpus_out['mean_corpus_uar'])}**; pooled over all clips: "
        f"accuracy {_pct(corpus_out['pooled']['accuracy'])}, UAR {_pct(corpus_out['pooled']['uar'])}.",
        "",
        header, rule,
        *[_recall_row(f"test {corpus}", result) for corpus, result in corpus_out["per_corpus"].items()],
        _recall_row("pooled", corpus_out["pooled"]),
        "",
        "Confusion (pooled over the three test corpora):",
        "",
        *_confusion_lines(corpus_out["confusion"]),
        "",
        "### Leave one speaker out (each speaker predicted by a model fitted without them, all corpora)",
        "",
        f"Pooled over all clips: accuracy **{_pct(speaker_out['pooled']['accuracy'])}**, UAR "
        f"**{_pct(speaker_out['pooled']['uar'])}**.",
        "",
        header, rule,
        *[_recall_row(corpus, result) for corpus, result in speaker_out["per_corpus"].items()],
        _recall_row("pooled", speaker_out["pooled"]),
        "",
        "Confusion:",
        "",
        *_confusion_lines(speaker_out["confusion"]),
        "",
        "## Published references for comparison",
        "",
        *[f"- {reference}" for reference in REFERENCES],
        "",
        "## Limits",
        "",
        "Three small corpora, two of them acted; speakers, languages and recording conditions unlike them (another "
        "language, spontaneous speech, noise, far microphones) will fare closer to the leave-one-corpus-out figures "
        "than to the leave-one-speaker-out ones. The probabilities are not calibrated: fit the workspace's "
        "calibration on reviewed clips before letting them auto-accept labels.",
        "",
    ]
    return "\n".join(lines)


def write_model(model: dict, out: Path) -> tuple[Path, Path]:
    """Write the model JSON and its card into `out` (temporary name, then rename)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, card_path = out / MODEL_FILENAME, out / MODEL_FILENAME.replace(".json", ".md")
    save_speech_emotion_model(model, json_path)
    partial = card_path.with_name(card_path.name + ".partial")
    partial.write_text(model_card(model), encoding="utf-8")
    partial.replace(card_path)
    return json_path, card_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m merforge.agents.train_speech_emotion",
        description="Train the acoustic specialist's speech-emotion classifier on the labelled audio of "
                    "labels.csv (read in place, never copied), evaluate it leave-one-corpus-out and "
                    "leave-one-speaker-out, and write speech_emotion_v1.json and its model card "
                    "speech_emotion_v1.md. Features: eGeMAPSv02 functionals of each file's speech region, "
                    "computed as the pipeline does and cached outside the repository.",
        epilog="About 4 minutes of feature extraction on 2 cores the first time, then a few minutes of "
               "cross-validation.")
    parser.add_argument("--labelled", type=Path, required=True,
                        help="folder holding labels.csv and the audio it names (e.g. ../shared/data/labelled)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the model and its card into "
                        "(agents/models for the shipped model)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help=f"where the feature cache goes (default {DEFAULT_CACHE})")
    parser.add_argument("--classifier", action="append", choices=sorted(classifier_candidates()),
                        help="evaluate only this candidate (repeatable); default: all of them")
    args = parser.parse_args(argv)
    try:
        model = train(args.labelled, args.cache_dir, args.classifier)
    except SpeechEmotionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    json_path, card_path = write_model(model, args.out)
    evaluation = model["evaluation"]
    print(f"chosen {evaluation['chosen']}: leave-one-corpus-out mean UAR "
          f"{evaluation['leave_one_corpus_out']['mean_corpus_uar']:.3f}, leave-one-speaker-out UAR "
          f"{evaluation['leave_one_speaker_out']['pooled']['uar']:.3f}")
    print(f"wrote {json_path} and {card_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
