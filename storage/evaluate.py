"""Scoring a submission against a release's test split.

Metrics follow the DFEW tables: WAR (weighted average recall, i.e. accuracy) and UAR
(unweighted average recall, the mean of per-class recalls), with per-class recall; plus
macro and weighted F1 (scikit-learn), micro and per-sample F1 over the multi-label sets,
ROUGE-L F (rouge-score) and corpus BLEU (sacrebleu) of predicted rationales against the
released ones, and evidence coverage: the share of released evidence items matched by a
predicted item of the same modality that overlaps it in time.

Submissions are JSONL ({"id", "label", "labels"?, "rationale"?, "evidence"?} per line) or
CSV with columns id,label[,labels][,rationale] (labels separated by ";" or "|").
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from merforge.errors import MerforgeError
from merforge.storage.release import PRIVATE_TEST_LABELS


class SubmissionError(MerforgeError):
    """A predictions file cannot be scored: wrong format, missing or duplicate ids, unknown labels."""


def _split_labels(text: str) -> list[str]:
    return [part.strip() for part in text.replace("|", ";").split(";") if part.strip()]


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL or CSV submission. Raises SubmissionError naming the line that is wrong."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"predictions file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        columns = reader.fieldnames or []
        if "id" not in columns or "label" not in columns:
            raise SubmissionError(f"{path}: a CSV submission needs columns id,label[,labels][,rationale]; "
                                  f"found {','.join(columns) or 'no header'}")
        for row in reader:
            rows.append({"id": (row.get("id") or "").strip(), "label": (row.get("label") or "").strip(),
                         "labels": _split_labels(row.get("labels") or ""), "rationale": row.get("rationale") or ""})
        return rows
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise SubmissionError(f"{path} line {number}: not JSON ({error.msg}); submit JSONL (one object per line) "
                                  "or CSV with columns id,label") from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("label"), str):
            raise SubmissionError(f"{path} line {number}: each line needs string fields \"id\" and \"label\"")
        labels = row.get("labels") or []
        if isinstance(labels, str):
            labels = _split_labels(labels)
        if not isinstance(labels, list):
            raise SubmissionError(f"{path} line {number}: \"labels\" must be a list of labels")
        rows.append({"id": row["id"], "label": row["label"], "labels": labels,
                     "rationale": row.get("rationale") or "", "evidence": row.get("evidence") or []})
    return rows


def _reference(release_dir: Path, labels_path: Path | None) -> list[dict[str, Any]]:
    candidates = [Path(labels_path)] if labels_path else [release_dir / "data" / "test.jsonl",
                                                           release_dir / PRIVATE_TEST_LABELS]
    for path in candidates:
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if rows and "label" in rows[0]:
                return rows
            if labels_path:
                raise SubmissionError(f"labels file {path} has no \"label\" field")
    if labels_path:
        raise SubmissionError(f"labels file {labels_path} does not exist")
    raise SubmissionError(f"release {release_dir} has no test labels (they are hidden); pass --labels "
                          f"with the private file ({PRIVATE_TEST_LABELS})")


def _label_space(release_dir: Path, reference: Sequence[Mapping[str, Any]]) -> set[str]:
    manifest = release_dir / "manifest.json"
    space = set(json.loads(manifest.read_text()).get("label_space") or []) if manifest.is_file() else set()
    return space | {r["label"] for r in reference}


def _recall_table(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    classes = sorted(set(truth))
    return {c: sum(1 for t, p in zip(truth, predicted) if t == c and p == c) / sum(1 for t in truth if t == c)
            for c in classes}


def _coverage(reference: Sequence[Mapping[str, Any]], predicted: Sequence[Any]) -> float | None:
    if not reference:
        return None
    hit = 0
    for item in reference:
        for guess in predicted or ():
            if (isinstance(guess, Mapping) and guess.get("modality") == item.get("modality")
                    and float(guess.get("start", 0)) < float(item.get("end", 0))
                    and float(guess.get("end", 0)) > float(item.get("start", 0))):
                hit += 1
                break
    return hit / len(reference)


def evaluate(release_dir: Path | str, predictions_path: Path | str, labels_path: Path | str | None = None) -> dict:
    """Score predictions on the release's test split. Returns metrics (0..1, BLEU 0..100).
    Raises SubmissionError for a bad submission, with what to fix."""
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    release_dir = Path(release_dir)
    reference = _reference(release_dir, Path(labels_path) if labels_path else None)
    predictions = read_predictions(Path(predictions_path))
    seen: dict[str, dict] = {}
    duplicates = []
    for row in predictions:
        if row["id"] in seen:
            duplicates.append(row["id"])
        seen[row["id"]] = row
    if duplicates:
        raise SubmissionError(f"duplicate ids in the submission ({len(duplicates)}): {', '.join(sorted(set(duplicates))[:5])}")
    wanted = [r["id"] for r in reference]
    missing = [i for i in wanted if i not in seen]
    if missing:
        raise SubmissionError(f"{len(missing)} test ids have no prediction: {', '.join(missing[:5])}"
                              f"{' ...' if len(missing) > 5 else ''}")
    extra = sorted(set(seen) - set(wanted))
    if extra:
        raise SubmissionError(f"{len(extra)} predicted ids are not in the test split: {', '.join(extra[:5])}")
    space = _label_space(release_dir, reference)
    unknown = sorted({label for row in predictions for label in [row["label"], *row["labels"]]} - space)
    if unknown:
        raise SubmissionError(f"unknown labels {', '.join(map(repr, unknown[:5]))}; allowed: {', '.join(sorted(space))}")

    truth = [r["label"] for r in reference]
    guess = [seen[i]["label"] for i in wanted]
    recalls = _recall_table(truth, guess)
    accuracy = sum(t == p for t, p in zip(truth, guess)) / len(truth)
    classes = sorted(space)
    true_sets = [list(r.get("labels") or [r["label"]]) for r in reference]
    guess_sets = [list(seen[i]["labels"] or [seen[i]["label"]]) for i in wanted]
    binarizer = MultiLabelBinarizer(classes=classes)
    y_true, y_pred = binarizer.fit_transform(true_sets), binarizer.transform(guess_sets)
    metrics: dict[str, Any] = {
        "n": len(truth),
        "accuracy": accuracy,
        "war": accuracy,  # DFEW: weighted average recall = accuracy
        "uar": sum(recalls.values()) / len(recalls),
        "per_class_recall": recalls,
        "macro_f1": float(f1_score(truth, guess, labels=sorted(set(truth)), average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(truth, guess, labels=sorted(set(truth)), average="weighted", zero_division=0)),
        "multilabel_f1_micro": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "multilabel_f1_samples": float(f1_score(y_true, y_pred, average="samples", zero_division=0)),
    }
    pairs = [(seen[r["id"]]["rationale"], r.get("rationale") or "") for r in reference if r.get("rationale")]
    if pairs and any(p for p, _ in pairs):
        import sacrebleu
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        metrics["rationale_rougeL"] = sum(scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in pairs) / len(pairs)
        metrics["rationale_bleu"] = float(sacrebleu.corpus_bleu([h for h, _ in pairs], [[r for _, r in pairs]]).score)
    else:
        metrics["rationale_rougeL"] = None
        metrics["rationale_bleu"] = None
    coverages = [c for c in (_coverage(r.get("evidence") or [], seen[r["id"]].get("evidence") or [])
                             for r in reference) if c is not None]
    metrics["evidence_coverage"] = sum(coverages) / len(coverages) if coverages else None
    return metrics
