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
