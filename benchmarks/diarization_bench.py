"""Speaker counts that generalise: fit the diarizer's two constants on one set of files,
report DER on others.

The resemblyzer backend (preprocess/diarization.py, `diarize_speech`) labels all speech S1
when a source has less than MIN_SPEECH_SECONDS of speech; otherwise it estimates the number
of speakers by the eigengap of the refined affinity (nothing fitted) and merges clusters
whose mean voices are closer than SPEAKER_MERGE_DISTANCE (`speaker_distance`). This script:

  1. fits SPEAKER_MERGE_DISTANCE on the FIT cases of benchmarks/diarization_sets.py (AMI
     dev00, pyAudioAnalysis diarizationExample, 9 EMOVO conversations, 6 EMOVO
     monologues; whole): the objective is the mean of the mean DER of the one-speaker
     cases and that of the multi-speaker cases (each weighs half, whatever their numbers);
     the fitted value is the median of the grid values with the lowest objective (it is
     flat over a range: a single file flips at each end);
  2. with that distance, measures on excerpts of the FIT cases holding 2-20 s of speech
     (up to 4 per case and length) the DER of diarizing vs calling all speech one
     speaker, one-speaker and multi-speaker excerpts weighing half each, and fits
     MIN_SPEECH_SECONDS: the shortest length from which diarizing is no worse at every
     longer length measured; prints the same for the held-out excerpts;
  3. prints per case the speakers found vs true and DER (collar 0.25 s total, overlap
     scored), new (as `diarize_speech` runs) and old (average-linkage agglomerative
     clustering stopped at cosine distance 0.325, tuned on all five recordings; its count
     then goes to the same spectral clustering; no skip rule), for the FIT and the
     HELD_OUT cases (AMI dev01 and tst00, diarizationExample2, jfk.flac, 9 RAVDESS
     conversations, 5 RAVDESS monologues: nothing is chosen on these), means per kind,
     held-out excerpts per length, and the ratio old/new of the held-out mean DER.

Last line: heldout_der=<mean DER of the new diarizer over the held-out cases (whole files)>.
The RAVDESS and EMOVO voices are read in place from ../shared/data/labelled (never copied).
About 4 minutes on 2 CPU cores.

Usage: .venv/bin/python benchmarks/diarization_bench.py
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from diarization_sets import DiarizationCase, cases, excerpts, labelled_available, vad_regions  # noqa: E402

from merforge.preprocess import diarization  # noqa: E402
from merforge.preprocess.media import AUDIO_RATE  # noqa: E402
from merforge.storage.config import DiarizationConfig  # noqa: E402

DISTANCES = tuple(float(d) for d in np.round(np.arange(0.10, 0.3001, 0.01), 3))
EXCERPT_SECONDS = (2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0)
EXCERPTS_PER_CASE = 4
OLD_SPEAKER_DISTANCE = 0.325
KINDS = ("recording", "conversation", "one speaker")


@dataclass
class Prepared:
    """A case with what does not depend on the fitted constants, computed once: speech,
    windows, d-vectors, the eigengap clustering before merging, and DERs by labelling."""

    case: DiarizationCase
    speech: list[tuple[float, float]]
    spans: list[tuple[float, float]]
    embeddings: np.ndarray
    clusters: np.ndarray
    ders: dict = field(default_factory=dict)

    @property
    def speech_seconds(self) -> float:
        return sum(e - s for s, e in self.speech)

    def score(self, turns: list) -> tuple[int, float]:
        """(speakers found, DER) of turns."""
        der = diarization.diarization_error_rate(self.case.reference, turns, uem=self.case.uem, collar=0.25)
        return len({t.speaker for t in turns}), der

    def labelled(self, labels: np.ndarray) -> tuple[int, float]:
        """(speakers found, DER) of window labels, cached."""
        key = tuple(int(v) for v in labels)
        if key not in self.ders:
            duration = self.case.samples.size / AUDIO_RATE
            self.ders[key] = self.score(diarization.turns_from_labels(self.speech, self.spans, labels, duration))
        return self.ders[key]

    def one_speaker(self) -> tuple[int, float]:
        if "one" not in self.ders:
            self.ders["one"] = self.score(diarization.one_speaker_turns(self.speech))
        return self.ders["one"]

    def new(self, distance: float, min_speech: float) -> tuple[int, float]:
        """As `diarize_speech` with these constants."""
        if self.speech_seconds < min_speech:
            return self.one_speaker()
        return self.labelled(diarization.merge_close_speakers(self.embeddings, self.clusters, distance))

    def old(self, max_speakers: int) -> tuple[int, float]:
        return self.labelled(diarization.cluster_embeddings(self.embeddings, old_count(self.embeddings, max_speakers),
                                                            max_speakers))


def prepare(case: DiarizationCase, config: DiarizationConfig) -> Prepared:
    speech = case.speech if case.speech is not None else vad_regions(case.samples)
    spans, embeddings = diarization.speaker_windows(case.samples, speech, config.window, config.hop)
    k = diarization.estimate_speaker_count(embeddings, config.max_speakers) if len(spans) else 1
    # given k, cluster_embeddings does not merge: the merge is applied per distance tried
    clusters = diarization.cluster_embeddings(embeddings, k, config.max_speakers)
    return Prepared(case, speech, spans, embeddings, clusters)


def old_count(embeddings: np.ndarray, max_speakers: int) -> int:
    """The replaced criterion: clusters left when average-linkage agglomerative clustering
    stops at cosine distance 0.325."""
    from sklearn.cluster import AgglomerativeClustering

    if embeddings.shape[0] < 2:
        return 1
    model = AgglomerativeClustering(n_clusters=None, distance_threshold=OLD_SPEAKER_DISTANCE, metric="cosine",
                                    linkage="average").fit(embeddings)
    return int(min(max_speakers, model.n_clusters_))


def balanced(results: list[tuple[Prepared, float]]) -> float:
    """Mean of the mean DER over one-speaker items and over multi-speaker items;
    `results`: (item, DER)."""
    groups = [[der for item, der in results if (item.case.speakers >= 2) == several] for several in (False, True)]
    return float(np.mean([np.mean(ders) for ders in groups if ders]))


def fit_merge_distance(items: list[Prepared]) -> tuple[float, dict[float, float]]:
    """The median of the DISTANCES with the lowest `balanced` DER on `items` (never
    skipping), and the objective at every distance."""
    curve = {d: balanced([(i, i.new(d, 0.0)[1]) for i in items]) for d in DISTANCES}
    lowest = min(round(v, 6) for v in curve.values())
    tied = [d for d in DISTANCES if round(curve[d], 6) == lowest]
    return tied[len(tied) // 2], curve


def by_length(items: list[Prepared], distance: float) -> dict[float, dict[str, tuple[int, float, float]]]:
    """Per excerpt length: for one-speaker and multi-speaker excerpts, (count, mean DER
    diarized with `distance` and no skip, mean DER with all speech one speaker)."""
    table = {}
    for seconds in EXCERPT_SECONDS:
        members = [i for i in items if i.case.name.rsplit("@", 1)[-1].startswith(f"{seconds:g}s#")]
        groups = {"one": [i for i in members if i.case.speakers < 2], "several": [i for i in members if i.case.speakers >= 2]}
        if all(groups.values()):
            table[seconds] = {name: (len(group), float(np.mean([i.new(distance, 0.0)[1] for i in group])),
                                     float(np.mean([i.one_speaker()[1] for i in group])))
                              for name, group in groups.items()}
    return table


def fit_min_speech(table: dict) -> float:
    """The shortest length from which diarizing is no worse than one speaker (one-speaker
    and multi-speaker excerpts weighing half each) at every longer length in `table`."""
    worse = [s for s, row in table.items()
             if (row["one"][1] + row["several"][1]) / 2 > (row["one"][2] + row["several"][2]) / 2 + 1e-9]
    longer = [s for s in sorted(table) if not worse or s > max(worse)]
    return longer[0] if longer else float("inf")


def print_lengths(table: dict) -> None:
    print("  speech | one speaker: n  diarized  as one | 2+ speakers: n  diarized  as one | both: diarized  as one")
    for seconds, row in table.items():
        (n1, d1, o1), (n2, d2, o2) = row["one"], row["several"]
        print(f"  {seconds:4.0f} s | {n1:14d}  {d1:8.3f}  {o1:6.3f} | {n2:14d}  {d2:8.3f}  {o2:6.3f} | "
              f"{(d1 + d2) / 2:13.3f}  {(o1 + o2) / 2:6.3f}")


def report(title: str, items: list[Prepared], config: DiarizationConfig, per_case: bool = True) -> tuple[dict, dict]:
    """Speakers found and DER per case, new (module constants) and old, and means per kind."""
    new = {i.case.name: i.new(diarization.SPEAKER_MERGE_DISTANCE, diarization.MIN_SPEECH_SECONDS) for i in items}
    old = {i.case.name: i.old(config.max_speakers) for i in items}
    print(f"\n{title}")
    if per_case:
        print(f"  {'case':22s} {'kind':13s} {'true':>4s} | {'new k':>5s} {'DER':>6s} | {'old k':>5s} {'DER':>6s}")
        for i in items:
            name = i.case.name
            print(f"  {name:22s} {i.case.kind:13s} {i.case.speakers:4d} | {new[name][0]:5d} {new[name][1]:6.3f} | "
                  f"{old[name][0]:5d} {old[name][1]:6.3f}")
    for kind in KINDS:
        members = [i for i in items if i.case.kind == kind]
        if members:
            right_new = sum(new[i.case.name][0] == i.case.speakers for i in members)
            right_old = sum(old[i.case.name][0] == i.case.speakers for i in members)
            print(f"  mean {kind:13s} ({len(members):3d}): new DER {np.mean([new[i.case.name][1] for i in members]):.3f}"
                  f" (count right {right_new}/{len(members)}), old DER {np.mean([old[i.case.name][1] for i in members]):.3f}"
                  f" (count right {right_old}/{len(members)})")
    print(f"  mean over cases: new {np.mean([v[1] for v in new.values()]):.3f}, "
          f"old {np.mean([v[1] for v in old.values()]):.3f}")
    return new, old


def main() -> None:
    # sklearn notes when an excerpt has too few windows for its sparse eigensolver; it falls back
    warnings.filterwarnings("ignore", message="k >= N for N \\* N square matrix")
    if not labelled_available():
        print("../shared/data/labelled is missing: only the recordings are measured", file=sys.stderr)
    config = DiarizationConfig()
    started = time.perf_counter()
    whole = {which: [prepare(c, config) for c in cases(which)] for which in ("fit", "held_out")}
    parts = {which: [prepare(e, config) for i in whole[which] for seconds in EXCERPT_SECONDS
                     for e in excerpts(i.case, i.speech, seconds, EXCERPTS_PER_CASE)] for which in whole}
    print(f"built and embedded {len(whole['fit'])} fitting and {len(whole['held_out'])} held-out cases and "
          f"{len(parts['fit'])} + {len(parts['held_out'])} excerpts of them in {time.perf_counter() - started:.0f} s")

    evaluate(whole, parts, config)


def evaluate(whole: dict[str, list[Prepared]], parts: dict[str, list[Prepared]], config: DiarizationConfig) -> None:
    """Sections 1-3 of the module docstring, on prepared cases and excerpts."""
    distance, curve = fit_merge_distance(whole["fit"])
    print(f"\n1. merge distance, fitted on the {len(whole['fit'])} whole fitting cases; mean DER of one-speaker "
          "and multi-speaker cases (half each), never skipping:")
    print("  " + "  ".join(f"{d:.2f}:{v:.3f}" for d, v in curve.items()))
    print(f"  fitted SPEAKER_MERGE_DISTANCE = {distance:.2f} (module: {diarization.SPEAKER_MERGE_DISTANCE:.2f}"
          f"{')' if abs(distance - diarization.SPEAKER_MERGE_DISTANCE) < 1e-9 else '; DIFFERENT: update the module)'}")

    fit_table = by_length(parts["fit"], distance)
    minimum = fit_min_speech(fit_table)
    print(f"\n2. skip rule: diarize (distance {distance:.2f}) or call all speech one speaker? FIT excerpts, mean DER:")
    print_lengths(fit_table)
    print(f"  fitted MIN_SPEECH_SECONDS = {minimum:g} (module: {diarization.MIN_SPEECH_SECONDS:g}"
          f"{')' if minimum == diarization.MIN_SPEECH_SECONDS else '; DIFFERENT: update the module)'}")
    held_table = by_length(parts["held_out"], distance)
    print(f"   HELD-OUT excerpts (from these alone it would be {fit_min_speech(held_table):g} s):")
    print_lengths(held_table)

    report("3. FIT cases, whole (new: module constants, as diarize_speech runs; old: agglomerative 0.325)",
           whole["fit"], config)
    new, old = report("   HELD-OUT cases, whole (nothing chosen on these)", whole["held_out"], config)
    report("   HELD-OUT excerpts of 2-20 s of speech", parts["held_out"], config, per_case=False)
    new_mean = float(np.mean([v[1] for v in new.values()]))
    old_mean = float(np.mean([v[1] for v in old.values()]))
    print(f"\nheld-out cases, mean DER: old fixed threshold {old_mean:.3f} / new {new_mean:.3f} = {old_mean / new_mean:.2f}x")
    print(f"heldout_der={new_mean:.4f}")


if __name__ == "__main__":
    main()
