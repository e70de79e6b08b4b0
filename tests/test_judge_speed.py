"""The judge's speed paths give the same answers as the plain ones.

- `_parse` reads numbers, AUs, speakers and quotes per text from a plan made once per
  template (digits zeroed): the result must equal a parse of the text itself.
- `_step_plan` (compiled per template, numbers read per text) holds what `_parse` reads.
- `judge_many` (in process and with 2 forked workers) returns what `judge_clip` per clip does,
  and with `consume` what `consume` makes of each chunk's records.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from merforge.agents import judge  # noqa: E402
from merforge.agents.judge import ClipFacts, _instantiate, _parse, _plan, judge_clip, judge_many  # noqa: E402
from merforge.storage.config import JudgeWeights  # noqa: E402

TEXTS = [
    "Step 1: AU12 estimate 0.62 over 3.0-4.0 s, a smile.",
    "Step 2: AU 4 mean 0.15 at 2.5 s; no frown.",
    "F0 mean 182 Hz over 1.2\u20132.2 s, rising pitch; intensity 64.5 dB.",
    'Speaker S2 says "I paid 3 dollars" over 0.5-1.5 s; (2 pauses.',
    "Face present in 87% of frames; AU06 is active, AU15 absent.",
    "ridge model: arousal +0.11, valence -0.20.",
    "Transcript, 12 words at 7 s: 'great'.",
]


def test_template_plans_read_each_texts_own_numbers():
    for text in TEXTS:
        judge._PARSED.clear()
        judge._PLANS.clear()
        direct = _instantiate(_plan(text), text)  # the plan of the text itself
        other = text.replace("0.62", "0.31").replace("182", "240").replace("12", "15")
        _parse(other)  # plans the shared template first
        assert _parse(text) == direct, text


def test_judge_many_matches_judge_clip():
    import aggregate_bench as bench

    evidences, by_clip, _ = bench.generate(60, seed=5)
    weights = JudgeWeights()
    reliabilities = {"visual": 0.8, "llm-b": 0.3}
    expected = [s for ev in evidences for s in judge_clip(by_clip[ev.clip.id], ClipFacts.from_evidence(ev),
                                                          bench.SPACE, weights, reliabilities)]
    pairs = [(ev, by_clip[ev.clip.id]) for ev in evidences]
    assert judge_many(pairs, bench.SPACE, weights, reliabilities) == expected
    assert judge_many(pairs, bench.SPACE, weights, reliabilities, workers=2, chunk_clips=20) == expected


def test_step_plans_match_parse():
    """`_step_plan` (compiled per template, read per text) holds what `_parse` reads."""
    for text in TEXTS + ["Therefore the label is anger.", "Step 4: the final label is fear", "no claim here"]:
        judge._STEP_PLANS.clear()
        judge._COMPILED.clear()
        other = text.replace("0.62", "0.31").replace("182", "240").replace("12", "15")
        judge._step_plan(other)  # compiles the shared template first
        label_only, entries = judge._step_plan(text)
        assertions, spans = _parse(text)
        assert [(e[0], e[4]) for e in entries] == [(a.kind, a.text) for a in assertions], text
        for (kind, _, first, second, _, span, modality), a in zip(entries, assertions):
            if kind in ("num", "au"):
                assert (first, second) == (a.key, a.value)
            else:
                assert first == a
            nearest = min(spans, key=lambda s: abs(s[0] - a.position)) if spans else None
            assert span == (None if nearest is None else (0, nearest[1], nearest[2]))
            assert modality == judge._modality(a)
        assert label_only == (all(a.kind == "internal" for a in assertions)
                              and bool(judge._LABEL_ONLY.match(text.lower()))), text


def _s_finals(scores):
    return [(s.annotation_id, s.s_final) for s in scores]


def test_judge_many_consume_runs_per_chunk():
    import aggregate_bench as bench

    evidences, by_clip, _ = bench.generate(50, seed=7)
    weights = JudgeWeights()
    pairs = [(ev, by_clip[ev.clip.id]) for ev in evidences]
    records = judge_many(pairs, bench.SPACE, weights)
    expected = [_s_finals(records[i * 5:(i + 20) * 5]) for i in range(0, 50, 20)]
    assert judge_many(pairs, bench.SPACE, weights, chunk_clips=20, consume=_s_finals) == expected
    assert judge_many(pairs, bench.SPACE, weights, workers=2, chunk_clips=20, consume=_s_finals) == expected


def test_fast_records_are_what_validation_makes():
    """JudgeScores and ClaimCheck records are made from the judge's own values without
    validating again: the same records as the validating constructor makes of the fields given
    (values and their types, field order, fields set)."""
    import aggregate_bench as bench

    from merforge.storage.records import ClaimCheck, JudgeScores

    def same(made, validated):
        assert made == validated
        assert list(made.__dict__) == list(validated.__dict__)
        assert [type(v) for v in made.__dict__.values()] == [type(v) for v in validated.__dict__.values()]
        assert made.model_fields_set == validated.model_fields_set
        assert made.model_dump_json() == validated.model_dump_json()

    evidences, by_clip, _ = bench.generate(40, seed=11)
    n = 0
    for ev in evidences:
        for record in judge_clip(by_clip[ev.clip.id], ClipFacts.from_evidence(ev), bench.SPACE, JudgeWeights(),
                                 {"visual": 0.7, "text": 0.0}):
            same(record, JudgeScores(**{name: getattr(record, name) for name in record.model_fields_set}))
            for check in record.checks:
                same(check, ClaimCheck(**check.model_dump()))
            n += 1
    assert n == 200


def test_claims_in_one_pass_match_check_claims_and_reason_score():
    import aggregate_bench as bench

    evidences, by_clip, _ = bench.generate(40, seed=12)
    for ev in evidences:
        facts, other = ClipFacts.from_evidence(ev), ClipFacts.from_evidence(ev)
        for annotation in by_clip[ev.clip.id]:
            if annotation.status != "ok":
                continue
            checks, score, reason = judge._claims(annotation, facts)
            expected = judge.check_claims(annotation, other)
            assert list(checks) == expected
            assert (score, reason) == judge.reason_score(expected)


def test_prefix_sums_are_numpys_cumulative_sums():
    """Window means come from numpy's cumulative sums of the finite values, bit for bit."""
    import numpy as np

    rng = np.random.default_rng(0)
    columns = [rng.random(50), np.where(rng.random(50) < 0.3, np.nan, rng.normal(size=50)),
               np.array([-0.0, -0.0, 0.0, np.inf, 1.5, -np.inf, np.nan, 2.0]), np.array([-0.0, 3.0]), np.array([])]
    for values in columns:
        prefix = judge._Prefix(values)
        finite = np.isfinite(values)
        sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
        counts = np.concatenate([[0], np.cumsum(finite)]).astype(int)
        assert np.array(prefix.sums).tobytes() == sums.tobytes()
        assert prefix.any == bool(finite.any())
        for i in range(len(values) + 1):
            for j in range(len(values) + 1):
                n = counts[j] - counts[i]
                expected = (sums[j] - sums[i]) / n if n else None
                assert prefix.mean(i, j) == expected or (expected is not None and np.isnan(expected)
                                                         and np.isnan(prefix.mean(i, j)))
