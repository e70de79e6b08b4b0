"""The face expression model (preprocess.expression) measured on labelled faces, read in
place from ../shared/data/labelled/faces (never copied), and the typical neutral face
measures that AU estimates use (preprocess.faces.NEUTRAL_MEASURES, NEUTRAL_TOLERANCE).

Faces: CK+48 (posed peak expressions of 6 classes, 309 crops of 48 x 48): held out for
the FER2013 model. FER+ (346 crops of FER2013's TRAINING split with FER+ majority labels):
the model was trained on these pictures, so its figures there are NOT held-out.

Routes, per picture:
  full route   the picture made detectable (expression.enlarge_face_crop: 4x bicubic,
               a third of padding), then faces.analyse_image: BlazeFace + face mesh, fer's
               crop of the Haar-like box, the model; a face the detector misses is wrong
  raw box      the same, with the BlazeFace box as it is (not made Haar-like)
  raw 48       the 48 x 48 crop itself resized to 64 x 64, for reference (no detector)
It prints detection rate, accuracy, UAR (mean per-class recall) and per-class recall per
route and corpus, the CK+ confusion matrix of the full route, the cost per face, the
neutral measures (median over the FER+ neutral faces, each measured on the enlarged crop)
with their tolerances (per AU cue, the 75th percentile of the excess over that median
among the same faces), the mean AU estimates per CK+ class, and as the LAST line
`ckplus_uar=<UAR of the full route on CK+>`.

Usage: .venv/bin/python benchmarks/expression_bench.py [--labelled ../shared/data/labelled]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LABELLED = ROOT.parent / "shared" / "data" / "labelled"
CORPORA = {"ckplus48": "CK+ (CK+48 crops)", "ferplus": "FER2013+FERPlus"}
CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")


def face_rows(labelled: Path, folder: str) -> list[dict[str, str]]:
    """Rows of labels.csv for one faces/<folder>, in file order."""
    labels = labelled / "labels.csv"
    if not labels.is_file():
        sys.exit(f"{labels} not found: pass --labelled the folder holding labels.csv")
    with labels.open(newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["path"].startswith(f"faces/{folder}/")]


def scores(truth: list[str], predicted: list[str | None]) -> dict:
    """Accuracy, UAR over the classes present in `truth`, and recall per class."""
    truth_a, predicted_a = np.array(truth), np.array([p or "" for p in predicted])
    classes = [c for c in CLASSES if c in set(truth)]
    recall = {c: float((predicted_a[truth_a == c] == c).mean()) for c in classes}
    return {"n": len(truth), "accuracy": float((truth_a == predicted_a).mean()),
            "uar": float(np.mean(list(recall.values()))), "recall": recall}


def evaluate(labelled: Path, folder: str) -> dict:
    from merforge.preprocess.expression import ExpressionModel, enlarge_face_crop, normalise
    from merforge.preprocess.faces import FaceMeshModel, analyse_image
    from merforge.storage.config import FaceConfig

    model = ExpressionModel()
    detector = FaceMeshModel(tiles=False)
    config = FaceConfig()
    truth, full, raw_box, raw48 = [], [], [], []
    found = 0
    seconds, faces = 0.0, 0
    au_by_class: dict[str, list[dict[str, float]]] = {}
    for row in face_rows(labelled, folder):
        grey = cv2.imread(str(labelled / row["path"]), cv2.IMREAD_GRAYSCALE)
        if grey is None:
            sys.exit(f"cannot read {labelled / row['path']}")
        truth.append(row["emotion"])
        scores48 = model.predict_input(normalise(cv2.resize(grey, (64, 64))))
        raw48.append(max(scores48, key=scores48.get))
        picture = enlarge_face_crop(grey)
        observations = analyse_image(picture, config, tiles=False)
        primary = [o for o in observations if o.primary]
        if not primary:
            full.append(None)
            raw_box.append(None)
            continue
        found += 1
        face = primary[0]
        full.append(max(face.expression, key=face.expression.get))
        au_by_class.setdefault(row["emotion"], []).append(face.aus)
        # The detector's own box again, to time the expression step and try the raw box.
        detection = detector.detect(picture)[0]
        started = time.perf_counter()
        model.predict(picture, detection.box)
        seconds += time.perf_counter() - started
        faces += 1
        plain = model.predict(picture, detection.box, haar_like=False)
        raw_box.append(max(plain, key=plain.get))
    confusion = {c: {p: sum(1 for t, q in zip(truth, full) if t == c and q == p) for p in CLASSES}
                 for c in CLASSES if c in set(truth)}
    return {"detected": found, "total": len(truth), "full": scores(truth, full), "raw_box": scores(truth, raw_box),
            "raw48": scores(truth, raw48), "confusion": confusion, "ms_per_face": 1000 * seconds / max(faces, 1),
            "aus": au_by_class}


def neutral_measures(labelled: Path) -> tuple[dict[str, float], dict[str, float], int]:
    """(median measures, tolerance per AU, faces) over the FER+ neutral faces."""
    from merforge.preprocess import faces as F
    from merforge.preprocess.expression import enlarge_face_crop

    mesh = F.FaceMeshModel(tiles=False)
    rows = []
    for row in face_rows(labelled, "ferplus"):
        if row["emotion"] != "neutral":
            continue
        found = mesh.analyse(enlarge_face_crop(cv2.imread(str(labelled / row["path"]), cv2.IMREAD_GRAYSCALE)))
        if found:
            measures = F.face_measures(found[0].landmarks)
            rows.append([measures[m] for m in F.MEASURES])
    table = np.array(rows)
    median = np.median(table, axis=0)
    tolerance = {}
    for name, rule in F._AU_RULES.items():
        values = F._rule_values(rule, table)
        base = F._rule_values(rule, median[None])[0]
        excess = np.clip((values - base) if rule.rises else (base - values), 0.0, None)
        tolerance[name] = float(np.percentile(excess, 75))
    return dict(zip(F.MEASURES, median.tolist())), tolerance, len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labelled", type=Path, default=DEFAULT_LABELLED)
    args = parser.parse_args()
    labelled = args.labelled.resolve()

    from merforge.preprocess.faces import AU_NAMES

    results = {}
    for folder, corpus in CORPORA.items():
        result = results[folder] = evaluate(labelled, folder)
        note = "held out" if folder == "ckplus48" else "FER2013 TRAINING pictures: not a held-out figure"
        print(f"\n{corpus} ({note}): face found in {result['detected']}/{result['total']} "
              f"({result['detected'] / result['total']:.1%}); expression step {result['ms_per_face']:.2f} ms per face")
        for route in ("full", "raw_box", "raw48"):
            s = result[route]
            recall = ", ".join(f"{c} {v:.2f}" for c, v in s["recall"].items())
            print(f"  {route:8s} accuracy {s['accuracy']:.3f}  UAR {s['uar']:.3f}  ({recall})")
    print("\nCK+ confusion, full route (rows: truth; columns: " + ", ".join(c[:4] for c in CLASSES) + ")")
    for truth, row in results["ckplus48"]["confusion"].items():
        print(f"  {truth:10s}" + "".join(f"{row[c]:5d}" for c in CLASSES))

    median, tolerance, count = neutral_measures(labelled)
    print(f"\nNEUTRAL_MEASURES (median over {count} FER+ neutral faces, IOD units):")
    print("  " + ", ".join(f'"{k}": {v:.3f}' for k, v in median.items()))
    print("NEUTRAL_TOLERANCE (75th percentile of each AU cue's excess over that median):")
    print("  " + ", ".join(f'"{k}": {v:.3f}' for k, v in tolerance.items()))
    print("\nMean AU estimates of the CK+ faces per class (shipped constants):")
    print("  " + " " * 10 + "".join(f"{a:>6s}" for a in AU_NAMES))
    for emotion, rows in sorted(results["ckplus48"]["aus"].items()):
        print(f"  {emotion:10s}" + "".join(f"{np.mean([r.get(a, np.nan) for r in rows]):6.2f}" for a in AU_NAMES))
    print(f"ckplus_uar={results['ckplus48']['full']['uar']:.4f}")


if __name__ == "__main__":
    main()
