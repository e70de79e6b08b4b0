"""Agreement report (`merforge report`): how far annotator agents, the pipeline and the
reviewers agree, with confidence intervals and pass/fail against the configured thresholds.

Three comparisons, each a section of one JSON-serialisable dict:

- agents: annotator agents with each other (pairwise Cohen's kappa matrix, Fleiss' kappa,
  Krippendorff's alpha, mean MASI distance when the label space is multi-label,
  one-vs-rest Fleiss' kappa per class);
- pipeline_vs_reviewers: the consensus label against the reviewers' final labels (kappa,
  per-class kappa, confusion matrix) and the precision of auto-accepted labels on the audit
  sample (Wilson and Clopper-Pearson intervals);
- reviewer_vs_reviewer: the first two decisions on double-annotated clips (kappa overall
  and per reviewer pair, per-class kappa; ICC(2,1), ICC(3,k) and Spearman's rho for
  intensity, valence and arousal).

Statistics come from `merforge.storage.agreement`; here only data is gathered and judged.
A section with too little data carries `status: "insufficient"` and a message instead.
"""

from __future__ import annotations

import html
import json
import math
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import sqlalchemy as sa

from merforge.perf import gc_paused
from merforge.storage import agreement as ag
from merforge.storage import tables
from merforge.storage.records import AnnotationStatus, ReviewDecision, Route
from merforge.storage.reviews import ReviewStore
from merforge.storage.workspace import Workspace, write_atomic

REPORT_JSON = "agreement_report.json"
REPORT_HTML = "agreement_report.html"
REJECTED = "(rejected)"  # a reviewer's REJECT, as a category in reviewer-vs-reviewer agreement
DIMENSIONS = ("intensity", "valence", "arousal")


# -- gathering ---------------------------------------------------------------------------


def agreement_report(workspace: Workspace) -> dict[str, Any]:
    """The whole report for a workspace, as plain JSON types (NaN written as null).

    `checks` lists every verdict (value > threshold, strictly; `passed` None where the
    statistic is undefined, e.g. kappa when everything is one class); `failures` the checks
    that failed, naming pairs ("agent-a vs agent-c") and classes ("class anger");
    `passed` is True only when there is at least one check and every check passed.
    Bootstrap resamples and seed come from `report` in merforge.toml.
    """
    config = workspace.config.report
    store = workspace.store
    with gc_paused():
        annotations = _ok_annotations(store)
        consensuses = _consensus_rows(store)
    decided = [r for r in ReviewStore(store, workspace.config.review).reviews()
               if r.decision in (ReviewDecision.ACCEPT, ReviewDecision.CORRECT, ReviewDecision.REJECT)]
    boot = {"n": config.bootstrap, "seed": config.seed}
    checks: list[dict[str, Any]] = []
    report = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "workspace": str(workspace.root),
        "thresholds": {"kappa": config.kappa_threshold, "icc": config.icc_threshold},
        "bootstrap": boot,
        "counts": {"annotations": len(annotations), "consensus": len(consensuses), "reviews": len(decided)},
        "agents": _agents_section(annotations, boot, config.kappa_threshold, checks),
        "pipeline_vs_reviewers": _pipeline_section(decided, consensuses, boot, config.kappa_threshold, checks),
        "reviewer_vs_reviewer": _reviewer_section(decided, boot, config.kappa_threshold, config.icc_threshold, checks),
        "answers_per_agent": store.annotation_counts(),
        "calibration": _calibration_section(workspace),
    }
    failures = [c for c in checks if c["passed"] is False]
    report["checks"] = checks
    report["failures"] = failures
    report["passed"] = bool(checks) and not failures and all(c["passed"] is not None for c in checks)
    return _json_safe(report)


def _calibration_section(workspace: Workspace) -> dict[str, Any]:
    """The workspace calibration (`merforge calibrate`): per agent accuracy, ECE and the
    reliability diagram on the labelled clips, and the consensus auto-accept threshold with
    the 95% interval of its precision."""
    from merforge.agents.calibrate_stage import CALIBRATION_FILE, load_calibration
    from merforge.agents.calibration import CalibrationError

    try:
        calibration = load_calibration(workspace)
    except CalibrationError as error:
        return _insufficient(str(error))
    if calibration is None:
        return _insufficient(f"no calibration yet: run `merforge calibrate --labels FILE` (or review clips) to "
                             f"measure each agent; it is saved as {CALIBRATION_FILE}")
    data = calibration.to_json()
    return {"status": "ok", "target_precision": data["target_precision"], "provenance": data["provenance"],
            "agents": {name: {k: a[k] for k in ("n", "abstained", "accuracy", "ece_before", "ece_after", "curve")}
                       for name, a in data["agents"].items()},
            "consensus": None if data["consensus"] is None else
            {k: data["consensus"][k] for k in ("n", "accuracy", "ece_before", "ece_after", "threshold",
                                               "threshold_precision", "threshold_interval", "threshold_coverage",
                                               "curve")}}


def _check(checks: list, section: str, subject: str, statistic: str, value: float, threshold: float,
           n: int) -> None:
    """One pass/fail line: passes when value > threshold; undefined values pass nothing."""
    defined = value is not None and not math.isnan(value)
    checks.append({"section": section, "subject": subject, "statistic": statistic, "value": value,
                   "threshold": threshold, "n": n, "passed": (value > threshold) if defined else None})


def _insufficient(message: str) -> dict[str, Any]:
    return {"status": "insufficient", "message": message}


def _agents_section(annotations, boot, kappa_threshold, checks) -> dict[str, Any]:
    by_clip: dict[str, dict[str, Any]] = defaultdict(dict)
    for a in annotations:
        by_clip[a.clip_id][a.annotator_id] = a
    agents = sorted({a.annotator_id for a in annotations})
    shared = [clip for clip, answers in by_clip.items() if len(answers) >= 2]
    if len(agents) < 2 or not shared:
        return _insufficient("fewer than two annotator agents labelled the same clip yet")
    labels = ag.category_labels(a.label for a in annotations)
    section: dict[str, Any] = {"status": "ok", "agents": agents, "labels": labels, "clips": len(shared)}

    matrix = [[1.0 if i == j else None for j in agents] for i in agents]
    pairs = []
    for i, first in enumerate(agents):
        for j in range(i + 1, len(agents)):
            second = agents[j]
            both = [c for c in shared if first in by_clip[c] and second in by_clip[c]]
            if not both:
                continue
            a = np.array([by_clip[c][first].label for c in both], dtype=object)
            b = np.array([by_clip[c][second].label for c in both], dtype=object)
            kappa = ag.cohen_kappa(a, b, labels=labels)
            matrix[i][j] = matrix[j][i] = kappa
            pair = {"pair": [first, second], "n": len(both), "kappa": kappa,
                    "ci95": _kappa_ci(a, b, labels, boot),
                    "confusion": ag.confusion_matrix(a, b, labels).tolist()}
            masi = [ag.masi_distance(by_clip[c][first].labels or (by_clip[c][first].label,),
                                     by_clip[c][second].labels or (by_clip[c][second].label,)) for c in both]
            pair["masi_mean"] = float(np.mean(masi))
            pairs.append(pair)
            _check(checks, "agents", f"{first} vs {second}", "Cohen's kappa", kappa, kappa_threshold, len(both))
    section["kappa_matrix"] = matrix
    section["pairs"] = pairs

    counts, _ = ag.counts_from_ratings([[by_clip[c][a].label for a in by_clip[c]] for c in shared], labels)
    fleiss = ag.fleiss_kappa(counts)
    section["fleiss_kappa"] = {"value": fleiss, "ci95": _fleiss_ci(counts, boot)}
    _check(checks, "agents", "all agents", "Fleiss' kappa", fleiss, kappa_threshold, len(shared))

    codes = {label: k for k, label in enumerate(labels)}
    reliability = np.array([[codes[by_clip[c][a].label] if a in by_clip[c] else np.nan for c in shared]
                            for a in agents], dtype=float)
    alpha = ag.krippendorff_alpha(reliability, "nominal")
    section["krippendorff_alpha"] = {
        "level": "nominal", "value": alpha,
        "ci95": _nominal_alpha_ci(reliability, boot)}

    multi = any(len(a.labels) > 1 for a in annotations)
    section["multi_label"] = multi
    if multi:
        section["masi_mean"] = float(np.mean([p["masi_mean"] for p in pairs])) if pairs else None

    per_class = {}
    for k, label in enumerate(labels):
        binary = np.stack([counts[:, k], counts.sum(axis=1) - counts[:, k]], axis=1)
        per_class[label] = ag.fleiss_kappa(binary)
        _check(checks, "agents", f"class {label}", "one-vs-rest Fleiss' kappa", per_class[label],
               kappa_threshold, len(shared))
    section["per_class_kappa"] = per_class
    return section


def _pipeline_section(decided, consensuses, boot, kappa_threshold, checks) -> dict[str, Any]:
    labelled = [r for r in decided if r.decision != ReviewDecision.REJECT and r.label and r.pipeline_label]
    section: dict[str, Any] = {}
    if not labelled:
        section.update(_insufficient("no reviewed clips with both a pipeline label and a reviewer label yet"))
    else:
        pipeline = np.array([r.pipeline_label for r in labelled], dtype=object)
        reviewer = np.array([r.label for r in labelled], dtype=object)
        labels = ag.category_labels(pipeline, reviewer)
        kappa = ag.cohen_kappa(pipeline, reviewer, labels=labels)
        per_class = ag.one_vs_rest_kappa(pipeline, reviewer, labels)
        by_reviewer = {}
        for name in sorted({r.reviewer for r in labelled}):
            mine = [r for r in labelled if r.reviewer == name]
            by_reviewer[name] = {"n": len(mine), "kappa": ag.cohen_kappa([r.pipeline_label for r in mine],
                                                                         [r.label for r in mine], labels=labels)}
        section.update({
            "status": "ok", "n": len(labelled), "labels": labels, "kappa": kappa,
            "ci95": _kappa_ci(pipeline, reviewer, labels, boot),
            "accuracy": float(np.mean(pipeline == reviewer)), "per_class_kappa": per_class,
            "by_reviewer": by_reviewer, "confusion": ag.confusion_matrix(pipeline, reviewer, labels).tolist()})
        _check(checks, "pipeline_vs_reviewers", "pipeline vs reviewers", "Cohen's kappa", kappa, kappa_threshold,
               len(labelled))
        for label, value in per_class.items():
            _check(checks, "pipeline_vs_reviewers", f"class {label}", "one-vs-rest Cohen's kappa", value,
                   kappa_threshold, len(labelled))

    # Precision of auto-accepted labels: the first decision on each audit clip. A REJECT
    # counts against it (an unusable clip should not have been auto-accepted).
    first: dict[str, Any] = {}
    for r in decided:
        consensus = consensuses.get(r.clip_id)
        if consensus is not None and consensus.route == Route.AUDIT:
            first.setdefault(r.clip_id, r)
    if not first:
        section["audit"] = _insufficient("no audited auto-accepted clips reviewed yet")
    else:
        correct = sum(r.decision == ReviewDecision.ACCEPT or
                      (r.decision == ReviewDecision.CORRECT and r.label == consensuses[r.clip_id].label)
                      for r in first.values())
        section["audit"] = {"status": "ok", "n": len(first), "correct": int(correct),
                            "precision": correct / len(first),
                            "wilson95": ag.wilson_interval(correct, len(first)),
                            "clopper_pearson95": ag.clopper_pearson_interval(correct, len(first))}
    return section


def _reviewer_section(decided, boot, kappa_threshold, icc_threshold, checks) -> dict[str, Any]:
    by_clip: dict[str, list] = defaultdict(list)
    for r in decided:  # oldest first
        if all(other.reviewer != r.reviewer for other in by_clip[r.clip_id]):
            by_clip[r.clip_id].append(r)
    doubles = [(rs[0], rs[1]) for rs in by_clip.values() if len(rs) >= 2]
    if not doubles:
        return _insufficient("no double-annotated reviews yet")

    def label(r):
        return REJECTED if r.decision == ReviewDecision.REJECT else r.label

    a = np.array([label(x) for x, _ in doubles], dtype=object)
    b = np.array([label(y) for _, y in doubles], dtype=object)
    labels = ag.category_labels(a, b)
    kappa = ag.cohen_kappa(a, b, labels=labels)
    section: dict[str, Any] = {
        "status": "ok", "n": len(doubles), "labels": labels, "kappa": kappa,
        "ci95": _kappa_ci(a, b, labels, boot),
        "confusion": ag.confusion_matrix(a, b, labels).tolist(),
        "per_class_kappa": ag.one_vs_rest_kappa(a, b, labels)}
    _check(checks, "reviewer_vs_reviewer", "first vs second reviewer", "Cohen's kappa", kappa, kappa_threshold,
           len(doubles))
    pairs: dict[tuple[str, str], list] = defaultdict(list)
    for x, y in doubles:
        pairs[tuple(sorted((x.reviewer, y.reviewer)))].append((label(x), label(y)))
    section["pairs"] = []
    for (first, second), values in sorted(pairs.items()):
        value = ag.cohen_kappa([v[0] for v in values], [v[1] for v in values], labels=labels)
        section["pairs"].append({"pair": [first, second], "n": len(values), "kappa": value})
        _check(checks, "reviewer_vs_reviewer", f"{first} vs {second}", "Cohen's kappa", value, kappa_threshold,
               len(values))
    for label_name, value in section["per_class_kappa"].items():
        _check(checks, "reviewer_vs_reviewer", f"class {label_name}", "one-vs-rest Cohen's kappa", value,
               kappa_threshold, len(doubles))

    section["continuous"] = {}
    for dimension in DIMENSIONS:
        values = np.array([(getattr(x, dimension), getattr(y, dimension)) for x, y in doubles
                           if getattr(x, dimension) is not None and getattr(y, dimension) is not None], dtype=float)
        if len(values) < 5:
            section["continuous"][dimension] = _insufficient(
                f"{len(values)} double-annotated clips rate {dimension} twice; ICC needs at least 5")
            continue
        entry: dict[str, Any] = {"status": "ok", "n": len(values)}
        try:
            forms = ag.icc(values)
        except ag.AgreementError as error:
            entry.update(_insufficient(str(error)))
        else:
            entry["icc2_1"] = {k: forms["ICC2"][k] for k in ("icc", "ci95", "pval")}
            entry["icc3_k"] = {k: forms["ICC3k"][k] for k in ("icc", "ci95", "pval")}
            _check(checks, "reviewer_vs_reviewer", dimension, "ICC(2,1)", forms["ICC2"]["icc"], icc_threshold,
                   len(values))
            _check(checks, "reviewer_vs_reviewer", dimension, "ICC(3,k)", forms["ICC3k"]["icc"], icc_threshold,
                   len(values))
        rho, p = ag.spearman(values[:, 0], values[:, 1])
        entry["spearman"] = {"rho": rho, "p": p,
                             "ci95": ag.bootstrap_ci(ag.spearman_rows, [values[:, 0], values[:, 1]], batched=True,
                                                     **boot)}
        section["continuous"][dimension] = entry
    return section


class _Answer(NamedTuple):
    """The parts of an OK annotation the report reads (a full pydantic record is ~50x slower to build)."""

    clip_id: str
    annotator_id: str
    label: str
    labels: tuple[str, ...]


class _ConsensusRow(NamedTuple):
    clip_id: str
    route: Route
    label: str | None


def _ok_annotations(store: Any) -> list[_Answer]:
    """OK annotations with a label, ordered like Store.annotations() (clip, annotator), from the real
    columns plus the `labels` list pulled out of the JSON record by the database."""
    table = tables.annotations
    sqlite = store.engine.dialect.name == "sqlite"
    labels_column = (sa.type_coerce(sa.func.json_extract(table.c.record, "$.labels"), sa.Text) if sqlite
                     else table.c.record["labels"])
    query = (sa.select(table.c.clip_id, table.c.annotator_id, table.c.label, labels_column)
             .where(table.c.status == AnnotationStatus.OK.value)
             .order_by(table.c.clip_id, table.c.annotator_id))
    parsed: dict[Any, tuple[str, ...]] = {}
    out: list[_Answer] = []
    append = out.append
    with store.engine.connect() as connection:
        for clip_id, annotator_id, label, raw in connection.execute(query):
            if not label:
                continue
            if isinstance(raw, (list, tuple)):
                labels = tuple(raw)
            elif raw is None:
                labels = ()
            else:
                labels = parsed.get(raw)
                if labels is None:
                    labels = parsed[raw] = tuple(json.loads(raw)) if isinstance(raw, str) else tuple(raw)
            append(_Answer(clip_id, annotator_id, label, labels))
    return out


def _consensus_rows(store: Any) -> dict[str, _ConsensusRow]:
    """clip id -> (route, label) of every consensus, from the real columns."""
    table = tables.consensus
    query = sa.select(table.c.clip_id, table.c.route, table.c.label).order_by(table.c.priority.desc(),
                                                                                table.c.clip_id)
    routes = {r.value: r for r in Route}
    with store.engine.connect() as connection:
        return {clip_id: _ConsensusRow(clip_id, routes.get(route) or Route(route), label)
                for clip_id, route, label in connection.execute(query)}


# -- fast bootstraps ---------------------------------------------------------------------
# Same resamples (bootstrap_ci with the same seed, units and chunks) and bit-for-bit the same
# estimates as calling fleiss_kappa / krippendorff_alpha on every resample: the parts that are
# sums of small integers (or of halves) are exact in any order and are computed from per-row
# resample weights over the distinct unit patterns; the one inexact sum (Fleiss' mean P_i) is
# taken over the resampled rows in the same order as the original. Anything outside those
# conditions falls back to the original per-resample statistic.


def _pattern_weights(draws: np.ndarray, pattern_of_unit: np.ndarray, patterns: int) -> np.ndarray:
    """(rows, patterns) float counts: how often each unit pattern is drawn in each resample."""
    rows = draws.shape[0]
    flat = (np.arange(rows, dtype=np.int64)[:, None] * patterns + pattern_of_unit[draws]).ravel()
    return np.bincount(flat, minlength=rows * patterns).reshape(rows, patterns).astype(float)


def _fleiss_ci(counts: np.ndarray, boot: dict) -> tuple[float, float]:
    counts = np.asarray(counts, dtype=float)
    n_i = counts.sum(axis=1) if counts.ndim == 2 else None
    if (n_i is None or len(counts) == 0 or not np.all(n_i >= 2) or np.any(counts != np.round(counts))
            or counts.sum() >= 2**52):
        return ag.bootstrap_ci(ag.fleiss_kappa, [counts], **boot)
    p_i = (counts * (counts - 1)).sum(axis=1) / (n_i * (n_i - 1))
    unique, pattern_of_unit = np.unique(counts, axis=0, return_inverse=True)
    pattern_of_unit = pattern_of_unit.reshape(-1)
    pattern_n = unique.sum(axis=1)

    def statistic(draws: np.ndarray) -> np.ndarray:
        weights = _pattern_weights(draws, pattern_of_unit, len(unique))
        column_sums = weights @ unique  # exact: integers
        totals = weights @ pattern_n  # exact: integers
        p_bar = p_i[draws].mean(axis=1)
        out = np.empty(len(draws))
        for r in range(len(draws)):
            p_j = column_sums[r] / totals[r]
            p_e = float((p_j**2).sum())
            out[r] = float("nan") if p_e >= 1 else float((p_bar[r] - p_e) / (1 - p_e))
        return out

    return ag.bootstrap_ci(statistic, [np.arange(len(counts))], batched=True, **boot)


def _nominal_alpha_ci(reliability: np.ndarray, boot: dict) -> tuple[float, float]:
    """Bootstrap CI of nominal Krippendorff's alpha over units (columns of raters x units)."""
    data = np.asarray(reliability, dtype=float)

    def fallback() -> tuple[float, float]:
        return ag.bootstrap_ci(lambda units: ag.krippendorff_alpha(units.T, "nominal"), [data.T], **boot)

    if data.ndim != 2 or data.shape[1] == 0:
        return fallback()
    values = np.unique(data[~np.isnan(data)])
    if len(values) == 0:
        return fallback()
    per_unit = (data.T[:, :, None] == values[None, None, :]).sum(axis=1).astype(float)
    m_u = per_unit.sum(axis=1)
    # exactness: 1 / (m_u - 1) must be a power of two so every coincidence sum is exact
    if not np.all(np.isin(m_u, (2.0, 3.0, 5.0, 9.0))) or per_unit.sum() * 8 >= 2**52:
        return fallback()
    unique, pattern_of_unit = np.unique(per_unit, axis=0, return_inverse=True)
    pattern_of_unit = pattern_of_unit.reshape(-1)
    scaled = unique / (unique.sum(axis=1) - 1)[:, None]
    products = (scaled[:, :, None] * unique[:, None, :]).reshape(len(unique), -1)
    v = len(values)

    def statistic(draws: np.ndarray) -> np.ndarray:
        weights = _pattern_weights(draws, pattern_of_unit, len(unique))
        present_all = (weights @ unique) > 0
        coincidence_all = (weights @ products).reshape(len(draws), v, v)  # exact: halves
        diagonal_all = weights @ scaled
        out = np.empty(len(draws))
        for r in range(len(draws)):
            present = present_all[r]
            coincidences = coincidence_all[r]
            diagonal = diagonal_all[r]
            if not present.all():
                coincidences = coincidences[np.ix_(present, present)]
                diagonal = diagonal[present]
            coincidences = coincidences - np.diag(diagonal)
            n_c = coincidences.sum(axis=1)
            n = n_c.sum()
            k = len(n_c)
            c, kk = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
            delta = (c != kk).astype(float)
            expected = (np.outer(n_c, n_c) * delta).sum()
            out[r] = float("nan") if expected == 0 else float(1.0 - (n - 1) * (coincidences * delta).sum() / expected)
        return out

    return ag.bootstrap_ci(statistic, [np.arange(data.shape[1])], batched=True, **boot)


def _kappa_ci(a: np.ndarray, b: np.ndarray, labels: list, boot: dict) -> tuple[float, float]:
    """Bootstrap CI of Cohen's kappa over units, with labels coded once and all resamples in one pass."""
    codes = {label: k for k, label in enumerate(labels)}
    a_codes = np.array([codes[x] for x in a], dtype=np.int64)
    b_codes = np.array([codes[y] for y in b], dtype=np.int64)
    return ag.bootstrap_ci(lambda x, y: ag.cohen_kappa_rows(x, y, len(labels)), [a_codes, b_codes], batched=True,
                           **boot)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    return value


# -- rendering ---------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"[{_fmt(value[0], digits)}, {_fmt(value[1], digits)}]"
    return str(value)


def _verdict(check: dict) -> str:
    return {True: "pass", False: "FAIL", None: "undefined"}[check["passed"]]


def _md(text: Any) -> str:
    """Text for a Markdown table cell: pipes and angle brackets escaped."""
    return html.escape(str(text)).replace("|", "\\|")


def render_markdown(report: dict[str, Any]) -> str:
    """Short Markdown summary (for the Prefect artifact): verdict, key numbers, failures."""
    t = report["thresholds"]
    lines = [f"# Agreement report: {'PASS' if report['passed'] else 'FAIL'}", "",
             f"Thresholds: kappa > {t['kappa']}, ICC > {t['icc']}; bootstrap {report['bootstrap']['n']} resamples.", ""]
    agents = report["agents"]
    lines.append("## Annotator agents")
    if agents.get("status") == "ok":
        lines += [f"- Fleiss' kappa {_fmt(agents['fleiss_kappa']['value'])} CI95 {_fmt(agents['fleiss_kappa']['ci95'])}",
                  f"- Krippendorff's alpha (nominal) {_fmt(agents['krippendorff_alpha']['value'])} "
                  f"CI95 {_fmt(agents['krippendorff_alpha']['ci95'])}"]
        if agents.get("multi_label"):
            lines.append(f"- mean MASI distance {_fmt(agents.get('masi_mean'))}")
        lines += ["", "| pair | n | kappa | CI95 |", "|---|---|---|---|"]
        lines += [f"| {_md(p['pair'][0])} vs {_md(p['pair'][1])} | {p['n']} | {_fmt(p['kappa'])} | {_fmt(p['ci95'])} |"
                  for p in agents["pairs"]]
    else:
        lines.append(agents["message"])
    pipeline = report["pipeline_vs_reviewers"]
    lines += ["", "## Pipeline vs reviewers"]
    if pipeline.get("status") == "ok":
        lines.append(f"- kappa {_fmt(pipeline['kappa'])} CI95 {_fmt(pipeline['ci95'])} (n={pipeline['n']})")
    else:
        lines.append(pipeline["message"])
    audit = pipeline["audit"]
    if audit.get("status") == "ok":
        lines.append(f"- audit precision {_fmt(audit['precision'])} ({audit['correct']}/{audit['n']}), "
                     f"Wilson CI95 {_fmt(audit['wilson95'])}")
    else:
        lines.append(f"- {audit['message']}")
    reviewers = report["reviewer_vs_reviewer"]
    lines += ["", "## Reviewer vs reviewer"]
    if reviewers.get("status") == "ok":
        lines.append(f"- kappa {_fmt(reviewers['kappa'])} CI95 {_fmt(reviewers['ci95'])} (n={reviewers['n']})")
        for dimension, entry in reviewers["continuous"].items():
            if "icc2_1" in entry:
                lines.append(f"- {dimension}: ICC(2,1) {_fmt(entry['icc2_1']['icc'])}, ICC(3,k) "
                             f"{_fmt(entry['icc3_k']['icc'])}, Spearman {_fmt(entry['spearman']['rho'])} (n={entry['n']})")
            else:
                lines.append(f"- {dimension}: {entry['message']}")
    else:
        lines.append(reviewers["message"])
    lines += ["", "## Answers per agent", "", "| agent | " + " | ".join(_STATUSES) + " |",
              "|---|" + "---|" * len(_STATUSES)]
    lines += [f"| {_md(agent)} | " + " | ".join(str(counts.get(s, 0)) for s in _STATUSES) + " |"
              for agent, counts in sorted(report.get("answers_per_agent", {}).items())]
    calibration = report.get("calibration", {})
    lines += ["", "## Calibration"]
    if calibration.get("status") == "ok":
        consensus = calibration["consensus"]
        if consensus and consensus["threshold"] is not None:
            lines.append(f"- auto-accept at consensus confidence >= {_fmt(consensus['threshold'])}: precision "
                         f"{_fmt(consensus['threshold_precision'])} CI95 {_fmt(consensus['threshold_interval'])} on "
                         f"{_fmt(consensus['threshold_coverage'])} of {consensus['n']} labelled clips")
        elif consensus:
            lines.append(f"- no consensus threshold reaches precision {calibration['target_precision']}")
        for agent, entry in sorted(calibration["agents"].items()):
            lines.append(f"- {_md(agent)}: accuracy {_fmt(entry['accuracy'])} on {entry['n']} labelled answers "
                         f"({entry['abstained']} abstentions), ECE {_fmt(entry['ece_before'])} -> "
                         f"{_fmt(entry['ece_after'])}")
    else:
        lines.append(calibration.get("message", "no calibration"))
    lines += ["", "## Failures"]
    if report["failures"]:
        lines += ["| section | subject | statistic | value | threshold | n |", "|---|---|---|---|---|---|"]
        lines += [f"| {c['section']} | {_md(c['subject'])} | {c['statistic']} | {_fmt(c['value'])} | {c['threshold']} | "
                  f"{c['n']} |" for c in report["failures"]]
    else:
        lines.append("none")
    return "\n".join(lines) + "\n"


def _colour(value: float | None, low: float, high: float) -> str:
    if value is None:
        return "#dddddd"
    share = min(1.0, max(0.0, (value - low) / (high - low) if high > low else 0.0))
    # white -> blue
    r, g = int(255 - 200 * share), int(255 - 150 * share)
    return f"rgb({r},{g},255)"


def svg_heatmap(matrix: list[list[float | None]], rows: list, columns: list, low: float, high: float,
                title: str) -> str:
    """An inline SVG heatmap with the value in each cell; labels escaped."""
    cell, margin = 48, 110
    width, height = margin + cell * len(columns) + 10, margin + cell * len(rows) + 10
    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{esc(title)}"><title>{esc(title)}</title>']
    for j, name in enumerate(columns):
        x = margin + cell * j + cell / 2
        parts.append(f'<text x="{x}" y="{margin - 6}" font-size="11" text-anchor="start" '
                     f'transform="rotate(-45 {x} {margin - 6})">{esc(str(name))}</text>')
    for i, name in enumerate(rows):
        y = margin + cell * i + cell / 2 + 4
        parts.append(f'<text x="{margin - 6}" y="{y}" font-size="11" text-anchor="end">{esc(str(name))}</text>')
        for j, value in enumerate(matrix[i]):
            x0, y0 = margin + cell * j, margin + cell * i
            parts.append(f'<rect x="{x0}" y="{y0}" width="{cell}" height="{cell}" fill="{_colour(value, low, high)}" '
                         'stroke="#fff"/>')
            text = "" if value is None else (f"{value:.2f}" if isinstance(value, float) and not value.is_integer()
                                             else f"{value:g}")
            parts.append(f'<text x="{x0 + cell / 2}" y="{y0 + cell / 2 + 4}" font-size="11" '
                         f'text-anchor="middle">{esc(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _confusion_svg(confusion: list[list[float]], labels: list, title: str) -> str:
    high = max((v for row in confusion for v in row), default=1.0) or 1.0
    return svg_heatmap(confusion, labels, labels, 0.0, high, title)


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page (inline CSS and SVG, no scripts); every text escaped."""
    esc = html.escape
    body = [f"<h1>Agreement report: {'PASS' if report['passed'] else 'FAIL'}</h1>",
            f"<p>Generated {esc(report['generated_at'])} for {esc(report['workspace'])}. Thresholds: kappa &gt; "
            f"{report['thresholds']['kappa']}, ICC &gt; {report['thresholds']['icc']}.</p>"]

    body.append('<section id="pass-fail"><h2>Pass / fail</h2>')
    if report["checks"]:
        body.append("<table><tr><th>section</th><th>subject</th><th>statistic</th><th>value</th><th>threshold</th>"
                    "<th>n</th><th>verdict</th></tr>")
        for c in report["checks"]:
            body.append(f'<tr class="{_verdict(c).lower()}"><td>{esc(c["section"])}</td><td>{esc(c["subject"])}</td>'
                        f"<td>{esc(c['statistic'])}</td><td>{_fmt(c['value'])}</td><td>{c['threshold']}</td>"
                        f"<td>{c['n']}</td><td>{_verdict(c)}</td></tr>")
        body.append("</table>")
    else:
        body.append("<p>nothing to check yet</p>")
    body.append("</section>")

    agents = report["agents"]
    body.append('<section id="agents"><h2>Annotator agents</h2>')
    if agents.get("status") == "ok":
        body.append(f"<p>{agents['clips']} clips with two or more agent labels. Fleiss' kappa "
                    f"{_fmt(agents['fleiss_kappa']['value'])} (CI95 {_fmt(agents['fleiss_kappa']['ci95'])}); "
                    f"Krippendorff's alpha (nominal) {_fmt(agents['krippendorff_alpha']['value'])} "
                    f"(CI95 {_fmt(agents['krippendorff_alpha']['ci95'])})"
                    + (f"; mean MASI distance {_fmt(agents.get('masi_mean'))}" if agents.get("multi_label") else "")
                    + ".</p>")
        body.append(svg_heatmap(agents["kappa_matrix"], agents["agents"], agents["agents"], 0.0, 1.0,
                                "pairwise Cohen's kappa between annotator agents"))
        body.append(_kappa_table(agents["per_class_kappa"], "one-vs-rest Fleiss' kappa"))
        for pair in agents["pairs"]:
            body.append(f"<h3>{esc(pair['pair'][0])} (rows) vs {esc(pair['pair'][1])} (columns): kappa "
                        f"{_fmt(pair['kappa'])}, n={pair['n']}</h3>")
            body.append(_confusion_svg(pair["confusion"], agents["labels"], "confusion matrix"))
    else:
        body.append(f"<p>{esc(agents['message'])}</p>")
    body.append("</section>")

    pipeline = report["pipeline_vs_reviewers"]
    body.append('<section id="pipeline"><h2>Pipeline vs reviewers</h2>')
    if pipeline.get("status") == "ok":
        body.append(f"<p>Cohen's kappa {_fmt(pipeline['kappa'])} (CI95 {_fmt(pipeline['ci95'])}), accuracy "
                    f"{_fmt(pipeline['accuracy'])}, n={pipeline['n']}. Rows: pipeline, columns: reviewer.</p>")
        body.append(_confusion_svg(pipeline["confusion"], pipeline["labels"], "pipeline vs reviewer confusion"))
        body.append(_kappa_table(pipeline["per_class_kappa"], "one-vs-rest Cohen's kappa"))
    else:
        body.append(f"<p>{esc(pipeline['message'])}</p>")
    audit = pipeline["audit"]
    if audit.get("status") == "ok":
        body.append(f"<p>Audit precision of auto-accepted labels: {_fmt(audit['precision'])} ({audit['correct']}/"
                    f"{audit['n']}); Wilson CI95 {_fmt(audit['wilson95'])}, Clopper-Pearson CI95 "
                    f"{_fmt(audit['clopper_pearson95'])}.</p>")
    else:
        body.append(f"<p>{esc(audit['message'])}</p>")
    body.append("</section>")

    reviewers = report["reviewer_vs_reviewer"]
    body.append('<section id="reviewers"><h2>Reviewer vs reviewer</h2>')
    if reviewers.get("status") == "ok":
        body.append(f"<p>Cohen's kappa {_fmt(reviewers['kappa'])} (CI95 {_fmt(reviewers['ci95'])}) on "
                    f"{reviewers['n']} double-annotated clips.</p>")
        body.append(_confusion_svg(reviewers["confusion"], reviewers["labels"], "first vs second reviewer"))
        body.append("<table><tr><th>dimension</th><th>n</th><th>ICC(2,1)</th><th>ICC(3,k)</th><th>Spearman</th></tr>")
        for dimension, entry in reviewers["continuous"].items():
            if entry.get("status") == "ok" and "icc2_1" in entry:
                body.append(f"<tr><td>{dimension}</td><td>{entry['n']}</td><td>{_fmt(entry['icc2_1']['icc'])} "
                            f"{_fmt(entry['icc2_1']['ci95'], 2)}</td><td>{_fmt(entry['icc3_k']['icc'])} "
                            f"{_fmt(entry['icc3_k']['ci95'], 2)}</td><td>{_fmt(entry['spearman']['rho'])}</td></tr>")
            else:
                body.append(f"<tr><td>{dimension}</td><td colspan=4>{esc(entry['message'])}</td></tr>")
        body.append("</table>")
    else:
        body.append(f"<p>{esc(reviewers['message'])}</p>")
    body.append("</section>")

    body.append('<section id="answers"><h2>Answers per agent</h2><p>Abstentions are answers with nothing to judge '
                '(no words, no voiced speech, no face): they have no label and are left out of every statistic '
                'above.</p><table><tr><th>agent</th>' + "".join(f"<th>{s}</th>" for s in _STATUSES) + "</tr>")
    for agent, counts in sorted(report.get("answers_per_agent", {}).items()):
        body.append(f"<tr><td>{esc(agent)}</td>" + "".join(f"<td>{counts.get(s, 0)}</td>" for s in _STATUSES)
                    + "</tr>")
    body.append("</table></section>")

    calibration = report.get("calibration", {})
    body.append('<section id="calibration"><h2>Calibration against known labels</h2>')
    if calibration.get("status") == "ok":
        consensus = calibration["consensus"]
        source = calibration["provenance"]
        body.append(f"<p>Fitted on {source.get('clips', '?')} labelled clips"
                    + (f" from {esc(str(source['labels_file']))}" if source.get("labels_file") else "")
                    + (f" and {source.get('reviewed_clips', 0)} reviewed clips" if "reviewed_clips" in source else "")
                    + f" ({esc(str(source.get('created_at', '')))}). Target precision "
                    f"{calibration['target_precision']}.</p>")
        if consensus:
            if consensus["threshold"] is not None:
                body.append(f"<p>Consensus: accuracy {_fmt(consensus['accuracy'])}; auto-accept at confidence &gt;= "
                            f"{_fmt(consensus['threshold'])} gives precision {_fmt(consensus['threshold_precision'])} "
                            f"(Wilson 95% {_fmt(consensus['threshold_interval'])}) on "
                            f"{_fmt(consensus['threshold_coverage'])} of the labelled clips (in-sample).</p>")
            else:
                body.append(f"<p>Consensus: accuracy {_fmt(consensus['accuracy'])}; no threshold reaches the target "
                            "precision, so every clip goes to review.</p>")
            body.append(_reliability_svg(consensus["curve"], "consensus"))
        for agent, entry in sorted(calibration["agents"].items()):
            body.append(_reliability_svg(entry["curve"], f"{agent}: accuracy {_fmt(entry['accuracy'])}, "
                                         f"n={entry['n']}, ECE {_fmt(entry['ece_before'])}"))
    else:
        body.append(f"<p>{esc(calibration.get('message', 'no calibration'))}</p>")
    body.append("</section>")

    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px}tr.fail{background:#fdd}tr.pass{background:#dfd}")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>merforge agreement report</title>"
            f"<style>{style}</style></head><body>" + "\n".join(body) + "</body></html>\n")


_STATUSES = ("ok", "abstained", "invalid", "refused", "error")


def _reliability_svg(curve: dict[str, Any], title: str) -> str:
    """A reliability diagram: per confidence bin a bar of the share correct, the diagonal
    of perfect calibration, the count under each bar; inline SVG, text escaped."""
    size, pad = 220, 30
    edges, accuracy, count = curve["edges"], curve["accuracy"], curve["count"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 2 * pad}" height="{size + 2 * pad}" '
             f'role="img" aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>',
             f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#999"/>',
             f'<line x1="{pad}" y1="{pad + size}" x2="{pad + size}" y2="{pad}" stroke="#999" stroke-dasharray="4"/>']
    for lo, hi, acc, n in zip(edges[:-1], edges[1:], accuracy, count):
        if acc is None or not n:
            continue
        x, width, height = pad + lo * size, (hi - lo) * size - 1, acc * size
        parts.append(f'<rect x="{x:.1f}" y="{pad + size - height:.1f}" width="{width:.1f}" height="{height:.1f}" '
                     f'fill="#4a7ab5"/><text x="{x + width / 2:.1f}" y="{pad + size + 12}" font-size="8" '
                     f'text-anchor="middle">{n}</text>')
    parts.append(f'<text x="{pad}" y="{pad - 8}" font-size="10">{html.escape(title)}</text>'
                 f'<text x="{pad + size / 2}" y="{pad + size + 24}" font-size="9" text-anchor="middle">confidence'
                 f'</text><text x="10" y="{pad + size / 2}" font-size="9" transform="rotate(-90 10 {pad + size / 2})" '
                 f'text-anchor="middle">share correct</text></svg>')
    return "".join(parts)


def _kappa_table(per_class: dict[str, Any], statistic: str) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in per_class.items())
    return f"<table><tr><th>class</th><th>{html.escape(statistic)}</th></tr>{rows}</table>"


def save_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write a computed report as agreement_report.json and .html into out_dir, each atomically."""
    out_dir = Path(out_dir)
    json_path, html_path = out_dir / REPORT_JSON, out_dir / REPORT_HTML
    write_atomic(json_path, json.dumps(report, indent=2, allow_nan=False).encode())
    write_atomic(html_path, render_html(report).encode())
    return json_path, html_path


def write_report(workspace: Workspace, out_dir: Path | str | None = None) -> tuple[Path, Path]:
    """Compute the report and write agreement_report.json and .html into out_dir (default
    <workspace>/reports), each atomically. Returns (json_path, html_path)."""
    return save_report(agreement_report(workspace), Path(out_dir) if out_dir is not None else workspace.root / "reports")
