"""Calibration of consensus confidence against reviews.

Once reviewers have checked clips, each reviewed clip gives a pair (consensus confidence,
did the reviewer agree with the consensus label). From those:

- `fit_calibration`: isotonic regression of agreement on confidence (Zadrozny and Elkan,
  "Transforming classifier scores into accurate multiclass probability estimates", KDD
  2002; scikit-learn's `IsotonicRegression`), a monotone map from confidence to
  P(reviewer agrees).
- `expected_calibration_error`: ECE = sum_b (n_b / N) |acc_b - conf_b| over `bins`
  equal-width confidence bins (Naeini, Cooper and Hauskrecht, "Obtaining well calibrated
  probabilities using Bayesian binning", AAAI 2015; Guo, Pleiss, Sun and Weinberger, "On
  calibration of modern neural networks", ICML 2017, eq. 3). 0 is perfect; bins are
  (lo, hi], the first one [0, hi].
- `reliability_curve`: the bins behind the ECE (mean confidence, accuracy, count), the
  data of a reliability diagram.
- `threshold_for_precision`: the auto-accept threshold that reaches a target precision
  with the fewest reviews.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from sklearn.isotonic import IsotonicRegression


class CalibrationError(ValueError):
    """Bad calibration input (lengths differ, values outside 0..1, nothing to fit)."""


def _pairs(conf, correct) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(conf, dtype=float).ravel()
    correct = np.asarray(correct).ravel()
    if conf.shape != correct.shape:
        raise CalibrationError(f"{conf.size} confidences but {correct.size} outcomes; pass one outcome per confidence")
    if conf.size and (np.isnan(conf).any() or conf.min() < 0 or conf.max() > 1):
        raise CalibrationError("confidences must be numbers in 0..1 (no NaN)")
    return conf, correct.astype(float)


@dataclass(frozen=True)
class ReliabilityCurve:
    """Equal-width confidence bins: edges (bins + 1,), and per bin the mean confidence,
    accuracy (share correct) and count; NaN means and accuracy in empty bins."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        have = self.count > 0
        if not have.any():
            return math.nan
        gaps = np.abs(self.accuracy[have] - self.confidence[have])
        return float(np.sum(self.count[have] * gaps) / self.count.sum())


def reliability_curve(conf, correct, bins: int = 10) -> ReliabilityCurve:
    conf, correct = _pairs(conf, correct)
    if bins < 1:
        raise CalibrationError(f"bins must be >= 1, got {bins}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    sum_conf = np.bincount(which, weights=conf, minlength=bins)
    sum_correct = np.bincount(which, weights=correct, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, sum_conf / count, np.nan)
        accuracy = np.where(count > 0, sum_correct / count, np.nan)
    return ReliabilityCurve(edges=edges, confidence=mean_conf, accuracy=accuracy, count=count)


def expected_calibration_error(conf, correct, bins: int = 10) -> float:
    """ECE over `bins` equal-width bins (Naeini et al. 2015; Guo et al. 2017); NaN with no data."""
    return reliability_curve(conf, correct, bins).ece


@dataclass(frozen=True)
class Calibration:
    """A fitted isotonic map confidence -> P(reviewer agrees), with its in-sample diagnostics."""

    model: IsotonicRegression
    n: int
    ece_before: float  # of the raw confidences on the fitting data
    ece_after: float  # of the calibrated ones on the same data (in-sample: optimistic)
    curve_before: ReliabilityCurve
    curve_after: ReliabilityCurve

    def predict(self, conf) -> np.ndarray:
        """Calibrated confidence (0..1) for raw confidences; clipped outside the fitted range."""
        return self.model.predict(np.asarray(conf, dtype=float).ravel())

    __call__ = predict


def fit_calibration(confidences, agreed, bins: int = 10) -> Calibration:
    """Isotonic fit of agreement (bool per reviewed clip) on consensus confidence (0..1)."""
    conf, agreed_f = _pairs(confidences, agreed)
    if conf.size < 2:
        raise CalibrationError(f"need at least 2 reviewed clips to calibrate, got {conf.size}")
    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    model.fit(conf, agreed_f)
    calibrated = model.predict(conf)
    before = reliability_curve(conf, agreed_f, bins)
    after = reliability_curve(calibrated, agreed_f, bins)
    return Calibration(model=model, n=int(conf.size), ece_before=before.ece, ece_after=after.ece,
                       curve_before=before, curve_after=after)


class PrecisionThreshold(NamedTuple):
    """Auto-accept clips with confidence >= threshold.

    Unreachable target: threshold = inf (accept nothing), precision = NaN, every clip to
    review, coverage 0; `reached` is False.
    """

    threshold: float
    precision: float  # share correct among the accepted clips
    reviews_needed: int  # clips below the threshold, sent to review
    coverage: float  # share of clips auto-accepted

    @property
    def reached(self) -> bool:
        return math.isfinite(self.threshold)


def threshold_for_precision(conf, correct, target: float) -> PrecisionThreshold:
    """The lowest threshold t such that the clips with confidence >= t are correct at a
    share >= target: the most clips auto-accepted, so the fewest reviews. Precision need not
    rise with t, so every distinct confidence is tried."""
    conf, correct = _pairs(conf, correct)
    if not 0 < target <= 1:
        raise CalibrationError(f"target precision must be in (0, 1], got {target}")
    n = conf.size
    if n == 0:
        return PrecisionThreshold(math.inf, math.nan, 0, 0.0)
    order = np.argsort(-conf, kind="stable")
    sorted_conf = conf[order]
    hits = np.cumsum(correct[order])
    # a threshold equal to a confidence accepts every clip tied with it: use the last index of each tie group
    last = np.flatnonzero(np.r_[sorted_conf[1:] != sorted_conf[:-1], True])
    accepted = last + 1
    precision = hits[last] / accepted
    ok = np.flatnonzero(precision >= target - 1e-12)
    if ok.size == 0:
        return PrecisionThreshold(math.inf, math.nan, n, 0.0)
    best = ok[-1]  # the lowest confidence that still reaches the target
    return PrecisionThreshold(threshold=float(sorted_conf[last[best]]), precision=float(precision[best]),
                              reviews_needed=int(n - accepted[best]), coverage=float(accepted[best] / n))


# -- per-agent and consensus calibration from labelled clips ----------------------------
#
# A curator who has true labels for some clips (a labelled CSV, or the reviewed clips of
# the workspace) can tell each agent's reliability from them, instead of trusting what the
# agents say of themselves:
#
# - per agent, an isotonic map from its own probability for the label it gave (its soft
#   vote after coverage, as aggregation sees it) to P(that label is right), and its
#   confusion matrix P(answer j | true k) with add-one smoothing (the Dawid-Skene
#   parameters, estimated from truth instead of by EM);
# - for the consensus, an isotonic map from consensus confidence to P(right) and the
#   lowest confidence whose accepted clips reach `target_precision` (threshold_for_precision),
#   with a Wilson interval on that precision.
#
# The fitted maps are stored as their breakpoints (JSON in the workspace), so routing reads
# them without scikit-learn state.


@dataclass(frozen=True)
class IsotonicMap:
    """A monotone piecewise-linear map 0..1 -> 0..1 given by breakpoints (scikit-learn's
    IsotonicRegression X_thresholds_ / y_thresholds_); flat outside them."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __call__(self, conf) -> np.ndarray:
        conf = np.asarray(conf, dtype=float)
        if not self.x:
            return np.full(conf.shape, np.nan)
        return np.interp(conf, self.x, self.y)

    @classmethod
    def fit(cls, conf, correct, smoothed: bool = False) -> "IsotonicMap":
        """Isotonic regression of `correct` on `conf`. `smoothed`: each constant block of the
        fit says (hits + 1) / (n + 2) instead of hits / n (Laplace's rule of succession),
        then made monotone again (running maximum): a block of three right answers at
        the top says 0.80, not 1.00, so a map fitted on few labelled clips does not
        promise certainty it has not seen."""
        conf, correct_f = _pairs(conf, correct)
        fitted = fit_calibration(conf, correct_f).model
        x = np.asarray(fitted.X_thresholds_, dtype=float)
        y = np.asarray(fitted.y_thresholds_, dtype=float)
        if smoothed and y.size:
            fitted_values = fitted.predict(conf)
            for value in np.unique(y):
                block = np.isclose(fitted_values, value, rtol=0, atol=1e-12)
                n = int(block.sum())
                if n:
                    y[np.isclose(y, value, rtol=0, atol=1e-12)] = (float(correct_f[block].sum()) + 1.0) / (n + 2.0)
            y = np.maximum.accumulate(y)
        return cls(tuple(float(v) for v in x), tuple(float(v) for v in y))


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (Wilson, JASA 22, 1927); (nan, nan) for n = 0."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class AgentCalibration:
    """One agent's reliability measured on labelled clips. `confusion[k][j]` = P(the agent
    answers label j | the truth is label k), rows in `labels` order, add-one smoothed."""

    annotator_id: str
    n: int  # labelled clips the agent gave a label for
    abstained: int  # labelled clips it abstained on
    accuracy: float
    ece_before: float
    ece_after: float  # in-sample
    precision: IsotonicMap  # own probability for its label -> P(label right)
    confusion: tuple[tuple[float, ...], ...]
    curve: dict  # reliability diagram of the raw probabilities: edges, confidence, accuracy, count


@dataclass(frozen=True)
class ConsensusCalibration:
    n: int
    accuracy: float
    ece_before: float
    ece_after: float
    precision: IsotonicMap  # consensus confidence -> P(label right)
    threshold: float  # lowest confidence whose accepted clips reach the target precision; inf: unreachable
    threshold_precision: float
    threshold_interval: tuple[float, float]  # Wilson 95% interval of that precision
    threshold_coverage: float  # share of the labelled clips at or above the threshold
    curve: dict


def _curve_dict(curve: ReliabilityCurve) -> dict:
    clean = lambda values: [None if not np.isfinite(v) else round(float(v), 4) for v in values]  # noqa: E731
    return {"edges": clean(curve.edges), "confidence": clean(curve.confidence), "accuracy": clean(curve.accuracy),
            "count": [int(c) for c in curve.count]}


# 2: the consensus confidence is the consensus map applied to the best agreeing answer's
# precision, and the threshold is on that scale (1 had the threshold on the raw scale)
CALIBRATION_VERSION = 2


@dataclass(frozen=True)
class WorkspaceCalibration:
    """What `merforge calibrate` fits and routing reads: per-agent calibrations, the class
    prior, the consensus calibration, and where the truth came from."""

    labels: tuple[str, ...]
    target_precision: float
    prior: tuple[float, ...]
    agents: dict[str, AgentCalibration]
    consensus: ConsensusCalibration | None
    provenance: dict

    # -- use --------------------------------------------------------------------------

    @staticmethod
    def _likelihood(agent: AgentCalibration, answers: np.ndarray) -> np.ndarray:
        """(n, K) P(answer | truth k) of hard answers (n,): the confusion column of each.
        (The mixture over an answer's soft vote, sum_j q(j) P(j | k), was tried and lost
        6-8 points of held-out UAR on benchmarks/label_quality_bench.py: the specialists'
        soft votes are broad, and the measured confusion already says how far to trust a
        label.)"""
        return np.asarray(agent.confusion, dtype=float)[:, answers].T

    def answer_precision(self, annotator_ids, matrix: np.ndarray, soft: np.ndarray,
                         label: np.ndarray) -> np.ndarray:
        """(n, W) calibrated precision of the answers that gave `label` (n,): the agent's
        isotonic map at its own probability for that label (soft vote, after coverage);
        NaN where the answer gave another label or the agent has no calibration."""
        matrix, label = np.asarray(matrix), np.asarray(label)
        out = np.full(matrix.shape, np.nan)
        for w, annotator in enumerate(annotator_ids):
            agent = self.agents.get(annotator)
            rows = np.flatnonzero((matrix[:, w] >= 0) & (matrix[:, w] == label))
            if agent is None or not rows.size:
                continue
            out[rows, w] = agent.precision(soft[rows, w][np.arange(rows.size), label[rows]])
        return out

    def decide(self, matrix: np.ndarray, annotator_ids, soft: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(distribution (n, K), label (n,), confidence (n,), answer precision (n, W)).

        The label is the arg-max of `posterior` (the confusions decide WHICH label: an agent
        whose "neutral" carries no information stops outvoting one that measured something).
        The confidence is the highest calibrated precision among the answers that gave it
        (`answer_precision`: how often that agent is right when it is this sure; measured,
        not self-reported), or the posterior where no agreeing agent is calibrated. The
        posterior alone is a poor confidence: built from hard labels, it cannot tell a
        0.99 answer from a 0.40 one (benchmarks/label_quality_bench.py: no threshold on it
        reached precision 0.8 on held-out clips)."""
        post = self.posterior(matrix, annotator_ids, soft)
        has = post.sum(axis=1) > 0
        label = np.where(has, post.argmax(axis=1), -1)
        precision = self.answer_precision(annotator_ids, matrix, soft, label)
        finite = np.isfinite(precision)
        best = np.where(finite.any(axis=1), np.max(np.where(finite, precision, -1.0), axis=1), np.nan)
        picked = post[np.arange(len(label)), np.maximum(label, 0)]
        confidence = np.where(has, np.where(np.isnan(best), picked, best), 0.0)
        if self.consensus is not None and self.consensus.precision.x:
            # the consensus map: how often a CONSENSUS this confident was right on the labelled
            # clips (an agent's precision at its own confidence overstates the consensus where
            # the posterior picked another agent's label, or where the agents disagree)
            confidence = np.where(has, self.consensus.precision(confidence), 0.0)
        return post, label, confidence, precision

    def posterior(self, matrix: np.ndarray, annotator_ids, soft: np.ndarray) -> np.ndarray:
        """(n, K) P(truth | answers): the prior times each calibrated agent's confusion column
        for its answer (Dawid-Skene with the confusions measured on labelled clips); an
        agent without calibration contributes its own soft vote as likelihood. Rows with no
        answer are all zero."""
        matrix = np.asarray(matrix)
        n, k = matrix.shape[0], len(self.labels)
        log_post = np.tile(np.log(np.asarray(self.prior, dtype=float)), (n, 1))
        for w, annotator in enumerate(annotator_ids):
            answered = matrix[:, w] >= 0
            if not answered.any():
                continue
            agent = self.agents.get(annotator)
            if agent is not None:
                log_post[answered] += np.log(self._likelihood(agent, matrix[answered, w]))
            else:
                log_post[answered] += np.log(np.clip(soft[answered, w], 1e-6, None))
        log_post -= log_post.max(axis=1, keepdims=True)
        post = np.exp(log_post)
        post /= post.sum(axis=1, keepdims=True)
        post[~(matrix >= 0).any(axis=1)] = 0.0
        return post

    # -- storage ----------------------------------------------------------------------

    def to_json(self) -> dict:
        def agent_json(a: AgentCalibration) -> dict:
            return {"n": a.n, "abstained": a.abstained, "accuracy": a.accuracy, "ece_before": a.ece_before,
                    "ece_after": a.ece_after, "precision_map": {"x": list(a.precision.x), "y": list(a.precision.y)},
                    "confusion": [list(row) for row in a.confusion], "curve": a.curve}

        consensus = None
        if self.consensus is not None:
            c = self.consensus
            consensus = {"n": c.n, "accuracy": c.accuracy, "ece_before": c.ece_before, "ece_after": c.ece_after,
                         "precision_map": {"x": list(c.precision.x), "y": list(c.precision.y)},
                         "threshold": None if not math.isfinite(c.threshold) else c.threshold,
                         "threshold_precision": None if not math.isfinite(c.threshold_precision)
                         else c.threshold_precision,
                         "threshold_interval": [None if not math.isfinite(v) else v for v in c.threshold_interval],
                         "threshold_coverage": c.threshold_coverage, "curve": c.curve}
        return {"version": CALIBRATION_VERSION, "labels": list(self.labels), "target_precision": self.target_precision,
                "prior": list(self.prior), "agents": {k: agent_json(v) for k, v in self.agents.items()},
                "consensus": consensus, "provenance": self.provenance}

    @classmethod
    def from_json(cls, data: dict) -> "WorkspaceCalibration":
        version = data.get("version") if isinstance(data, dict) else None
        if version is None:
            raise CalibrationError("calibration file is malformed (no version); run `merforge calibrate` again")
        if version != CALIBRATION_VERSION:
            raise CalibrationError(f"calibration file version {version!r} is not {CALIBRATION_VERSION} (its threshold "
                                   "is on another confidence scale); run `merforge calibrate` again")
        try:
            agents = {name: AgentCalibration(
                annotator_id=name, n=int(a["n"]), abstained=int(a["abstained"]), accuracy=float(a["accuracy"]),
                ece_before=_num(a["ece_before"]), ece_after=_num(a["ece_after"]),
                precision=IsotonicMap(tuple(a["precision_map"]["x"]), tuple(a["precision_map"]["y"])),
                confusion=tuple(tuple(float(v) for v in row) for row in a["confusion"]), curve=a["curve"])
                for name, a in data["agents"].items()}
            c = data.get("consensus")
            consensus = None if c is None else ConsensusCalibration(
                n=int(c["n"]), accuracy=float(c["accuracy"]), ece_before=_num(c["ece_before"]),
                ece_after=_num(c["ece_after"]),
                precision=IsotonicMap(tuple(c["precision_map"]["x"]), tuple(c["precision_map"]["y"])),
                threshold=math.inf if c["threshold"] is None else float(c["threshold"]),
                threshold_precision=_num(c["threshold_precision"]),
                threshold_interval=tuple(_num(v) for v in c["threshold_interval"]),
                threshold_coverage=float(c["threshold_coverage"]), curve=c["curve"])
            return cls(labels=tuple(data["labels"]), target_precision=float(data["target_precision"]),
                       prior=tuple(float(v) for v in data["prior"]), agents=agents, consensus=consensus,
                       provenance=dict(data.get("provenance", {})))
        except (KeyError, TypeError, ValueError) as error:
            raise CalibrationError(f"calibration file is malformed ({type(error).__name__}: {error}); "
                                   "run `merforge calibrate` again") from None


def _num(value) -> float:
    return math.nan if value is None else float(value)


CONFUSION_PRIOR_WEIGHT = 5.0  # pseudo-answers per true class drawn from the agent's one-coin model


def smoothed_confusion(true: np.ndarray, given: np.ndarray, k: int,
                       prior_weight: float = CONFUSION_PRIOR_WEIGHT) -> np.ndarray:
    """P(answer j | truth k) from labelled answers, shrunk towards the agent's one-coin
    model (right with its overall accuracy a, else any other label alike; the "one-coin"
    simplification of Dawid-Skene, Raykar et al., JMLR 11, 2010) by `prior_weight`
    pseudo-answers per class: with few labelled clips per class the matrix falls back to
    "this agent is right a of the time" instead of to noise; with many it is the counts."""
    true, given = np.asarray(true, dtype=int), np.asarray(given, dtype=int)
    accuracy = (float(np.sum(true == given)) + 1.0) / (true.size + 2.0)
    prior = np.full((k, k), (1.0 - accuracy) / max(k - 1, 1))
    np.fill_diagonal(prior, accuracy)
    counts = np.zeros((k, k))
    np.add.at(counts, (true, given), 1.0)
    confusion = counts + prior_weight * prior
    return confusion / confusion.sum(axis=1, keepdims=True)


def fit_workspace_calibration(matrix: np.ndarray, soft: np.ndarray, state_abstained: np.ndarray,
                              annotator_ids, labels, truth: np.ndarray, target_precision: float,
                              provenance: dict, min_answers: int = 10) -> WorkspaceCalibration:
    """Fit per-agent and consensus calibration from labelled clips.

    `matrix` (n, W) answer codes (-1: none), `soft` (n, W, K) soft votes as aggregation sees
    them, `state_abstained` (n, W) bool, `truth` (n,) true label codes (-1: unknown; those
    rows are ignored). Agents with fewer than `min_answers` labelled answers get no
    calibration (too little to trust). The consensus calibration uses the calibrated
    posterior (`WorkspaceCalibration.posterior`), fitted on the same clips: in-sample, so
    measure it on held-out clips (benchmarks/label_quality_bench.py does).
    """
    truth = np.asarray(truth)
    known = truth >= 0
    if known.sum() < 2:
        raise CalibrationError(f"need at least 2 labelled clips with answers to calibrate, got {int(known.sum())}")
    matrix, soft, abstained, truth = matrix[known], soft[known], state_abstained[known], truth[known]
    k = len(labels)
    counts = np.bincount(truth, minlength=k).astype(float)
    prior = tuple(float(v) for v in (counts + 1) / (counts.sum() + k))
    agents = {}
    for w, annotator in enumerate(annotator_ids):
        answered = matrix[:, w] >= 0
        if answered.sum() < min_answers:
            continue
        given = matrix[answered, w]
        true = truth[answered]
        conf = soft[answered, w][np.arange(given.size), given]
        correct = given == true
        confusion = smoothed_confusion(true, given, k)
        precision = IsotonicMap.fit(conf, correct)
        curve = reliability_curve(conf, correct)
        agents[annotator] = AgentCalibration(
            annotator_id=annotator, n=int(answered.sum()), abstained=int(abstained[:, w].sum()),
            accuracy=float(correct.mean()), ece_before=float(curve.ece),
            ece_after=float(expected_calibration_error(precision(conf), correct)), precision=precision,
            confusion=tuple(tuple(round(float(v), 6) for v in row) for row in confusion), curve=_curve_dict(curve))
    calibration = WorkspaceCalibration(labels=tuple(labels), target_precision=target_precision, prior=prior,
                                       agents=agents, consensus=None, provenance=provenance)
    _, label, confidence, _ = calibration.decide(matrix, annotator_ids, soft)
    has = label >= 0
    if has.sum() >= 2:
        conf = confidence[has]
        correct = label[has] == truth[has]
        precision = IsotonicMap.fit(conf, correct, smoothed=True)
        mapped = precision(conf)  # what `decide` reports from now on; the threshold lives on this scale
        threshold = threshold_for_precision(mapped, correct, target_precision)
        accepted = mapped >= threshold.threshold
        interval = wilson_interval(int(correct[accepted].sum()), int(accepted.sum()))
        calibration = WorkspaceCalibration(
            labels=calibration.labels, target_precision=target_precision, prior=prior, agents=agents,
            consensus=ConsensusCalibration(
                n=int(has.sum()), accuracy=float(correct.mean()),
                ece_before=float(expected_calibration_error(conf, correct)),
                ece_after=float(expected_calibration_error(mapped, correct)), precision=precision,
                threshold=threshold.threshold, threshold_precision=threshold.precision,
                threshold_interval=interval, threshold_coverage=threshold.coverage,
                curve=_curve_dict(reliability_curve(conf, correct))),
            provenance=provenance)
    return calibration
