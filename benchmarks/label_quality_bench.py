"""Label quality on real labelled media: the whole pipeline, measured on data it was not fitted on.

What runs: `merforge run --engine library` (ingest, sample, preprocess, annotate, judge,
report: `flows.pipeline.run_pipeline`) in a fresh workspace over real labelled media read
in place from ../shared/data/labelled (never copied into the repository: several licences
forbid it):

  speech  RAVDESS (English, acted), URDU (Urdu, TV talk shows), EMOVO (Italian, acted):
          the WAV files as they are, audio only
  face    CK+48 posed peak expressions (48 x 48 crops), each made into a 2 s silent video
          of the still (enlarged as preprocess.expression.enlarge_face_crop does), i.e. an
          expression held for the whole clip
  (FER+ faces only with --ferplus, reported apart: the expression model was trained on
  FER2013's training split, which they come from, so they are not held out.)

There is no labelled audio-visual recording in the folder, so no audio-visual kind is
measured (pairing a face with another corpus's voice would not be a real recording).

Every learned part is measured on data it was not fitted on:
  - the acoustic speech-emotion classifier: the speech clips are re-annotated with models
    trained without them, twice: leave-one-SPEAKER-out (5 folds of speakers over all the
    labelled speech) and leave-one-CORPUS-out (trained on the two other corpora);
  - calibration (`merforge calibrate`: per-agent confusions and isotonic maps, the
    calibrated consensus and its auto-accept threshold): 5-fold cross-validation grouped by
    speaker / subject over the benchmark's clips, each fold routed with a calibration
    fitted on the other four;
  - the expression model (FER2013) never saw CK+.

Printed per kind and per agent: accuracy and UAR (unweighted average recall; an agent's
over the clips it answered, the consensus's over all clips, no label counting as wrong),
abstentions, the auto-accepted share and its precision, ECE of the consensus confidence;
for the default routing without calibration and for the cross-validated calibrated one.
LAST line: auto_accept_precision=<calibrated, leave-one-speaker-out>.

Usage: .venv/bin/python benchmarks/label_quality_bench.py [--per-class 8] [--labelled DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LABELLED = ROOT.parent / "shared" / "data" / "labelled"
SPEECH_CORPORA = ("RAVDESS", "URDU", "EMOVO")
FACE_CORPORA = {"CK+ (CK+48 crops)": "face", "FER2013+FERPlus": "face (FER+, seen in training)"}
STILL_SECONDS = 2.0
STILL_FPS = 10
FOLDS = 5


def log(message: str) -> None:
    print(message, flush=True)


# -- data -----------------------------------------------------------------------------------


def select_rows(labelled: Path, per_class: int, seed: int, ferplus: bool) -> list[dict[str, str]]:
    """Up to `per_class` rows per (corpus, emotion), drawn with a seeded generator."""
    with (labelled / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    wanted = set(SPEECH_CORPORA) | {"CK+ (CK+48 crops)"} | ({"FER2013+FERPlus"} if ferplus else set())
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        if row["corpus"] in wanted:
            groups[(row["corpus"], row["emotion"])].append(row)
    rng = np.random.default_rng(seed)
    chosen = []
    for key in sorted(groups):
        members = groups[key]
        take = members if per_class <= 0 else [members[i] for i in
                                               sorted(rng.choice(len(members), min(per_class, len(members)), False))]
        chosen.extend(take)
    return chosen


def still_video(image_path: Path, out: Path) -> None:
    """A STILL_SECONDS silent H.264 video of one enlarged face picture (imageio-ffmpeg's ffmpeg)."""
    import cv2
    import imageio_ffmpeg

    from merforge.preprocess.expression import enlarge_face_crop

    picture = enlarge_face_crop(cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE))
    png = out.with_suffix(".png")
    cv2.imwrite(str(png), picture)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-loop", "1", "-i", str(png), "-t",
               str(STILL_SECONDS), "-r", str(STILL_FPS), "-c:v", "libx264", "-pix_fmt", "yuv420p",
               "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", str(out)]
    subprocess.run(command, check=True)
    png.unlink()


def build_inputs(rows: list[dict[str, str]], labelled: Path, media: Path) -> dict[str, dict[str, str]]:
    """Input path -> its row (plus "kind"); speech files are used in place."""
    inputs = {}
    for row in rows:
        source = labelled / row["path"]
        if row["modality"] == "audio":
            inputs[str(source.resolve())] = dict(row, kind="speech")
        else:
            out = media / row["path"].replace("/", "_").rsplit(".", 1)[0]
            out = out.with_suffix(".mp4")
            if not out.exists():
                still_video(source, out)
            inputs[str(out.resolve())] = dict(row, kind=FACE_CORPORA[row["corpus"]])
    return inputs


# -- scores ---------------------------------------------------------------------------------


def uar(truth: list[str], predicted: list[str | None]) -> float:
    classes = sorted(set(truth))
    recalls = [np.mean([p == t for t, p in zip(truth, predicted) if t == c]) for c in classes]
    return float(np.mean(recalls)) if recalls else float("nan")


def accuracy(truth: list[str], predicted: list[str | None]) -> float:
    return float(np.mean([p == t for t, p in zip(truth, predicted)])) if truth else float("nan")


def ece(confidence: list[float], correct: list[bool]) -> float:
    from merforge.agents.calibration import expected_calibration_error

    return expected_calibration_error(np.array(confidence), np.array(correct)) if confidence else float("nan")


def evaluate(name: str, clips: dict[str, dict[str, str]], consensus: dict, annotations: dict) -> dict:
    """Print and return the per-kind consensus and per-agent figures of one routing."""
    from merforge.storage.records import AnnotationStatus, Route

    log(f"\n== {name} ==")
    log(f"{'kind':34s} {'clips':>5s} {'acc':>5s} {'UAR':>5s} {'ECE':>5s} {'auto share':>10s} {'auto prec':>9s} "
        f"{'no evidence':>11s}")
    result = {}
    kinds = sorted({c["kind"] for c in clips.values()})
    for kind in kinds + ["all"]:
        ids = [i for i, c in clips.items() if kind in ("all", c["kind"]) and i in consensus]
        if kind == "all":
            ids = [i for i in ids if "seen in training" not in clips[i]["kind"]]
        truth = [clips[i]["emotion"] for i in ids]
        predicted = [consensus[i].label for i in ids]
        accepted = [i for i in ids if consensus[i].route in (Route.AUTO_ACCEPT, Route.AUDIT)]
        precision = accuracy([clips[i]["emotion"] for i in accepted], [consensus[i].label for i in accepted])
        labelled = [i for i in ids if consensus[i].label]
        calibration_error = ece([consensus[i].confidence for i in labelled],
                                [consensus[i].label == clips[i]["emotion"] for i in labelled])
        no_evidence = sum(1 for i in ids if any("no agent had evidence" in r for r in consensus[i].route_reasons))
        share = len(accepted) / len(ids) if ids else float("nan")
        result[kind] = {"clips": len(ids), "accuracy": accuracy(truth, predicted), "uar": uar(truth, predicted),
                        "ece": calibration_error, "auto_share": share, "auto_precision": precision,
                        "auto_accepted": len(accepted), "no_evidence": no_evidence}
        log(f"{kind:34s} {len(ids):5d} {result[kind]['accuracy']:5.2f} {result[kind]['uar']:5.2f} "
            f"{calibration_error:5.2f} {share:10.2f} {precision:9.2f} {no_evidence:11d}")
    log(f"{'agent / kind':34s} {'answered':>8s} {'abstained':>9s} {'other':>5s} {'acc':>5s} {'UAR':>5s}")
    agents = sorted({a.annotator_id for answers in annotations.values() for a in answers})
    for agent in agents:
        for kind in kinds:
            answered, truth, abstained, other = [], [], 0, 0
            for clip, answers in annotations.items():
                if clip not in clips or clips[clip]["kind"] != kind:
                    continue
                for a in answers:
                    if a.annotator_id != agent:
                        continue
                    if a.status == AnnotationStatus.OK and a.label:
                        answered.append(a.label)
                        truth.append(clips[clip]["emotion"])
                    elif a.status == AnnotationStatus.ABSTAINED:
                        abstained += 1
                    else:
                        other += 1
            result[f"{agent}/{kind}"] = {"answered": len(answered), "abstained": abstained,
                                         "accuracy": accuracy(truth, answered), "uar": uar(truth, answered)}
            log(f"{agent + ' / ' + kind:34s} {len(answered):8d} {abstained:9d} {other:5d} "
                f"{accuracy(truth, answered):5.2f} {uar(truth, answered):5.2f}")
    return result


# -- the held-out parts ---------------------------------------------------------------------


def speaker_folds(groups: list[str], folds: int, seed: int) -> dict[str, int]:
    """group -> fold, groups dealt at random (seeded) into `folds` folds."""
    unique = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[j]: int(rank % folds) for rank, j in enumerate(order)}


def reannotate_speech(workspace, clips: dict[str, dict[str, str]], labelled: Path, scheme: str, models: Path,
                      seed: int) -> None:
    """Re-annotate the speech clips with acoustic models trained without their speakers
    (scheme "speaker") or their corpus (scheme "corpus")."""
    from merforge.agents.annotate import annotate_workspace
    from merforge.agents.speech_emotion import fit_speech_emotion, save_speech_emotion_model
    from merforge.agents.train_speech_emotion import training_clips, training_rows

    train_rows = training_rows(labelled)
    training, _ = training_clips(labelled, train_rows, log=lambda message: None)
    if scheme == "speaker":
        fold_of = speaker_folds([c.speaker_id for c in training], FOLDS, seed)
        held = lambda clip: fold_of[clip["speaker_id"]]  # noqa: E731
        train_fold = lambda c: fold_of[c.speaker_id]  # noqa: E731
        folds = range(FOLDS)
    else:
        held = lambda clip: clip["corpus"]  # noqa: E731
        train_fold = lambda c: c.corpus  # noqa: E731
        folds = SPEECH_CORPORA
    original = workspace.config
    try:
        for fold in folds:
            train = [c for c in training if train_fold(c) != fold]
            model = fit_speech_emotion([c.egemaps for c in train], [c.emotion for c in train])
            path = save_speech_emotion_model(model, models / f"acoustic-{scheme}-{fold}.json")
            targets = [i for i, c in clips.items() if c["kind"] == "speech" and held(c) == fold]
            if not targets:
                continue
            workspace.config = original.model_copy(update={"annotate": original.annotate.model_copy(
                update={"acoustic_model": str(path)})})
            annotate_workspace(workspace, force=True, clip_ids=targets)
            log(f"  {scheme} fold {fold}: acoustic model trained on {len(train)} clips without it, "
                f"{len(targets)} clips re-annotated")
    finally:
        workspace.config = original


def cross_validated_calibration(workspace, clips: dict[str, dict[str, str]], seed: int) -> dict:
    """Consensus per clip, routed with a calibration fitted on the other folds (grouped by
    speaker / subject, so no person is on both sides)."""
    from merforge.agents.aggregate import build_consensus
    from merforge.agents.calibrate_stage import fit_from_annotations
    from merforge.agents.labels import get_space

    config = workspace.config
    space = get_space(config.annotate.label_space)
    store = workspace.store
    annotations: dict[str, list] = defaultdict(list)
    for a in store.annotations():
        if a.clip_id in clips:
            annotations[a.clip_id].append(a)
    scores = {s.annotation_id: s for clip in annotations for s in store.judge_scores(clip)}
    fold_of = speaker_folds([c["speaker_id"] or c["path"] for c in clips.values()], FOLDS, seed + 1)
    fold = {i: fold_of[c["speaker_id"] or c["path"]] for i, c in clips.items()}
    result = {}
    for f in range(FOLDS):
        train = {i: annotations[i] for i in annotations if fold[i] != f}
        test = {i: annotations[i] for i in annotations if fold[i] == f}
        if not test:
            continue
        calibration = fit_from_annotations(train, {i: clips[i]["emotion"] for i in train}, space,
                                           config.route.target_precision, {"benchmark": f"fold {f}"})
        result.update(build_consensus(test, scores, space, config.route, calibration=calibration))
    return result


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labelled", type=Path, default=DEFAULT_LABELLED, help="the labelled folder (labels.csv)")
    parser.add_argument("--per-class", type=int, default=8, help="files per corpus and emotion (0: all)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--ferplus", action="store_true", help="also FER+ faces (not held out: reported apart)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the workspace here (default: a temp dir; "
                        "an existing one is reused: finished stages are skipped)")
    parser.add_argument("--target-precision", type=float, default=None,
                        help="route.target_precision for the calibrated routing (default: the config's)")
    args = parser.parse_args()
    if not (args.labelled / "labels.csv").is_file():
        sys.exit(f"{args.labelled}/labels.csv not found; pass --labelled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from merforge.agents.judge_stage import judge_workspace
    from merforge.flows.pipeline import run_pipeline, workspace_lock
    from merforge.storage.workspace import Workspace

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="merforge-label-quality-"))
    media, models = workdir / "media", workdir / "models"
    media.mkdir(parents=True, exist_ok=True)
    models.mkdir(exist_ok=True)
    rows = select_rows(args.labelled, args.per_class, args.seed, args.ferplus)
    started = time.perf_counter()
    inputs = build_inputs(rows, args.labelled, media)
    log(f"{len(rows)} labelled files ({', '.join(f'{k} {v}' for k, v in sorted(Counter(r['corpus'] for r in rows).items()))}); "
        f"media ready in {time.perf_counter() - started:.1f} s; workspace {workdir / 'ws'}")

    root = workdir / "ws"
    Workspace.init(root)
    begun = time.perf_counter()
    with workspace_lock(root):
        summary = run_pipeline(str(root), list(inputs))
    media_seconds = sum(float(r["duration_s"] or STILL_SECONDS) for r in rows)
    log(f"pipeline (library engine): {summary.seconds:.1f} s for {media_seconds:.0f} s of media; per stage: "
        + ", ".join(f"{k} {v.get('seconds', 0):.1f} s" for k, v in summary.stages.items()))

    workspace = Workspace.open(root)
    if args.target_precision is not None:
        workspace.config = workspace.config.model_copy(update={"route": workspace.config.route.model_copy(
            update={"target_precision": args.target_precision})})
    by_path = {str(Path(s.path).resolve()): s.id for s in workspace.store.sources()}
    clips: dict[str, dict[str, str]] = {}
    for clip in workspace.store.iter_clips():
        for path, source in by_path.items():
            if source == clip.source_id and path in inputs:
                clips[clip.id] = inputs[path]
    unusable = [p for p in inputs if p not in by_path or not any(c.source_id == by_path[p]
                                                                 for c in workspace.store.iter_clips())]
    log(f"{len(clips)} clips from {len(inputs) - len(unusable)} files; {len(unusable)} files gave no clip")

    results = {}
    for scheme in ("corpus", "speaker"):
        log(f"\nacoustic model held out by {scheme}:")
        reannotate_speech(workspace, clips, args.labelled, scheme, models, args.seed)
        judge_workspace(workspace)
        annotations: dict[str, list] = defaultdict(list)
        for a in workspace.store.annotations():
            annotations[a.clip_id].append(a)
        plain = {i: workspace.store.consensus(i) for i in clips}
        results[f"{scheme}/plain"] = evaluate(f"acoustic held out by {scheme}; default routing, no calibration",
                                              clips, {k: v for k, v in plain.items() if v is not None}, annotations)
        calibrated = cross_validated_calibration(workspace, clips, args.seed)
        results[f"{scheme}/calibrated"] = evaluate(
            f"acoustic held out by {scheme}; calibrated (5-fold by speaker/subject), target precision "
            f"{workspace.config.route.target_precision}", clips, calibrated, annotations)
    workspace.close()
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    final = results["speaker/calibrated"]["all"]
    log(f"\nheld out by speaker, calibrated: consensus UAR speech {results['speaker/calibrated']['speech']['uar']:.2f}, "
        f"face {results['speaker/calibrated'].get('face', {}).get('uar', float('nan')):.2f}; auto-accepted "
        f"{final['auto_share']:.2f} of clips at precision {final['auto_precision']:.2f}; ECE {final['ece']:.3f}")
    log(f"auto_accept_precision={final['auto_precision']:.4f}")


if __name__ == "__main__":
    main()
