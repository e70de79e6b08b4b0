"""Aggregation, routing and calibration: Dawid-Skene against crowd-kit, simulations with
known truth and annotator accuracy, planted hard clips, audits, and calibration."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from merforge.agents.aggregate import (
    ABSTAINED,
    INVALID,
    AnnotationTable,
    DawidSkene,
    build_consensus,
    consensus_table,
    encode,
    majority_vote,
    tabulate,
    weighted_vote,
)
from merforge.agents.calibration import (
    WorkspaceCalibration,
    expected_calibration_error,
    fit_workspace_calibration,
    fit_calibration,
    reliability_curve,
    threshold_for_precision,
)
from merforge.agents.labels import get_space
from merforge.agents.routing import AUDIT, AUTO_ACCEPT, NO_EVIDENCE_REASON, REVIEW, review_queue, route, route_many
from merforge.storage.config import RouteConfig
from merforge.storage.records import Annotation, AnnotationStatus, EvidenceItem, JudgeScores, Route, annotation_id

REFS = Path(__file__).parent / "data" / "refs" / "reference_values.json"
EKMAN = get_space("ekman7")


def simulate(n_items: int, accuracies, n_labels: int, seed: int, missing: float = 0.0):
    """Truth uniform over labels; annotator w right with probability accuracies[w], otherwise a
    uniformly chosen WRONG label (so its accuracy is exactly that)."""
    rng = np.random.default_rng(seed)
    accuracies = np.asarray(accuracies)
    truth = rng.integers(0, n_labels, n_items)
    wrong = (truth[:, None] + rng.integers(1, n_labels, (n_items, accuracies.size))) % n_labels
    matrix = np.where(rng.random((n_items, accuracies.size)) < accuracies, truth[:, None], wrong)
    matrix[rng.random(matrix.shape) < missing] = -1
    return truth, matrix


def tidy(matrix: np.ndarray) -> pd.DataFrame:
    task, worker = np.nonzero(matrix >= 0)
    return pd.DataFrame({"task": task, "worker": worker, "label": matrix[task, worker]})


# -- Dawid-Skene ------------------------------------------------------------------------


def test_dawid_skene_reproduces_crowdkit_reference_iterations():
    ref = json.loads(REFS.read_text())["dawid_skene"][0]
    rows = ref["answers_task_worker_label"]
    tasks = sorted({t for t, _, _ in rows})
    workers = sorted({w for _, w, _ in rows})
    labels = sorted({lab for _, _, lab in rows})  # crowd-kit's column order: "no", "yes"
    matrix = np.full((len(tasks), len(workers)), -1)
    for t, w, lab in rows:
        matrix[tasks.index(t), workers.index(w)] = labels.index(lab)
    for key, n_iter in (("iter0", 0), ("iter1", 1)):
        expected = ref[key]
        ds = DawidSkene(n_iter=n_iter).fit(matrix, len(labels))
        p_yes = ds.predict_proba()[:, labels.index("yes")]
        assert p_yes == pytest.approx([expected["P_yes"][t] for t in tasks], abs=ref["tolerance"])
        assert ds.priors_ == pytest.approx([expected["priors"][lab] for lab in labels], abs=ref["tolerance"])
        assert [labels[c] for c in ds.labels_] == [expected["labels"][t] for t in tasks]


@pytest.mark.parametrize("n_iter", [1, 3, 100])
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::Warning:crowdkit")
def test_dawid_skene_matches_crowdkit_on_a_random_example(n_iter):
    from crowdkit.aggregation import DawidSkene as CrowdKitDawidSkene

    n_labels = 4
    _, matrix = simulate(600, [0.9, 0.8, 0.7, 0.6, 0.5, 0.35], n_labels, seed=3, missing=0.25)
    ours = DawidSkene(n_iter=n_iter).fit(matrix, n_labels)
    theirs = CrowdKitDawidSkene(n_iter=n_iter).fit(tidy(matrix))
    tasks = np.flatnonzero((matrix >= 0).any(axis=1))
    theirs_proba = theirs.probas_.loc[tasks, list(range(n_labels))].to_numpy()
    # crowd-kit floors the final posteriors at 1e-10 in place; nothing else differs
    assert np.abs(ours.probas_[tasks] - theirs_proba).max() < 1e-6
    assert ours.n_iter_ == len(theirs.loss_history_)
    assert ours.loss_history_ == pytest.approx(theirs.loss_history_, abs=1e-9)
    assert ours.priors_ == pytest.approx(theirs.priors_.loc[list(range(n_labels))].to_numpy(), abs=1e-9)
    errors = theirs.errors_
    for (worker, observed), row in errors.iterrows():
        assert ours.errors_[worker, observed] == pytest.approx(row.loc[list(range(n_labels))].to_numpy(), abs=1e-9)
    # labels agree wherever the posterior has a unique top (exact ties follow each tool's column order)
    top2 = np.sort(theirs_proba, axis=1)[:, -2:]
    untied = top2[:, 1] - top2[:, 0] > 1e-9
    assert np.array_equal(ours.labels_[tasks][untied], theirs.labels_.loc[tasks].to_numpy()[untied])


def test_dawid_skene_recovers_annotator_accuracies_and_beats_majority_vote():
    accuracies = [0.9, 0.8, 0.7, 0.6, 0.4]
    truth, matrix = simulate(2000, accuracies, 7, seed=0)
    ds = DawidSkene().fit(matrix, 7)
    print("recovered accuracies", np.round(ds.accuracies_, 3), "true", accuracies)
    assert ds.accuracies_ == pytest.approx(accuracies, abs=0.03)
    diagonal = ds.errors_[:, np.arange(7), np.arange(7)].mean(axis=1)
    assert diagonal == pytest.approx(accuracies, abs=0.03)
    majority, _ = majority_vote(matrix, 7)
    ds_accuracy, mv_accuracy = (ds.labels_ == truth).mean(), (majority == truth).mean()
    print(f"accuracy: Dawid-Skene {ds_accuracy:.3f}, majority {mv_accuracy:.3f}")
    assert ds_accuracy > mv_accuracy + 0.01
    # weights that know the annotators (log-odds of being right, the optimal weights for this
    # symmetric noise) beat equal weights
    weights = np.log(6 * np.asarray(accuracies) / (1 - np.asarray(accuracies)))
    weighted, _ = weighted_vote(matrix, weights, 7)
    assert (weighted == truth).mean() > mv_accuracy + 0.01


def test_votes_handle_missing_answers():
    matrix = np.array([[0, 0, 1], [-1, 2, -1], [-1, -1, -1]])
    labels, shares = majority_vote(matrix, 3)
    assert labels.tolist() == [0, 2, -1]
    assert shares[0] == pytest.approx([2 / 3, 1 / 3, 0])
    labels, proba = weighted_vote(matrix, np.array([0.1, 0.1, 0.9]), 3)
    assert labels.tolist() == [1, 2, -1]
    ds = DawidSkene().fit(matrix, 3)
    assert ds.labels_[2] == -1 and ds.probas_[2] == pytest.approx(ds.priors_)


# -- records -----------------------------------------------------------------------------


def answer(clip: str, agent: str, label: str | None, p: float = 0.8, s_final: float | None = 0.8,
           status: AnnotationStatus = AnnotationStatus.OK, evidence: str | None = None, labels=(),
           injection: str = "", space=EKMAN) -> tuple[Annotation, JudgeScores]:
    probabilities = {}
    if label is not None and status == AnnotationStatus.OK:
        rest = (1 - p) / (len(space.labels) - 1)
        named = space.normalise(label)  # a synonym answer ("rage") puts its mass on the space's label
        probabilities = {x: (p if x == named else rest) for x in space.labels}
    offline = agent in ("text", "acoustic", "visual")
    items = ()
    if evidence:
        items = tuple(EvidenceItem(modality=evidence, start=0.0, end=1.0, claim="seen") for _ in range(2))
    aid = annotation_id(clip, agent, "v1")
    annotation = Annotation(id=aid, clip_id=clip, annotator_id=agent, endpoint="offline" if offline else "http://llm",
                            label=label, label_probabilities=probabilities, labels=tuple(labels), status=status,
                            evidence=items, injection_flag=bool(injection), injection_reason=injection,
                            label_space=space.name)
    score = JudgeScores(annotation_id=aid, clip_id=clip, annotator_id=agent, judge="evidence", s_final=s_final)
    return annotation, score


def collect(*clips):
    by_clip, scores = {}, {}
    for clip, answers in clips:
        by_clip[clip] = [a for a, _ in answers]
        scores.update({s.annotation_id: s for _, s in answers if s.s_final is not None})
    return by_clip, scores


LLMS = ("gpt", "claude", "gemini", "qwen", "llama")


def planted_clips():
    return collect(
        ("clean", [answer("clean", a, "happiness", 0.9, 0.85) for a in LLMS]),
        ("split", [answer("split", a, lab, 0.9, 0.8) for a, lab in zip(LLMS, ["anger"] * 2 + ["sadness"] * 2)]),
        ("strong-vs-weak", [answer("strong-vs-weak", "gpt", "anger", 0.95, 0.9)]
         + [answer("strong-vs-weak", a, "happiness", 0.9, 0.3) for a in LLMS[1:]]),
        ("conflict", [answer("conflict", "visual", "happiness", 0.8, 0.8),
                      answer("conflict", "acoustic", "anger", 0.8, 0.8),
                      answer("conflict", "text", "anger", 0.8, 0.8)]),
        ("injected", [answer("injected", a, "neutral", 0.9, 0.8, injection="'ignore previous instructions'"
                             if a == "gpt" else "") for a in LLMS]),
        ("invalid", [answer("invalid", a, "fear", 0.9, 0.8) for a in LLMS[:3]]
         + [answer("invalid", a, None, status=AnnotationStatus.INVALID) for a in LLMS[3:]]),
        ("judged-badly", [answer("judged-badly", a, "sadness", 0.9, 0.2) for a in LLMS]),
    )


def test_planted_hard_clips_go_to_review_with_their_reasons():
    by_clip, scores = planted_clips()
    config = RouteConfig(audit_share=0.0)
    result = build_consensus(by_clip, scores, EKMAN, config)
    for clip, c in result.items():
        print(clip, c.label, f"{c.confidence:.2f}", c.route.value, c.route_reasons, f"priority {c.priority:.2f}")
    assert result["clean"].route == Route.AUTO_ACCEPT and result["clean"].route_reasons == ()
    assert result["clean"].label == "happiness" and result["clean"].confidence == pytest.approx(0.9)
    split = result["split"]
    assert split.route == Route.REVIEW and split.route_reasons[0].startswith("confidence 0.")
    strong = result["strong-vs-weak"]
    assert strong.majority_label == "happiness" and strong.route == Route.REVIEW
    assert any(r.startswith("mean S_final 0.30 < 0.50") for r in strong.route_reasons)
    conflict = result["conflict"]
    assert conflict.conflict and conflict.route == Route.REVIEW
    assert "visual says happiness" in conflict.conflict_reason and "audio says anger" in conflict.conflict_reason
    assert conflict.conflict_reason in conflict.route_reasons
    injected = result["injected"]
    assert injected.route == Route.REVIEW
    assert injected.route_reasons == ("instruction-like text in the transcript ('ignore previous instructions')",)
    assert result["invalid"].route_reasons == ("2 of 5 answers invalid",)
    assert result["judged-badly"].route_reasons == ("mean S_final 0.20 < 0.50",)
    # most informative first: the 50/50 split and the conflict lead the queue
    queue = [c.clip_id for c in review_queue(result)]
    assert set(queue[:2]) == {"split", "conflict"} and "clean" not in queue


def test_route_one_clip_agrees_with_route_many():
    by_clip, scores = planted_clips()
    config = RouteConfig(audit_share=0.3, seed=7)
    routed = build_consensus(by_clip, scores, EKMAN, config)
    unrouted = build_consensus(by_clip, scores, EKMAN, config, route=False)
    for clip, c in unrouted.items():
        one = route(c, by_clip[clip], scores, config, np.random.default_rng(0))
        assert (one.route, one.route_reasons) == (routed[clip].route, routed[clip].route_reasons)
        assert one.priority == pytest.approx(routed[clip].priority)


def test_aggregation_choice_picks_the_label():
    by_clip, scores = planted_clips()
    for aggregation, expected in (("weighted", "happiness"), ("majority", "happiness"), ("dawid_skene", None)):
        c = build_consensus(by_clip, scores, EKMAN, RouteConfig(aggregation=aggregation))["strong-vs-weak"]
        assert c.label == {"weighted": c.weighted_label, "majority": c.majority_label,
                           "dawid_skene": c.dawid_skene_label}[aggregation]
        assert c.distribution[c.label] == pytest.approx(c.confidence)
        if expected:
            assert c.label == expected


def test_abstentions_do_not_vote_and_invalid_answers_are_counted():
    anns = [answer("c", "text", "anger")[0], answer("c", "visual", "anger")[0],
            answer("c", "acoustic", None, status=AnnotationStatus.ABSTAINED)[0].model_copy(
                update={"reason": "no voiced speech was measured"}),
            answer("c", "gpt", "rage")[0],  # a synonym: normalised to anger
            answer("c", "claude", "bewildered")[0]]  # outside the space: invalid
    clip_ids, annotators, labels, matrix = encode(anns, EKMAN)
    assert clip_ids == ["c"] and labels == EKMAN.labels
    by_name = dict(zip(annotators, matrix[0].tolist()))
    anger = EKMAN.labels.index("anger")
    assert by_name == {"acoustic": -1, "claude": -1, "gpt": anger, "text": anger, "visual": anger}
    c = build_consensus({"c": anns}, {}, EKMAN, RouteConfig())["c"]
    assert c.label == "anger" and c.route_reasons == ()  # 1 of 5 invalid is under max_invalid_share 0.34
    table = tabulate({"c": anns}, {}, EKMAN)
    assert table.state[0].tolist().count(ABSTAINED) == 1 and table.state[0].tolist().count(INVALID) == 1


def test_multi_label_consensus():
    space = get_space("ekman7")
    clips = collect(("mixed", [answer("mixed", "gpt", "happiness", labels=("happiness", "surprise")),
                               answer("mixed", "claude", "happiness", labels=("happiness", "surprise")),
                               answer("mixed", "gemini", "happiness", labels=("happiness",))]))
    by_clip = {clip: [a.model_copy(update={"label_probabilities": {}}) for a in anns]
               for clip, anns in clips[0].items()}
    table = tabulate(by_clip, clips[1], space)
    assert table.multi_label
    c = build_consensus(by_clip, clips[1], space, RouteConfig(aggregation="majority"))["mixed"]
    # hard multi-label votes spread evenly over each answer's set: happiness 2/3, surprise 1/3
    assert c.distribution["happiness"] == pytest.approx(2 / 3) and c.distribution["surprise"] == pytest.approx(1 / 3)
    assert c.labels == ("happiness", "surprise")
    single = build_consensus({"x": [answer("x", a, "anger")[0] for a in LLMS]}, {}, space)["x"]
    assert single.labels == ("anger",)


# -- routing on a simulated run ---------------------------------------------------------------


def simulated_table(n: int, seed: int, hard: int = 0):
    """Five annotators (S_final tracks their accuracy), modalities text/audio/visual/text/audio;
    the first `hard` clips are planted hard: annotators split 2/2 with one abstaining."""
    accuracies = np.array([0.9, 0.85, 0.85, 0.8, 0.8])
    truth, matrix = simulate(n, accuracies, 7, seed)
    rng = np.random.default_rng(seed + 1)
    s_final = np.clip(accuracies + rng.normal(0, 0.05, matrix.shape), 0, 1)
    if hard:
        matrix[:hard, :2] = truth[:hard, None]
        matrix[:hard, 2:4] = ((truth[:hard] + 1) % 7)[:, None]
        matrix[:hard, 4] = -1
    modality = np.tile([0, 1, 2, 0, 1], (n, 1))
    clip_ids = [f"clip-{seed}-{i}" for i in range(n)]
    return truth, AnnotationTable.from_arrays(matrix, EKMAN.labels, clip_ids=clip_ids, s_final=s_final,
                                              modality=modality)


def test_simulated_run_sends_planted_hard_clips_to_review():
    _, table = simulated_table(3000, seed=1, hard=100)
    result = route_many(consensus_table(table, "weighted"), RouteConfig())
    assert (result.route[:100] == REVIEW).all()
    assert all(r[0].startswith("confidence 0.") for r in result.route_reasons[:100])
    assert result.priority[:100].mean() > 2 * result.priority[100:].mean()
    share_reviewed = (result.route[100:] == REVIEW).mean()
    print(f"review share among ordinary simulated clips: {share_reviewed:.3f}")
    assert share_reviewed < 0.5


def test_audit_share_is_close_to_config_and_deterministic():
    config = RouteConfig(audit_share=0.05, seed=11, min_confidence=0.0, min_s_final=0.0, review_conflicts=False,
                         min_agreeing_agents=1)
    _, table = simulated_table(20000, seed=2)
    first = route_many(consensus_table(table), config)
    accepted = first.route != REVIEW
    share = (first.route[accepted] == AUDIT).mean()
    assert share == pytest.approx(0.05, abs=0.005)
    assert first.route_reasons[int(np.flatnonzero(first.route == AUDIT)[0])] == (
        "audit: random 5% of auto-accepted clips",)
    again = route_many(consensus_table(table), config)
    assert np.array_equal(first.route, again.route)
    # another batch holding some of the same clips audits the same ones
    half = AnnotationTable.from_arrays(table.matrix[::2], table.labels, clip_ids=table.clip_ids[::2],
                                       s_final=table.s_final[::2], modality=table.modality[::2])
    batch = route_many(consensus_table(half), config)
    assert np.array_equal(batch.route == AUDIT, first.route[::2] == AUDIT)
    other_seed = route_many(consensus_table(table), config.model_copy(update={"seed": 12}))
    assert not np.array_equal(first.route, other_seed.route)
    assert set(np.unique(first.route)) <= {AUTO_ACCEPT, AUDIT}


def test_aggregation_and_routing_of_100k_clips_by_5_annotators_takes_seconds():
    truth, table = simulated_table(100_000, seed=5)
    started = time.perf_counter()
    ds = DawidSkene().fit(table.matrix, table.n_labels)
    fitted = time.perf_counter()
    result = route_many(consensus_table(table, "weighted", dawid_skene=ds), RouteConfig())
    routed = time.perf_counter()
    print(f"100,000 x 5: Dawid-Skene {fitted - started:.2f} s ({ds.n_iter_} iterations), "
          f"consensus + routing {routed - fitted:.2f} s; DS accuracy {(ds.labels_ == truth).mean():.3f}, "
          f"weighted {(result.weighted_label == truth).mean():.3f}; routes {np.bincount(result.route, minlength=3)}")
    assert routed - started < 10


# -- calibration ---------------------------------------------------------------------------


def test_ece_of_a_hand_computed_example():
    conf = np.array([0.95, 0.95, 0.65, 0.65, 0.25])
    correct = np.array([1, 0, 1, 1, 0])
    # bins (0.9,1]: |0.5 - 0.95| * 2/5; (0.6,0.7]: |1 - 0.65| * 2/5; (0.2,0.3]: |0 - 0.25| * 1/5
    assert expected_calibration_error(conf, correct) == pytest.approx(0.45 * 0.4 + 0.35 * 0.4 + 0.25 * 0.2)
    curve = reliability_curve(conf, correct)
    assert curve.count.tolist() == [0, 0, 1, 0, 0, 0, 2, 0, 0, 2]
    assert curve.accuracy[9] == 0.5 and curve.confidence[6] == pytest.approx(0.65)


def test_isotonic_calibration_lowers_ece_and_finds_the_precision_threshold():
    rng = np.random.default_rng(4)
    conf = rng.beta(5, 2, 8000)
    agreed = rng.random(8000) < conf**3  # over-confident: true P(agree) = conf^3
    train, test = slice(0, 4000), slice(4000, None)
    calibration = fit_calibration(conf[train], agreed[train])
    ece_raw = expected_calibration_error(conf[test], agreed[test])
    ece_calibrated = expected_calibration_error(calibration.predict(conf[test]), agreed[test])
    print(f"ECE held-out: raw {ece_raw:.3f}, isotonic {ece_calibrated:.3f}")
    assert ece_raw > 0.15 and ece_calibrated < 0.03
    assert calibration.ece_after < calibration.ece_before
    threshold, precision, reviews, coverage = threshold_for_precision(conf[train], agreed[train], 0.95)
    assert precision >= 0.95 and reviews == int((conf[train] < threshold).sum())
    assert coverage == pytest.approx(1 - reviews / 4000)
    held_out = agreed[test][conf[test] >= threshold].mean()
    print(f"threshold {threshold:.3f}: train precision {precision:.3f}, held-out {held_out:.3f}, "
          f"coverage {coverage:.2f}")
    assert held_out >= 0.92
    lower = conf[train] < threshold
    assert agreed[train][conf[train] >= conf[train][lower].max()].mean() < 0.95  # one step lower misses it


def test_threshold_for_precision_is_clear_when_unreachable():
    result = threshold_for_precision([0.9, 0.8, 0.7], [False, True, False], 0.95)
    assert not result.reached and result.threshold == float("inf")
    assert result.reviews_needed == 3 and result.coverage == 0.0
    reached = threshold_for_precision([0.9, 0.8, 0.7, 0.6], [True, True, False, True], 0.75)
    assert reached.reached and reached.threshold == 0.6 and reached.reviews_needed == 0


def test_consensus_records_are_what_model_construct_makes(monkeypatch):
    """to_records makes each Consensus without model_construct's per-field look-ups: the same
    records (values, field order, fields set), routed or not, single- or multi-label, as the
    field-by-field path."""
    from merforge.agents import aggregate
    from merforge.storage.records import Consensus

    _, table = simulated_table(500, seed=4, hard=50)
    for multi_label in (False, True):
        table.multi_label = multi_label
        for aggregation in AGGREGATIONS_UNDER_TEST:
            result = consensus_table(table, aggregation, multi_label_threshold=0.2)
            for routed in (False, True):
                if routed:
                    route_many(result, RouteConfig())
                records = result.to_records()
                assert list(records) == table.clip_ids
                with monkeypatch.context() as patch:
                    patch.setattr(aggregate, "_CONSENSUS_FAST", False)
                    assert result.to_records() == records
                for record in records.values():
                    expected = Consensus.model_construct(**record.__dict__)
                    assert record == expected and list(record.__dict__) == list(expected.__dict__)
                    assert record.model_fields_set == expected.model_fields_set
                    assert record.model_dump_json() == expected.model_dump_json()
                if multi_label:
                    assert any(len(r.labels) > 1 for r in records.values())


AGGREGATIONS_UNDER_TEST = ("weighted", "majority", "dawid_skene")


# -- abstention, coverage, agreement and calibration (issue 13) --------------------------------


def abstention(clip: str, agent: str) -> Annotation:
    return answer(clip, agent, None, status=AnnotationStatus.ABSTAINED)[0].model_copy(
        update={"reason": "no face was analysed", "coverage": 0.0})


def test_an_abstaining_agent_never_changes_a_consensus():
    informative = [answer("c", "gpt", "anger", p=0.7)[0], answer("c", "claude", "fear", p=0.6)[0],
                   answer("c", "text", "anger", p=0.55)[0]]
    for aggregation in ("weighted", "majority", "dawid_skene"):
        config = RouteConfig(aggregation=aggregation)
        alone = build_consensus({"c": informative}, {}, EKMAN, config)["c"]
        with_abstentions = build_consensus({"c": informative + [abstention("c", "visual"), abstention("c", "acoustic")]},
                                           {}, EKMAN, config)["c"]
        assert with_abstentions.label == alone.label
        assert with_abstentions.distribution == pytest.approx(alone.distribution)
        assert with_abstentions.route == alone.route and with_abstentions.route_reasons == alone.route_reasons


def test_three_abstentions_go_to_review_as_no_evidence():
    answers = [abstention("c", a) for a in ("text", "acoustic", "visual")]
    c = build_consensus({"c": answers}, {}, EKMAN, RouteConfig(audit_share=0.0))["c"]
    assert c.label is None and c.route == Route.REVIEW and c.route_reasons == (NO_EVIDENCE_REASON,)
    marked = build_consensus({"c": answers}, {}, EKMAN, RouteConfig(no_evidence="mark"))["c"]
    assert marked.route == Route.NO_EVIDENCE and marked.label is None
    # the single-clip router says the same
    assert route(c, answers, {}, RouteConfig()).route_reasons == (NO_EVIDENCE_REASON,)


def test_one_sure_agent_is_not_agreement():
    """The demo's case: only the visual agent saw anything, and it is sure: review, unless a
    calibration shows that agent alone reaches the target precision at that confidence."""
    answers = [answer("c", "visual", "surprise", p=0.94)[0], abstention("c", "text"), abstention("c", "acoustic")]
    config = RouteConfig(audit_share=0.0)
    c = build_consensus({"c": answers}, {}, EKMAN, config)["c"]
    assert c.label == "surprise" and c.route == Route.REVIEW
    assert c.route_reasons == ("only 1 informative agent backs the label (2 needed)",)
    two = answers + [answer("c", "gpt", "surprise", p=0.9)[0]]
    assert build_consensus({"c": two}, {}, EKMAN, config)["c"].route == Route.AUTO_ACCEPT
    assert build_consensus({"c": answers}, {}, EKMAN, RouteConfig(audit_share=0.0, min_agreeing_agents=1)
                           )["c"].route == Route.AUTO_ACCEPT


def test_low_coverage_shrinks_an_answer_towards_uniform():
    sure = answer("c", "visual", "surprise", p=0.94)[0]
    full = build_consensus({"c": [sure]}, {}, EKMAN, RouteConfig())["c"]
    glimpse = build_consensus({"c": [sure.model_copy(update={"coverage": 0.18})]}, {}, EKMAN, RouteConfig())["c"]
    assert full.confidence == pytest.approx(0.94)
    assert glimpse.label == "surprise" and glimpse.confidence == pytest.approx(0.18 * 0.94 + 0.82 / 7)
    assert glimpse.route == Route.REVIEW and any(r.startswith("confidence 0.29") for r in glimpse.route_reasons)


def simulated_answers(n: int, seed: int):
    """Clips with a known truth answered by a good "visual" agent (right 90%), a "text" agent
    that says neutral whatever it hears, and a "acoustic" agent right 50% of the time."""
    rng = np.random.default_rng(seed)
    labels = EKMAN.labels
    truth = rng.integers(0, len(labels), n)
    by_clip, true_label = {}, {}
    for i, t in enumerate(truth):
        clip = f"s{seed}-{i}"
        visual = t if rng.random() < 0.9 else rng.integers(0, len(labels))
        acoustic = t if rng.random() < 0.5 else rng.integers(0, len(labels))
        by_clip[clip] = [answer(clip, "visual", labels[visual], p=float(rng.uniform(0.5, 0.95)))[0],
                         answer(clip, "text", "neutral", p=0.6)[0],
                         answer(clip, "acoustic", labels[acoustic], p=float(rng.uniform(0.3, 0.7)))[0]]
        true_label[clip] = int(t)
    return by_clip, true_label


def test_calibration_from_labelled_clips_learns_who_to_trust_and_round_trips():
    by_clip, truth = simulated_answers(600, seed=3)
    table = tabulate(by_clip, {}, EKMAN)
    calibration = fit_workspace_calibration(table.matrix, table.soft, table.state == ABSTAINED, table.annotator_ids,
                                            table.labels, np.array([truth[c] for c in table.clip_ids]), 0.9,
                                            {"source": "simulated"})
    assert calibration.agents["visual"].accuracy == pytest.approx(0.9, abs=0.04)
    neutral = EKMAN.labels.index("neutral")
    text = np.array(calibration.agents["text"].confusion)
    assert np.allclose(text[:, neutral], text[0, neutral], atol=0.02)  # "neutral" from the text agent says nothing
    assert WorkspaceCalibration.from_json(json.loads(json.dumps(calibration.to_json()))) == calibration

    fresh, fresh_truth = simulated_answers(600, seed=4)  # held out
    plain = build_consensus(fresh, {}, EKMAN, RouteConfig(audit_share=0.0))
    calibrated = build_consensus(fresh, {}, EKMAN, RouteConfig(audit_share=0.0), calibration=calibration)

    def accuracy(consensus, accepted_only=False):
        rows = [(c.label == EKMAN.labels[fresh_truth[k]]) for k, c in consensus.items()
                if not accepted_only or c.route == Route.AUTO_ACCEPT]
        return np.mean(rows) if rows else float("nan"), len(rows)

    assert accuracy(calibrated)[0] > accuracy(plain)[0] + 0.1
    precision, accepted = accuracy(calibrated, accepted_only=True)
    assert accepted > 100 and precision >= 0.85
    reasons = [r for c in calibrated.values() for r in c.route_reasons]
    assert any("best calibrated precision" in r for r in reasons)
