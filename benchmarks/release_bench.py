"""Release speed: 100,000 synthetic clips -> a full release (+ the agreement report).

The store is seeded directly (executemany on the SQLite file: sources, clips, three
annotations with judge scores per clip, consensus rows, reviews for 10% of the clips); no
media, so `release.cut_media` is off. Timed: build_release (each part) and, when
`merforge.storage.report.agreement_report` exists, the agreement report. The LAST line is
`seconds_100k=<float>`: release plus report, seconds. Target: 60 or lower.

Usage: .venv/bin/python benchmarks/release_bench.py [--clips 100000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from merforge.storage.workspace import DATABASE_FILENAME, Workspace

LABELS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
ANNOTATORS = ("text", "acoustic", "visual")
CLIPS_PER_SOURCE = 50
NOW = "2026-01-01 00:00:00.000000"


def seed(ws: Workspace, clips: int, rng: random.Random) -> None:
    db = sqlite3.connect(ws.root / DATABASE_FILENAME)
    db.execute("PRAGMA synchronous=OFF")
    sources = -(-clips // CLIPS_PER_SOURCE)
    media = json.dumps({"container": "mov,mp4", "duration": 300.0,
                        "video": {"codec": "h264", "width": 640, "height": 360, "fps": 25.0},
                        "audio": {"codec": "aac", "sample_rate": 16000, "channels": 1}})
    db.executemany("INSERT INTO sources (id, path, size_bytes, mtime, status, reason, media, license, consent, "
                   "speaker, group_name, extra, ingested_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   [(f"src{s:06d}", f"/media/video{s:06d}.mp4", 1_000_000, 0.0, "ok", "", media, "cc-by-4.0",
                     "no" if s % 50 == 0 else "yes", f"speaker{s % 700}", "", "{}", NOW) for s in range(sources)])
    provenance = json.dumps({"backend": "bench", "created_at": "2026-01-01T00:00:00Z"})
    clip_rows, ann_rows, score_rows, cons_rows, review_rows = [], [], [], [], []
    for c in range(clips):
        cid, sid, start = f"clip{c:08d}", f"src{c // CLIPS_PER_SOURCE:06d}", (c % CLIPS_PER_SOURCE) * 6.0
        clip_rows.append((cid, sid, start, start + rng.uniform(1.5, 6.0), "speech", "[]", provenance))
        truth = LABELS[rng.randrange(len(LABELS))]
        for annotator in ANNOTATORS:
            label = truth if rng.random() < 0.7 else LABELS[rng.randrange(len(LABELS))]
            aid = f"{cid}-{annotator}"
            record = {"id": aid, "clip_id": cid, "annotator_id": annotator, "model": "bench-model",
                      "prompt_version": "v1", "label_space": "ekman7", "label": label, "labels": [label],
                      "label_probabilities": {label: 0.8}, "intensity": 0.5, "valence": 0.1, "arousal": 0.2,
                      "steps": [f"Step 1: the {annotator} cue suggests {label}.", f"Step 2: so the label is {label}."],
                      "evidence": [{"modality": "audio", "start": start, "end": start + 1.0,
                                    "claim": "raised pitch", "feature": "f0_mean", "value": 210.0}],
                      "status": "ok", "created_at": "2026-01-01T00:00:00Z"}
            ann_rows.append((aid, cid, annotator, "ok", label, json.dumps(record), NOW))
            score = rng.random()
            score_rows.append((aid, "evidence", cid, score, json.dumps(
                {"annotation_id": aid, "clip_id": cid, "annotator_id": annotator, "judge": "evidence",
                 "s_rec": score, "s_reason": score, "s_cot": score, "s_final": score})))
        route = "auto-accept" if rng.random() < 0.6 else ("review" if rng.random() < 0.8 else "audit")
        cons_rows.append((cid, truth, 0.7, route, rng.random(), json.dumps(
            {"clip_id": cid, "label": truth, "labels": [truth], "distribution": {truth: 0.7}, "confidence": 0.7,
             "entropy": 0.4, "route": route, "intensity": 0.5, "valence": 0.1, "arousal": 0.2}), NOW))
        if route != "auto-accept" and rng.random() < 0.25:
            decision = rng.choice(("accept", "accept", "correct", "reject"))
            label = truth if decision == "accept" else (LABELS[rng.randrange(len(LABELS))] if decision == "correct"
                                                        else None)
            rid = f"{cid}-r"
            review_rows.append((rid, cid, "reviewer1", 0, 1, decision, label, False, 10.0, json.dumps(
                {"id": rid, "clip_id": cid, "reviewer": "reviewer1", "decision": decision, "label": label,
                 "labels": [label] if label else [], "origin": "import", "pipeline_label": truth,
                 "created_at": "2026-01-01T00:00:00Z"}), NOW))
    db.executemany("INSERT INTO clips VALUES (?,?,?,?,?,?,?)", clip_rows)
    db.executemany("INSERT INTO annotations (id, clip_id, annotator_id, status, label, record, created_at) "
                   "VALUES (?,?,?,?,?,?,?)", ann_rows)
    db.executemany("INSERT INTO judge_scores (annotation_id, judge, clip_id, s_final, record) VALUES (?,?,?,?,?)",
                   score_rows)
    db.executemany("INSERT INTO consensus (clip_id, label, confidence, route, priority, record, updated_at) "
                   "VALUES (?,?,?,?,?,?,?)", cons_rows)
    db.executemany("INSERT INTO reviews (id, clip_id, reviewer, slot, needed, decision, label, blind, seconds_spent, "
                   "record, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)", review_rows)
    db.commit()
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the workspace folder")
    args = parser.parse_args()
    from merforge.storage.release import build_release

    root = Path(tempfile.mkdtemp(prefix="release-bench-"))
    try:
        ws = Workspace.init(root / "ws")
        ws.config = ws.config.model_copy(update={"release": ws.config.release.model_copy(update={"cut_media": False})})
        started = time.perf_counter()
        seed(ws, args.clips, random.Random(0))
        print(f"seeded {args.clips} clips in {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        result = build_release(ws, "bench")
        release_s = time.perf_counter() - started
        for part, seconds in result.timings.items():
            print(f"  release {part:>14}: {seconds:6.2f} s")
        print(f"release: {release_s:.2f} s, splits {result.counts}, left out {result.excluded}, "
              f"leakage {'clean' if not result.leakage else len(result.leakage)}, files {result.files}")

        report_s = 0.0
        try:
            from merforge.storage.report import agreement_report
        except ImportError:
            print("agreement report: skipped (merforge.storage.report.agreement_report not available)")
        else:
            started = time.perf_counter()
            agreement_report(ws)
            report_s = time.perf_counter() - started
            print(f"agreement report: {report_s:.2f} s")
        ws.close()
        total = release_s + report_s
        sys.stdout.flush()
        print(f"seconds_100k={total * 100_000 / args.clips:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
