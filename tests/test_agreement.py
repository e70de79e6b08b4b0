"""Agreement statistics against published values, CREMA-D's real vote tables, and the
workspace-level agreement report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from merforge.storage import agreement as ag

DATA = Path(__file__).parent / "data"
REFS = json.loads((DATA / "refs" / "reference_values.json").read_text())


# -- Cohen's kappa -----------------------------------------------------------------------


@pytest.mark.parametrize("case", REFS["cohen_kappa"][:2], ids=["unweighted", "linear"])
def test_cohen_kappa_sas_tables(case):
    kappa = ag.cohen_kappa_table(np.array(case["confusion_table"]), case["weights"])
    assert kappa == pytest.approx(case["kappa"], abs=5e-5)  # published to 4 decimals


@pytest.mark.parametrize("weights, key", [(None, "unweighted"), ("linear", "equal(linear on observed levels)"),
                                          ("quadratic", "squared(quadratic on observed levels)")])
def test_cohen_kappa_irr_anxiety(weights, key):
    case = REFS["cohen_kappa"][2]
    kappa = ag.cohen_kappa(case["rater2"], case["rater3"], weights=weights)
    assert kappa == pytest.approx(case[key]["kappa"], abs=5e-7)  # irr prints 7 significant digits


def test_cohen_kappa_weights_by_value_differ_from_weights_by_level():
    # the pitfall in the reference: with all six levels 1..6, weights go by value
    case = REFS["cohen_kappa"][2]
    assert ag.cohen_kappa(case["rater2"], case["rater3"], "linear", labels=range(1, 7)) == pytest.approx(0.126214, abs=5e-7)
    assert ag.cohen_kappa(case["rater2"], case["rater3"], "quadratic", labels=range(1, 7)) == pytest.approx(0.229798, abs=5e-7)


def test_cohen_kappa_matches_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, 200)
    b = np.where(rng.random(200) < 0.6, a, rng.integers(0, 5, 200))
    for weights in (None, "linear", "quadratic"):
        assert ag.cohen_kappa(a, b, weights) == pytest.approx(cohen_kappa_score(a, b, weights=weights), abs=1e-12)


def test_cohen_kappa_rejects_unequal_lengths():
    with pytest.raises(ag.AgreementError, match="labelled 2 and 3 units"):
        ag.cohen_kappa(["a", "b"], ["a", "b", "c"])


# -- Fleiss' kappa -----------------------------------------------------------------------


def test_fleiss_kappa_wikipedia():
    assert ag.fleiss_kappa(np.array(REFS["fleiss_kappa"][0]["counts_table"])) == pytest.approx(0.21, abs=5e-3)


def test_fleiss_kappa_fleiss_1971_diagnoses():
    case = REFS["fleiss_kappa"][1]
    counts, labels = ag.counts_from_ratings(case["ratings_30x6"])
    assert labels == [1, 2, 3, 4, 5]
    assert ag.fleiss_kappa(counts) == pytest.approx(case["kappa"], abs=5e-8)


# -- Krippendorff's alpha ----------------------------------------------------------------


def _reliability(case) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in case["coders_x_units"]], dtype=float)


KRIPPENDORFF_CASES = [(i, level) for i, case in enumerate(REFS["krippendorff_alpha"])
                      for level in ("nominal", "ordinal", "interval", "ratio") if level in case]


@pytest.mark.parametrize("index, level", KRIPPENDORFF_CASES)
def test_krippendorff_alpha_published(index, level):
    case = REFS["krippendorff_alpha"][index]
    published = case[level]
    decimals = len(str(published).split(".")[1])
    assert ag.krippendorff_alpha(_reliability(case), level) == pytest.approx(published, abs=0.5 * 10**-decimals)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_krippendorff_alpha_matches_krippendorff_package(level):
    import krippendorff

    rng = np.random.default_rng(7)
    cases = [_reliability(case) for case in REFS["krippendorff_alpha"]]
    truth = rng.integers(1, 6, 80)
    noisy = np.where(rng.random((5, 80)) < 0.7, truth, rng.integers(1, 6, (5, 80))).astype(float)
    noisy[rng.random((5, 80)) < 0.2] = np.nan
    for data in cases + [noisy]:
        expected = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
        assert ag.krippendorff_alpha(data, level) == pytest.approx(expected, abs=1e-12)


def test_krippendorff_alpha_perfect_and_empty():
    assert ag.krippendorff_alpha([[1, 2, 3], [1, 2, 3]]) == 1.0
    assert np.isnan(ag.krippendorff_alpha([[1, np.nan], [np.nan, 2]]))  # no unit has two values


# -- ICC and Spearman --------------------------------------------------------------------


def test_icc_shrout_fleiss_all_six_forms():
    case = REFS["icc"][0]
    forms = ag.icc(np.array(case["targets_x_judges"]))
    assert list(forms) == case["order"]
    for k, name in enumerate(case["order"]):
        form = forms[name]
        assert form["icc"] == pytest.approx(case["ICC"][k], abs=5e-3), name
        assert form["F"] == pytest.approx(case["F"][k], abs=0.05), name
        assert (form["df1"], form["df2"]) == (case["df1"][k], case["df2"][k])
        # ICC1/ICC1k: the table's 0.16472 is 4.9e-5 below the F(5, 18) tail at F = 1.7947
        # (0.164769, scipy and pingouin agree); the other p-values match to 5 decimals
        assert form["pval"] == pytest.approx(case["pval"][k], abs=1e-4 if name.startswith("ICC1") else 5e-6), name
        assert form["ci95"] == pytest.approx([case["ci95_lower"][k], case["ci95_upper"][k]], abs=5e-3), name
    # pingouin's McGraw & Wong names behind the Shrout & Fleiss ones
    assert forms["ICC2"]["pingouin"] == "ICC(A,1)" and forms["ICC3k"]["pingouin"] == "ICC(C,k)"


def test_icc_long_format_and_too_few_targets():
    case = REFS["icc"][0]
    wide = np.array(case["targets_x_judges"])
    long = pd.DataFrame([{"clip": t, "reviewer": f"r{j}", "score": wide[t, j]}
                         for t in range(wide.shape[0]) for j in range(wide.shape[1])])
    forms = ag.icc(long, targets="clip", raters="reviewer", ratings="score")
    assert forms["ICC3k"]["icc"] == pytest.approx(0.91, abs=5e-3)
    with pytest.raises(ag.AgreementError, match="at least 5 targets"):
        ag.icc(wide[:4])


def test_spearman_wikipedia():
    case = REFS["spearman"][0]
    rho, p = ag.spearman(case["x"], case["y"])
    n = len(case["x"])
    assert rho == pytest.approx(case["rho"], abs=1e-12)
    assert rho == pytest.approx(1 - 6 * case["sum_d2"] / (n * (n**2 - 1)), abs=1e-12)
    assert p == pytest.approx(0.627188, abs=5e-7)  # t approximation, see the reference's pitfall note


# -- MASI, bootstrap, intervals ------------------------------------------------------------


def test_masi_distance_passonneau():
    assert ag.masi_distance({"a"}, {"a"}) == 0.0
    assert ag.masi_distance({"a"}, {"a", "b"}) == pytest.approx(1 - 0.5 * 2 / 3)
    assert ag.masi_distance({"a", "b"}, {"a", "c"}) == pytest.approx(1 - (1 / 3) * (1 / 3))
    assert ag.masi_distance({"a"}, {"b"}) == 1.0
    assert ag.masi_distance(set(), set()) == 0.0


def test_masi_distance_nltk_docstring_example():
    # NLTK's masi_distance doctest: {1, 2} vs {1, 2, 3, 4} -> 0.665 (NLTK writes 2/3 as 0.67)
    assert ag.masi_distance({1, 2}, {1, 2, 3, 4}) == pytest.approx(1 - 0.5 * 2 / 3)
    assert ag.masi_distance({1, 2}, {1, 2, 3, 4}) == pytest.approx(0.665, abs=2e-3)


def test_bootstrap_ci_covers_point_estimate():
    case = REFS["cohen_kappa"][2]
    a, b = np.array(case["rater2"]), np.array(case["rater3"])
    low, high = ag.bootstrap_ci(lambda x, y: ag.cohen_kappa(x, y, "quadratic"), [a, b], n=500, seed=3)
    point = ag.cohen_kappa(a, b, "quadratic")
    assert low < point < high
    assert ag.bootstrap_ci(lambda x, y: ag.cohen_kappa(x, y), [a, b], n=200, seed=3) == \
        ag.bootstrap_ci(lambda x, y: ag.cohen_kappa(x, y), [a, b], n=200, seed=3)  # seeded: reproducible
    counts = np.array(REFS["fleiss_kappa"][0]["counts_table"])
    low, high = ag.bootstrap_ci(ag.fleiss_kappa, [counts], n=500, seed=0)
    assert low < ag.fleiss_kappa(counts) < high


def test_batched_statistics_match_one_at_a_time():
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 4, (50, 30)), rng.integers(0, 4, (50, 30))
    b[:25] = a[:25]
    for weights in (None, "linear", "quadratic"):
        rows = ag.cohen_kappa_rows(a, b, 4, weights)
        assert rows == pytest.approx([ag.cohen_kappa(x, y, weights, labels=range(4)) for x, y in zip(a, b)])
    x, y = rng.normal(size=(20, 15)).round(1), rng.normal(size=(20, 15)).round(1)
    assert ag.spearman_rows(x, y) == pytest.approx([ag.spearman(p, q)[0] for p, q in zip(x, y)])
    case = REFS["cohen_kappa"][2]
    codes = {v: k for k, v in enumerate(sorted(set(case["rater2"]) | set(case["rater3"])))}
    a_codes = np.array([codes[v] for v in case["rater2"]])
    b_codes = np.array([codes[v] for v in case["rater3"]])
    low, high = ag.bootstrap_ci(lambda x, y: ag.cohen_kappa_rows(x, y, len(codes), "quadratic"),
                                [a_codes, b_codes], n=500, seed=3, batched=True)
    assert low < case["squared(quadratic on observed levels)"]["kappa"] < high


def test_proportion_intervals_match_scipy():
    from scipy.stats import binomtest

    for k, n in [(0, 10), (7, 10), (81, 263), (20, 20)]:
        wilson = binomtest(k, n).proportion_ci(method="wilson")
        exact = binomtest(k, n).proportion_ci(method="exact")
        assert ag.wilson_interval(k, n) == pytest.approx((wilson.low, wilson.high), abs=1e-9)
        assert ag.clopper_pearson_interval(k, n) == pytest.approx((exact.low, exact.high), abs=1e-9)
    assert all(np.isnan(ag.wilson_interval(0, 0)))


def test_confusion_matrix_rows_first_rater():
    table = ag.confusion_matrix(["a", "a", "b"], ["a", "b", "b"], labels=["a", "b"])
    assert table.tolist() == [[1, 1], [0, 1]]


# -- CREMA-D: agreement per presentation mode ---------------------------------------------

CREMA_D = DATA / "crema-d" / "tabulatedVotes.csv"
MODES = {"1": "voice", "2": "face", "3": "audio-visual"}  # first digit of the row id = queryType (README)
EMOTIONS = {"ANG": "A", "DIS": "D", "FEA": "F", "HAP": "H", "NEU": "N", "SAD": "S"}


@pytest.fixture(scope="module")
def crema_d_per_mode() -> dict[str, dict[str, float]]:
    votes = pd.read_csv(CREMA_D)
    votes["mode"] = votes.iloc[:, 0].astype(str).str[0].map(MODES)
    votes["intended"] = votes["fileName"].str.split("_").str[2].map(EMOTIONS)
    result = {}
    for mode, table in votes.groupby("mode"):
        counts = table[list("ADFHNS")].to_numpy(float)
        intended = np.array(["ADFHNS".index(e) for e in table["intended"]])
        result[mode] = {
            "clips": len(table),
            "fleiss_kappa": ag.fleiss_kappa(counts),
            "recognition": counts[np.arange(len(counts)), intended].sum() / counts.sum(),
            "majority_matches_intended": float((table["emoVote"] == table["intended"]).mean()),
        }
    print("\nCREMA-D agreement per presentation mode:")
    for mode, numbers in result.items():
        print(f"  {mode:13s} " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in numbers.items()))
    return result


def test_crema_d_every_clip_in_every_mode(crema_d_per_mode):
    assert {mode: n["clips"] for mode, n in crema_d_per_mode.items()} == {
        "voice": 7442, "face": 7442, "audio-visual": 7442}


def test_crema_d_agreement_orders_audio_visual_face_voice(crema_d_per_mode):
    m = crema_d_per_mode
    for statistic in ("fleiss_kappa", "recognition", "majority_matches_intended"):
        assert m["audio-visual"][statistic] > m["face"][statistic] > m["voice"][statistic], statistic


def test_crema_d_recognition_near_published_rates(crema_d_per_mode):
    # Cao et al. (2014), CREMA-D paper: raters recognised the intended emotion in 40.9% (voice),
    # 58.2% (face) and 63.6% (audio-visual) of responses. The tabulated votes here (repeats and
    # practice removed) land within 1.5 points of those.
    published = {"voice": 0.409, "face": 0.582, "audio-visual": 0.636}
    for mode, rate in published.items():
        assert crema_d_per_mode[mode]["recognition"] == pytest.approx(rate, abs=0.015), mode


def test_crema_d_fleiss_kappa_values(crema_d_per_mode):
    # measured on the real tables (variable raters per clip); pinned so regressions show
    expected = {"voice": 0.2778, "face": 0.4559, "audio-visual": 0.4944}
    for mode, value in expected.items():
        assert crema_d_per_mode[mode]["fleiss_kappa"] == pytest.approx(value, abs=5e-5), mode


# -- the workspace report ----------------------------------------------------------------


def _set_bootstrap(workspace, n: int) -> None:
    report = workspace.config.report.model_copy(update={"bootstrap": n})
    workspace.config = workspace.config.model_copy(update={"report": report})


def _seed_workspace(workspace, n_clips: int = 24):
    """Clips with three agents' labels, a consensus each, and reviews: single, audit and
    double-annotated, written through the Store and ReviewStore APIs."""
    from merforge.storage.records import (Annotation, Clip, ClipOrigin, Consensus, Provenance, Review,
                                          ReviewDecision, Route, Source, SourceStatus, StageState,
                                          StageStatus, annotation_id)
    from merforge.storage.reviews import ReviewStore

    store = workspace.store
    store.upsert_source(Source(id="src", path="/media/src.mp4", size_bytes=1, mtime=0.0, status=SourceStatus.OK))
    clips = [Clip(id=f"clip{i:03d}", source_id="src", start=float(i), end=i + 1.0, origin=ClipOrigin.SHOT,
                  provenance=Provenance(backend="test")) for i in range(n_clips)]
    store.replace_clips("src", clips, StageStatus(item_id="src", stage="sample", state=StageState.DONE))
    labels = ["anger", "happiness", "neutral", "sadness"]
    rng = np.random.default_rng(0)
    reviews = ReviewStore(store, workspace.config.review)
    for i, clip in enumerate(clips):
        truth = labels[i % 4]
        answers = {"agent-a": truth, "agent-b": truth,
                   "agent-c": truth if i % 3 else labels[(i + 1) % 4]}  # agent-c errs on every third clip
        store.save_annotations(clip.id, [
            Annotation(id=annotation_id(clip.id, agent, "v1"), clip_id=clip.id, annotator_id=agent, label=label,
                       labels=(label,) if i % 5 else (label, "neutral"))
            for agent, label in answers.items()], StageStatus(item_id=clip.id, stage="annotate", state=StageState.DONE))
        route = Route.AUDIT if i % 4 == 0 else Route.REVIEW
        store.save_judgement(clip.id, [], Consensus(clip_id=clip.id, label=truth, route=route),
                             StageStatus(item_id=clip.id, stage="judge", state=StageState.DONE))
        base = rng.uniform(0.1, 0.9)
        for reviewer, noise in (("alice", 0.0), ("bob", rng.normal(0, 0.02))):
            if reviewer == "bob" and i % 2:
                continue  # bob double-annotates every second clip
            wrong = reviewer == "bob" and i % 6 == 0  # bob disagrees on some
            label = labels[(i + 2) % 4] if wrong else truth
            reviews.record_import(Review(
                id="", clip_id=clip.id, reviewer=reviewer,
                decision=ReviewDecision.CORRECT if wrong else ReviewDecision.ACCEPT, label=label,
                intensity=base + noise, valence=2 * base - 1 + noise, arousal=rng.uniform(-1, 1), origin="import"))


def test_agreement_report_on_synthetic_workspace(workspace, tmp_path):
    from merforge.storage.report import agreement_report, render_markdown, write_report

    _set_bootstrap(workspace, 200)
    _seed_workspace(workspace)
    report = agreement_report(workspace)

    agents = report["agents"]
    assert agents["status"] == "ok" and agents["agents"] == ["agent-a", "agent-b", "agent-c"]
    assert agents["kappa_matrix"][0][1] == 1.0  # a and b always agree
    assert agents["kappa_matrix"][0][2] == pytest.approx(
        ag.cohen_kappa(*_agent_labels(), labels=agents["labels"]))
    assert agents["multi_label"] is True and 0 < agents["masi_mean"] < 1
    low, high = agents["fleiss_kappa"]["ci95"]
    assert low <= agents["fleiss_kappa"]["value"] <= high

    pipeline = report["pipeline_vs_reviewers"]
    assert pipeline["status"] == "ok" and pipeline["n"] == 36
    audit = pipeline["audit"]
    assert audit["n"] == 6 and audit["precision"] == 1.0  # alice accepts every audited clip first
    assert audit["wilson95"][0] < 1.0 and audit["wilson95"][1] == 1.0

    reviewers = report["reviewer_vs_reviewer"]
    assert reviewers["status"] == "ok" and reviewers["n"] == 12
    assert reviewers["pairs"][0]["pair"] == ["alice", "bob"]
    intensity = reviewers["continuous"]["intensity"]
    assert intensity["icc2_1"]["icc"] > 0.9 and intensity["icc3_k"]["icc"] > 0.9  # bob = alice + small noise
    assert intensity["spearman"]["rho"] > 0.9
    assert reviewers["continuous"]["arousal"]["icc2_1"]["icc"] < 0.9  # independent draws

    failing = {(c["section"], c["subject"], c["statistic"]) for c in report["failures"]}
    assert ("agents", "agent-a vs agent-c", "Cohen's kappa") in failing
    assert ("reviewer_vs_reviewer", "alice vs bob", "Cohen's kappa") in failing
    assert ("reviewer_vs_reviewer", "arousal", "ICC(2,1)") in failing
    assert ("agents", "agent-a vs agent-b", "Cohen's kappa") not in failing
    assert any(c["subject"].startswith("class ") for c in report["failures"])  # per-class verdicts named
    assert report["passed"] is False

    json_path, html_path = write_report(workspace, tmp_path / "out")
    assert json.loads(json_path.read_text())["failures"] == json.loads(json.dumps(report["failures"]))
    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>") and 'id="pass-fail"' in page and "<svg" in page
    assert "agent-a vs agent-c" in page and "FAIL" in page
    assert "# Agreement report: FAIL" in render_markdown(report)


def _agent_labels():
    labels = ["anger", "happiness", "neutral", "sadness"]
    a = [labels[i % 4] for i in range(24)]
    c = [labels[i % 4] if i % 3 else labels[(i + 1) % 4] for i in range(24)]
    return a, c


def test_agreement_report_with_no_data_says_so(workspace, tmp_path):
    from merforge.storage.report import render_html, render_markdown, write_report

    json_path, html_path = write_report(workspace, tmp_path / "empty")
    report = json.loads(json_path.read_text())
    assert report["agents"]["status"] == "insufficient"
    assert report["reviewer_vs_reviewer"]["message"] == "no double-annotated reviews yet"
    assert report["pipeline_vs_reviewers"]["audit"]["status"] == "insufficient"
    assert report["passed"] is False and report["failures"] == []
    assert "no double-annotated reviews yet" in html_path.read_text()
    assert "no double-annotated reviews yet" in render_markdown(report)
    assert "<script" not in render_html(report)


def test_render_html_escapes_labels(workspace):
    from merforge.storage.report import agreement_report, render_html
    from merforge.storage.records import (Annotation, Clip, ClipOrigin, Provenance, Source, SourceStatus,
                                          StageState, StageStatus)

    store = workspace.store
    store.upsert_source(Source(id="src", path="/m.mp4", size_bytes=1, mtime=0.0, status=SourceStatus.OK))
    clip = Clip(id="c1", source_id="src", start=0, end=1, origin=ClipOrigin.SHOT, provenance=Provenance(backend="t"))
    store.replace_clips("src", [clip], StageStatus(item_id="src", stage="sample", state=StageState.DONE))
    store.save_annotations("c1", [Annotation(id=f"a{k}", clip_id="c1", annotator_id=f"<b>agent{k}</b>",
                                             label="<script>x</script>") for k in range(2)],
                           StageStatus(item_id="c1", stage="annotate", state=StageState.DONE))
    _set_bootstrap(workspace, 10)
    page = render_html(agreement_report(workspace))
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;agent0" in page


def test_report_command_writes_files(workspace, tmp_path):
    import typer
    from typer.testing import CliRunner

    from merforge.flows.report_cli import report_command

    _seed_workspace(workspace)
    (workspace.root / "merforge.toml").write_text("[report]\nbootstrap = 50\n")
    app = typer.Typer()
    app.command(name="report")(report_command)
    app.command(name="noop")(lambda: None)  # two commands, so `report` is addressed by name
    result = CliRunner().invoke(app, ["report", "--workspace", str(workspace.root), "--output", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "agreement FAIL" in result.output and "agent-a vs agent-c" in result.output
    assert json.loads((tmp_path / "r" / "agreement_report.json").read_text())["bootstrap"]["n"] == 50
    assert (tmp_path / "r" / "agreement_report.html").is_file()
    strict = CliRunner().invoke(app, ["report", "-w", str(workspace.root), "-o", str(tmp_path / "s"), "--strict"])
    assert strict.exit_code == 2


@pytest.mark.prefect
def test_report_flow_writes_files_and_artifact(workspace):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.testing.utilities import prefect_test_harness

    from merforge.flows.report_flow import report_flow

    _seed_workspace(workspace)
    (workspace.root / "merforge.toml").write_text("[report]\nbootstrap = 20\n")
    with prefect_test_harness(server_startup_timeout=180):
        result = report_flow(str(workspace.root))
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["agreement-report"])))
    assert Path(result["json"]) == workspace.root / "reports" / "agreement_report.json"
    assert Path(result["html"]).is_file() and result["report"]["passed"] is False
    assert artifacts and "# Agreement report: FAIL" in artifacts[0].data
