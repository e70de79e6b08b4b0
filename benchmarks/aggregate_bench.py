"""Judge + aggregation + routing benchmark: 100,000 clips x 5 annotators, synthetic records.

Generation (not timed) builds, per clip, a `ClipEvidence` shaped like a preprocessed clip
(5 s at 10 Hz: 50 timeline rows of time / f0 / intensity / voiced and 10 AU columns, a
few words with a speaker turn, ProsodyStats and FaceSummary computed from the rows) with a
hidden true label that drives the AUs, the pitch and the words, and 5 `Annotation`
records shaped like the real agents' answers:

- "visual", "acoustic", "text" (endpoint "offline", step times in source seconds) and two
  LLM annotators "llm-a", "llm-b" (clip-relative step times), each with its own accuracy
  against the hidden truth; a wrong answer is a random other label.
- label_probabilities over two labels, 3-5 steps citing measured values ("AU12 estimate
  0.62 over 3.0-4.0 s, a smile.", "F0 mean 182 Hz over the clip.", quotes, pauses), the
  last one stating the label, and 3 evidence items (feature / value / time range). Sloppy
  annotators sometimes cite wrong numbers or quotes that were never said.
- ~3% invalid / refused / error answers, ~0.5% of clips flagged for injection.

Timed, end to end as merforge does it:

  (0) reliabilities: tabulate the labels, Dawid-Skene over the run -> per-annotator
      accuracies (the weights of the judge's leave-one-out consensus, S_rec)
  (a) judge: judge_many (ClipFacts per clip + judge_clip) in chunks, in forked workers with
      --workers > 1; each chunk's JudgeScores are made and let go there, S_final comes back
  (b) aggregation: S_final into the table, consensus_table (weighted soft vote; the
      Dawid-Skene fit is reused), records
  (c) routing: route_many

The LAST line is exactly `seconds_100k=<float>` (wall seconds of 0 + a + b + c, scaled
to 100,000 clips when --clips is smaller).

Usage: .venv/bin/python benchmarks/aggregate_bench.py [--clips 100000] [--workers 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import resource
import sys
import time

import numpy as np

from merforge.agents.aggregate import VALID, DawidSkene, consensus_table, majority_vote, tabulate  # noqa: E402
from merforge.agents.evidence import ClipEvidence  # noqa: E402
from merforge.agents.judge import judge_many  # noqa: E402
from merforge.agents.labels import get_space  # noqa: E402
from merforge.agents.routing import ROUTES, route_many  # noqa: E402
from merforge.native import describe  # noqa: E402
from merforge.storage.config import JudgeWeights, RouteConfig  # noqa: E402
from merforge.storage.records import (  # noqa: E402
    Annotation,
    AnnotationStatus,
    Clip,
    ClipOrigin,
    EvidenceItem,
    FaceSummary,
    ProsodyStats,
    Provenance,
    SpeakerTurn,
    Transcript,
    Word,
)

SPACE = get_space("ekman7")
LABELS = SPACE.labels
AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU12", "AU15", "AU26")
# hidden label -> AU activations (0..1) of a typical face (EMFACS-like)
AU_PROFILE = {
    "happiness": {"AU06": 0.55, "AU12": 0.75},
    "sadness": {"AU01": 0.45, "AU04": 0.35, "AU15": 0.5},
    "anger": {"AU04": 0.65, "AU07": 0.5, "AU09": 0.2},
    "fear": {"AU01": 0.5, "AU02": 0.45, "AU05": 0.55, "AU04": 0.3},
    "surprise": {"AU01": 0.6, "AU02": 0.6, "AU05": 0.4, "AU26": 0.6},
    "disgust": {"AU09": 0.6, "AU15": 0.35, "AU04": 0.25},
    "neutral": {},
}
F0_BASE = {"happiness": 230, "sadness": 150, "anger": 245, "fear": 260, "surprise": 250, "disgust": 170,
           "neutral": 165}
DB_BASE = {"happiness": 68, "sadness": 58, "anger": 74, "fear": 66, "surprise": 70, "disgust": 62, "neutral": 61}
VOCAB = {
    "happiness": ["great", "love", "happy", "wonderful", "fun"],
    "sadness": ["sad", "miss", "lost", "lonely", "sorry"],
    "anger": ["hate", "stupid", "angry", "furious", "unfair"],
    "fear": ["afraid", "scared", "danger", "worried", "terrible"],
    "surprise": ["wow", "unexpected", "sudden", "amazing", "believe"],
    "disgust": ["gross", "disgusting", "sick", "nasty", "rotten"],
    "neutral": ["meeting", "table", "monday", "report", "station"],
}
FILLER = ["i", "you", "it", "is", "really", "so", "that", "the", "we", "just", "this", "was"]
ANNOTATORS = (  # id, endpoint, accuracy vs the hidden truth, share of sloppy (wrong) citations
    ("visual", "offline", 0.80, 0.05),
    ("acoustic", "offline", 0.50, 0.10),
    ("text", "offline", 0.60, 0.10),
    ("llm-a", "https://llm-a.example/v1", 0.75, 0.15),
    ("llm-b", "https://llm-b.example/v1", 0.45, 0.35),
)
CUE = {"happiness": "a smile", "sadness": "lip corners down", "anger": "a frown", "fear": "widened eyes",
       "surprise": "raised brows", "disgust": "a nose wrinkle", "neutral": "a relaxed face"}
TOP_AU = {"happiness": "AU12", "sadness": "AU15", "anger": "AU04", "fear": "AU05", "surprise": "AU01",
          "disgust": "AU09", "neutral": "AU12"}
PROVENANCE = Provenance(backend="synthetic")
DURATION, RATE = 5.0, 10


def make_clip(i: int, truth: str, rng: np.random.Generator) -> ClipEvidence:
    start = float((i % 40) * 6.0)
    n = int(DURATION * RATE)
    times = start + np.arange(n) / RATE
    timeline: dict[str, np.ndarray] = {"time": times}
    has_video = rng.random() > 0.08
    has_audio = rng.random() > 0.05
    profile = AU_PROFILE[truth]
    bump = np.clip(np.sin(np.linspace(0, math.pi, n)) * 1.3, 0, 1)  # expression peaks mid-clip
    for au in AUS:
        level = profile.get(au, 0.04)
        timeline[au] = np.clip(level * (0.4 + 0.6 * bump) + rng.normal(0, 0.04, n), 0, 1).round(3)
    if not has_video:
        for au in AUS:
            timeline[au] = np.full(n, np.nan)
    voiced = rng.random(n) > 0.25
    slope = rng.normal(0, 15) + (20 if truth in ("surprise", "fear") else -15 if truth == "sadness" else 0)
    f0 = F0_BASE[truth] + rng.normal(0, 12) + slope * (times - times[0] - DURATION / 2) + rng.normal(0, 6, n)
    if not has_audio:
        voiced[:] = False
    timeline["f0"] = np.where(voiced, f0.round(1), np.nan)
    timeline["intensity"] = (DB_BASE[truth] + rng.normal(0, 2) + rng.normal(0, 1.5, n)).round(1)
    timeline["voiced"] = voiced.astype(float)
    words = []
    if has_audio:
        t = start + 0.3
        vocab = VOCAB[truth]
        for _ in range(int(rng.integers(5, 11))):
            text = vocab[int(rng.integers(len(vocab)))] if rng.random() < 0.35 else FILLER[int(rng.integers(len(FILLER)))]
            length = 0.15 + 0.05 * len(text) / 3
            if t + length > start + DURATION - 0.1:
                break
            words.append(Word.model_construct(start=round(t, 2), end=round(t + length, 2), text=text,
                                              probability=0.9, speaker="S1"))
            t += length + (0.45 if rng.random() < 0.15 else 0.05)
    transcript = Transcript.model_construct(language="en", language_probability=0.99,
                                            text=" ".join(w.text for w in words), words=tuple(words))
    turns = (SpeakerTurn.model_construct(start=words[0].start, end=words[-1].end, speaker="S1"),) if words else ()
    vf = timeline["f0"][np.isfinite(timeline["f0"])]
    tv = times[np.isfinite(timeline["f0"])]
    pauses = sum(1 for a, b in zip(words, words[1:]) if b.start - a.end >= 0.2)
    if vf.size >= 3:
        prosody = ProsodyStats.model_construct(
            f0_mean=float(vf.mean()), f0_sd=float(vf.std()), f0_range=float(np.percentile(vf, 95) - np.percentile(vf, 5)),
            f0_slope=float(np.polyfit(tv, vf, 1)[0]), intensity_mean=float(timeline["intensity"].mean()),
            intensity_sd=float(timeline["intensity"].std()), jitter_local=0.015, shimmer_local=0.06,
            hnr=12.0, voiced_fraction=float(voiced.mean()), pause_count=pauses, pause_total=0.45 * pauses,
            pause_longest=0.45 if pauses else 0.0, speech_rate_words=len(words) / DURATION,
            speech_rate_syllables=1.4 * len(words) / DURATION, egemaps={})
    else:
        prosody = ProsodyStats()
    if has_video:
        faces = FaceSummary.model_construct(frames_analysed=5, presence=1.0, tracks=1, primary_track=0,
                                            mean_aus={au: float(timeline[au].mean()) for au in AUS}, backend="geometry")
    else:
        faces = FaceSummary()
    clip = Clip.model_construct(id=f"clip{i:06d}", source_id=f"src{i // 40:05d}", start=start, end=start + DURATION,
                                origin=ClipOrigin.SPEECH, keyframes=(), provenance=PROVENANCE)
    return ClipEvidence(clip=clip, source_path="", transcript=transcript, speaker_turns=turns, prosody=prosody,
                        faces=faces, timeline=timeline, has_video=has_video, has_audio=has_audio)


def _span(t0: float, t1: float, ev: ClipEvidence, relative: bool) -> str:
    if relative:
        t0, t1 = t0 - ev.start, t1 - ev.start
    return f"{t0:.1f}-{t1:.1f} s"


def make_answer(ev: ClipEvidence, truth: str, who: tuple, rng: np.random.Generator, injected: bool) -> Annotation:
    annotator, endpoint, accuracy, sloppy = who
    clip_id = ev.clip.id
    common = dict(id=f"{clip_id}-{annotator}", clip_id=clip_id, annotator_id=annotator, endpoint=endpoint,
                  model=annotator, label_space=SPACE.name, injection_flag=injected,
                  injection_reason="asks to ignore instructions" if injected else "")
    if rng.random() < 0.03:
        status = (AnnotationStatus.INVALID, AnnotationStatus.REFUSED, AnnotationStatus.ERROR)[int(rng.integers(3))]
        return Annotation.model_construct(**common, status=status, reason=f"synthetic {status.value} answer")
    label = truth if rng.random() < accuracy else LABELS[int(rng.choice([k for k in range(7) if LABELS[k] != truth]))]
    second = LABELS[(LABELS.index(label) + 1 + int(rng.integers(6))) % 7]
    p = round(float(rng.uniform(0.5, 0.95)), 2)
    relative = endpoint != "offline"
    timeline = ev.timeline
    t0 = round(ev.start + float(rng.uniform(0, DURATION - 1.0)), 1)
    t1 = round(t0 + 1.0, 1)
    i0, i1 = int(round((t0 - ev.start) * RATE)), int(round((t1 - ev.start) * RATE))

    def lie() -> bool:
        return rng.random() < sloppy

    steps: list[str] = []
    items: list[EvidenceItem] = []
    au = TOP_AU[label]
    au_value = float(np.nanmean(timeline[au][i0:i1])) if ev.has_video else 0.5
    if lie():
        au_value = min(1.0, au_value + 0.4)
    f0_values = timeline["f0"][np.isfinite(timeline["f0"])]
    f0 = float(f0_values.mean()) if f0_values.size else 200.0
    if lie():
        f0 += 60
    words = ev.transcript.words
    quote = " ".join(w.text for w in words[:2]) if words else "hello there"
    quote_span = (words[0].start, words[min(1, len(words) - 1)].end) if words else (t0, t1)
    if lie():
        quote = "i cannot believe it"
    visual_step = f"{au} estimate {au_value:.2f} over {_span(t0, t1, ev, relative)}, {CUE[label]}."
    audio_step = f"F0 mean {f0:.0f} Hz over the clip" + (
        ", rising pitch." if label in ("surprise", "fear") else ", falling pitch." if label == "sadness" else ".")
    text_step = f'The speaker says "{quote}" over {_span(*quote_span, ev, relative)}.'
    order = {"visual": (visual_step, audio_step), "acoustic": (audio_step,), "text": (text_step,)}.get(
        annotator, (visual_step, audio_step, text_step))
    steps.extend(order)
    if rng.random() < 0.5:
        steps.append(f"Intensity {ev.prosody.intensity_mean or 60.0:.1f} dB with {ev.prosody.pause_count} pauses.")
    if annotator in ("acoustic",):
        steps.append(f"ridge model: arousal {rng.normal(0, 0.3):+.2f}, valence {rng.normal(0, 0.3):+.2f}.")
    steps.append(f"Therefore the label is {label}.")
    items.append(EvidenceItem.model_construct(modality="visual", start=t0, end=t1, claim=CUE[label], feature=au,
                                              value=round(au_value, 2)))
    items.append(EvidenceItem.model_construct(modality="audio", start=ev.start, end=ev.end, claim="F0 mean",
                                              feature="f0", value=round(f0, 1)))
    items.append(EvidenceItem.model_construct(modality="text", start=quote_span[0], end=quote_span[1],
                                              claim=f'"{quote}"', feature="word", value=None))
    return Annotation.model_construct(
        **common, label=label, labels=(label,), label_probabilities={label: p, second: round(1 - p, 2)},
        steps=tuple(f"Step {k}: {s}" for k, s in enumerate(steps, start=1)), evidence=tuple(items),
        status=AnnotationStatus.OK, reason="")


def generate(n: int, seed: int) -> tuple[list[ClipEvidence], dict[str, list[Annotation]], np.ndarray]:
    rng = np.random.default_rng(seed)
    prior = np.array([0.12, 0.06, 0.08, 0.25, 0.14, 0.1, 0.25])
    truth = rng.choice(len(LABELS), size=n, p=prior / prior.sum())
    injected = rng.random(n) < 0.005
    evidences, by_clip = [], {}
    for i in range(n):
        ev = make_clip(i, LABELS[truth[i]], rng)
        evidences.append(ev)
        by_clip[ev.clip.id] = [make_answer(ev, LABELS[truth[i]], who, rng, bool(injected[i])) for who in ANNOTATORS]
    return evidences, by_clip, truth


def s_finals(scores: list) -> list[tuple[str, str, float | None, bool]]:
    """(clip, annotator, S_final, status ok) of each JudgeScores record: run where the records
    are made (judge_many's `consume`), in a worker with --workers > 1."""
    return [(s.clip_id, s.annotator_id, s.s_final, s.status == "ok") for s in scores]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=min(2, len(os.sched_getaffinity(0))),
                        help="judge worker processes (fork), 1: in process (default: 2 where 2 CPUs are available)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = args.clips

    started = time.perf_counter()
    evidences, by_clip, truth = generate(n, args.seed)
    gc.collect()
    gc.freeze()  # the generated records are long-lived: keep the collector from re-walking them
    print(f"generated {n} clips x {len(ANNOTATORS)} annotators in {time.perf_counter() - started:.1f} s "
          f"(not timed)", flush=True)
    print(f"modules: {describe()}", flush=True)
    weights = JudgeWeights()
    config = RouteConfig()
    k = len(LABELS)

    # (0) reliabilities from a first Dawid-Skene pass over the labels
    t = time.perf_counter()
    table = tabulate(by_clip, None, SPACE)
    ds = DawidSkene().fit(table.matrix, k)
    reliabilities = {a: (0.0 if math.isnan(r) else float(r)) for a, r in zip(table.annotator_ids, ds.accuracies_)}
    t_rel = time.perf_counter() - t

    # (a) judge, in chunks of clips (forked workers with --workers > 1). Each chunk's JudgeScores
    # records are made and let go where they are made (as if persisted there), and only
    # (clip, annotator, S_final) comes back, which keeps memory flat and spares the pickling.
    t = time.perf_counter()
    pairs = [(ev, by_clip[ev.clip.id]) for ev in evidences]
    parts = judge_many(pairs, SPACE, weights, reliabilities, workers=args.workers, chunk_clips=2000,
                       consume=s_finals)
    t_judge = time.perf_counter() - t
    del pairs

    # (b, first part) each answer's S_final into the table
    t = time.perf_counter()
    column = {a: w for w, a in enumerate(table.annotator_ids)}
    row = {c: i for i, c in enumerate(table.clip_ids)}
    s_final = np.full(table.matrix.shape, np.nan)
    n_scores, s_sum, s_count = 0, 0.0, 0
    for part in parts:
        n_scores += len(part)
        for clip_id, annotator_id, score, ok in part:
            if score is not None:
                s_sum += score
                s_count += 1
                if ok:
                    s_final[row[clip_id], column[annotator_id]] = score
    del parts
    t_agg = time.perf_counter() - t

    # (b) aggregation: weighted soft vote (Dawid-Skene fit reused), records
    t = time.perf_counter()
    table.s_final = np.where(table.state == VALID, s_final, np.nan)
    result = consensus_table(table, config.aggregation, dawid_skene=ds)
    t_agg += time.perf_counter() - t

    # (c) routing
    t = time.perf_counter()
    route_many(result, config)
    records = result.to_records()
    t_route = time.perf_counter() - t

    total = t_rel + t_judge + t_agg + t_route
    n_ann = sum(len(v) for v in by_clip.values())
    print(f"reliabilities (tabulate + Dawid-Skene): {t_rel:7.2f} s  "
          + ", ".join(f"{a} {r:.2f}" for a, r in reliabilities.items()))
    print(f"judge ({args.workers} process(es)):          {t_judge:7.2f} s  {n / t_judge:9.0f} clips/s  "
          f"{t_judge / n_ann * 1e6:6.1f} us/annotation")
    print(f"aggregation (weighted + DS reuse):      {t_agg:7.2f} s  {n / t_agg:9.0f} clips/s")
    print(f"routing + Consensus records:            {t_route:7.2f} s  {n / t_route:9.0f} clips/s")
    print(f"total:                                  {total:7.2f} s  {n / total:9.0f} clips/s")
    shares = np.bincount(result.route, minlength=len(ROUTES)) / n
    print("routes: " + ", ".join(f"{r.value} {s:.1%}" for r, s in zip(ROUTES, shares)))
    majority, _ = majority_vote(table.matrix, k)
    has = result.label >= 0
    accepted = result.route == 0
    print(f"consensus accuracy vs hidden truth: weighted {np.mean(result.label == truth):.4f}, "
          f"majority {np.mean(majority == truth):.4f}, Dawid-Skene {np.mean(ds.labels_ == truth):.4f} "
          f"(clips with a label: {has.mean():.1%})")
    print(f"auto-accepted precision: {np.mean(result.label[accepted] == truth[accepted]):.4f} "
          f"over {accepted.sum()} clips")
    print(f"S_final: mean {s_sum / max(1, s_count):.3f}; answers scored {n_scores}, records {len(records)}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(f"peak RSS {peak:.2f} GB")
    print(f"seconds_100k={total * 100_000 / n:.3f}")


if __name__ == "__main__":
    main()
