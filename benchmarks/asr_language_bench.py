"""Speech in any language: what the ASR gives the text agent on real labelled speech.

Reads ../shared/data/labelled/audio IN PLACE (RAVDESS English, EMOVO Italian, URDU Urdu;
never copied) and runs each sampled clip through `preprocess.asr.transcribe` (one clip =
one window, as the preprocessing stage runs a lone clip) with

  whisper-base     the default: detected language and its probability, words with
                   probabilities, English translation of non-English clips
  whisper-tiny.en  the old default, for contrast: it hears every language as English

and prints per corpus and model: language accuracy (URDU counts "ur" and "hi": spoken
Urdu and Hindi are one language, Hindustani, and Whisper splits them by script), the
language probability, the mean word probability of each clip, the text agent's
`text_coverage`, translations made, repetition loops (gzip compression ratio of the text
above 2.4, Whisper's own loop test), WER against RAVDESS's two known sentences, and the
seconds of CPU per second of speech. Then the language accuracy per band of language
probability, and, for candidate thresholds on the mean word probability (W) and the
language probability (L), with loops always refused, the share of clips the text agent
would refuse to read per corpus, the WER of the English clips it would keep and of
those it would refuse, and the share of tiny.en's non-English "English" (unreadable by
construction) it would refuse: the numbers behind agents.specialists
TEXT_MIN_WORD_PROBABILITY, TEXT_MIN_LANGUAGE_PROBABILITY and TEXT_MAX_COMPRESSION_RATIO.

Usage: .venv/bin/python benchmarks/asr_language_bench.py [--per-corpus 60] [--seed 0] [--json out.json]
       .venv/bin/python benchmarks/asr_language_bench.py --report-only out.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
LABELLED = ROOT.parent / "shared" / "data" / "labelled"
CORPORA = {"RAVDESS": ("ravdess", {"en"}), "EMOVO": ("emovo", {"it"}), "URDU": ("urdu", {"ur", "hi"})}
MODELS = ("whisper-base", "whisper-tiny.en")
WORD_THRESHOLDS = (0.4, 0.5, 0.6, 0.7)
LANGUAGE_THRESHOLDS = (0.3, 0.5, 0.7)
LANGUAGE_BANDS = ((0.0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01))


def sample_rows(per_corpus: int, seed: int) -> list[dict]:
    """`per_corpus` random clips of each corpus (all of them when it has fewer)."""
    rng = random.Random(seed)
    rows = []
    for corpus, (folder, _) in CORPORA.items():
        with open(LABELLED / "audio" / folder / "labels.csv", newline="", encoding="utf-8") as handle:
            members = list(csv.DictReader(handle))
        rows += [dict(row, corpus=corpus) for row in rng.sample(members, min(per_corpus, len(members)))]
    return rows


def measure(rows: list[dict], model: str) -> list[dict]:
    import jiwer
    import soundfile

    from merforge.agents.coverage import text_coverage
    from merforge.preprocess.asr import transcribe
    from merforge.storage.config import AsrConfig

    config = AsrConfig(model=model)
    transform = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                               jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    transcribe(soundfile.read(LABELLED / rows[0]["path"], dtype="float32")[0], config)  # load the model
    results = []
    for row in rows:
        samples, rate = soundfile.read(LABELLED / row["path"], dtype="float32")
        assert rate == 16000 and samples.ndim == 1, row["path"]
        started = time.process_time()
        transcript = transcribe(samples, config).transcript
        cpu = time.process_time() - started
        words = [w for w in transcript.words if w.text.strip()]
        wer = None
        if row["corpus"] == "RAVDESS" and transcript.text.strip():
            wer = jiwer.wer(row["statement"], transcript.text, reference_transform=transform,
                            hypothesis_transform=transform)
        elif row["corpus"] == "RAVDESS":
            wer = 1.0
        results.append({
            "path": row["path"], "corpus": row["corpus"], "model": model, "language": transcript.language,
            "language_probability": transcript.language_probability, "words": len(words),
            "word_probability": statistics.fmean(w.probability for w in words) if words else 0.0,
            "coverage": text_coverage(SimpleNamespace(transcript=transcript))[0],
            "text": transcript.text, "translation": transcript.translation, "wer": wer,
            "cpu_per_speech_s": cpu / (samples.size / rate),
        })
    return results


def _quartiles(values: list[float]) -> str:
    if len(values) < 4:
        return " ".join(f"{v:.2f}" for v in values) or "-"
    q = statistics.quantiles(values, n=4)
    return f"{min(values):.2f} / {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f} / {max(values):.2f}"


def report(results: list[dict]) -> dict:
    from merforge.agents.specialists import compression_ratio

    summary: dict = {}
    print("corpus   model            n  lang ok  lang p (min/q1/med/q3/max)      word p (min/q1/med/q3/max)"
          "      translated  loops  WER    CPU s/s")
    for corpus, (_, languages) in CORPORA.items():
        for model in MODELS:
            rows = [r for r in results if r["corpus"] == corpus and r["model"] == model]
            if not rows:
                continue
            heard = [r for r in rows if r["words"]]
            ok = sum(r["language"] in languages for r in rows) / len(rows)
            wers = [r["wer"] for r in rows if r["wer"] is not None]
            translated = sum(bool(r["translation"]) for r in rows)
            loops = sum(max(compression_ratio(r["text"]), compression_ratio(r["translation"])) > 2.4 for r in rows)
            entry = {"n": len(rows), "language_accuracy": round(ok, 3),
                     "language_probability_median": round(statistics.median(r["language_probability"] for r in rows), 3),
                     "word_probability_median": round(statistics.median(r["word_probability"] for r in heard), 3)
                     if heard else None,
                     "translated": translated, "loops": loops, "wer": round(statistics.fmean(wers), 3) if wers else None,
                     "cpu_per_speech_s": round(statistics.fmean(r["cpu_per_speech_s"] for r in rows), 3)}
            summary[f"{corpus}/{model}"] = entry
            print(f"{corpus:8s} {model:15s} {len(rows):3d}  {ok:6.2f}   "
                  f"{_quartiles([r['language_probability'] for r in rows]):30s}  "
                  f"{_quartiles([r['word_probability'] for r in heard]):30s}  {translated:4d}        {loops:3d}    "
                  f"{entry['wer'] if entry['wer'] is not None else '-':<5}  {entry['cpu_per_speech_s']:.2f}")

    base_rows = [r for r in results if r["model"] == "whisper-base"]
    print("\nwhisper-base language accuracy per band of language probability:")
    bands = []
    for lo, hi in LANGUAGE_BANDS:
        band = [r for r in base_rows if lo <= r["language_probability"] < hi]
        right = sum(r["language"] in CORPORA[r["corpus"]][1] for r in band)
        bands.append({"band": [lo, min(hi, 1.0)], "clips": len(band), "right": right})
        print(f"  {lo:.1f}-{min(hi, 1.0):.1f}: {right} of {len(band)} right")
    summary["language_bands"] = bands

    print("\nRefused by the text agent at a threshold on mean word probability (W) and language probability (L),"
          " repetition loops always refused:")
    print("  W     L     base RAVDESS refused (WER kept / refused)  base EMOVO  base URDU  tiny.en EMOVO+URDU refused")
    grid = []
    for w_min in WORD_THRESHOLDS:
        for l_min in LANGUAGE_THRESHOLDS:
            def refused(r):
                return (not r["words"] or r["word_probability"] < w_min or r["language_probability"] < l_min
                        or max(compression_ratio(r["text"]), compression_ratio(r["translation"])) > 2.4)
            base = {c: [r for r in results if r["corpus"] == c and r["model"] == "whisper-base"] for c in CORPORA}
            tiny_foreign = [r for r in results if r["corpus"] != "RAVDESS" and r["model"] == "whisper-tiny.en"]
            kept = [r["wer"] for r in base["RAVDESS"] if not refused(r)]
            dropped = [r["wer"] for r in base["RAVDESS"] if refused(r)]
            row = {"word_min": w_min, "language_min": l_min,
                   **{f"refused_{c}": round(sum(map(refused, rs)) / len(rs), 3) for c, rs in base.items() if rs},
                   "wer_kept": round(statistics.fmean(kept), 3) if kept else None,
                   "wer_refused": round(statistics.fmean(dropped), 3) if dropped else None,
                   "tiny_foreign_refused": round(sum(map(refused, tiny_foreign)) / len(tiny_foreign), 3)
                   if tiny_foreign else None}
            grid.append(row)
            print(f"  {w_min:.1f}   {l_min:.1f}   {row.get('refused_RAVDESS', 0):.2f} "
                  f"({row['wer_kept'] if row['wer_kept'] is not None else '-'} / "
                  f"{row['wer_refused'] if row['wer_refused'] is not None else '-'})"
                  f"{'':22s}{row.get('refused_EMOVO', 0):.2f}        {row.get('refused_URDU', 0):.2f}       "
                  f"{row['tiny_foreign_refused'] if row['tiny_foreign_refused'] is not None else '-'}")
    summary["thresholds"] = grid
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-corpus", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every clip's measures and the summary here")
    parser.add_argument("--report-only", type=Path, help="report the clips of a --json file again, without ASR")
    args = parser.parse_args()
    if args.report_only:
        report(json.loads(args.report_only.read_text())["clips"])
        return
    if not (LABELLED / "audio").is_dir():
        raise SystemExit(f"labelled audio not found at {LABELLED / 'audio'} (it is read in place, never copied)")
    rows = sample_rows(args.per_corpus, args.seed)
    results = []
    for model in MODELS:
        started = time.perf_counter()
        results += measure(rows, model)
        print(f"{model}: {len(rows)} clips in {time.perf_counter() - started:.0f} s")
    summary = report(results)
    if args.json:
        args.json.write_text(json.dumps({"clips": results, "summary": summary}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
