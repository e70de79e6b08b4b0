"""Inter-rater agreement statistics: pure functions over arrays and tidy tables, no I/O.

Every statistic cites the formula it implements and is checked in tests/test_agreement.py
against published numbers (tests/data/refs/reference_values.json):

- Cohen's kappa, unweighted and weighted: Cohen (1960), Cohen (1968).
- Fleiss' kappa: Fleiss (1971); variable raters per item as in Fleiss, Levin & Paik (2003) ch. 18.
- Krippendorff's alpha, nominal / ordinal / interval / ratio: Krippendorff (2011),
  "Computing Krippendorff's Alpha-Reliability", via the coincidence matrix.
- ICC, the six Shrout & Fleiss (1979) forms, computed by pingouin.
- Spearman's rho (scipy), MASI distance (Passonneau 2006), percentile bootstrap
  (Efron & Tibshirani 1993), Wilson (1927) and Clopper-Pearson (1934) intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Literal

import warnings

import numpy as np

Weights = Literal["linear", "quadratic"] | None
Level = Literal["nominal", "ordinal", "interval", "ratio"]

# pingouin 0.7 names (McGraw & Wong) -> Shrout & Fleiss names used in this project
SHROUT_FLEISS_NAMES = {
    "ICC(1,1)": "ICC1",
    "ICC(A,1)": "ICC2",  # Shrout & Fleiss ICC(2,1): two-way random, absolute agreement
    "ICC(C,1)": "ICC3",  # ICC(3,1): two-way mixed, consistency
    "ICC(1,k)": "ICC1k",
    "ICC(A,k)": "ICC2k",
    "ICC(C,k)": "ICC3k",  # ICC(3,k): mean of k raters, consistency
}


_BOOTSTRAP_CELLS = 4_000_000  # resample indices held in memory at once


class AgreementError(ValueError):
    """The data cannot give the requested statistic (too few units, mismatched lengths, ...)."""


# -- tables ------------------------------------------------------------------------------


def category_labels(*columns: Iterable[Hashable]) -> list[Hashable]:
    """Sorted union of the labels seen in the columns (None and NaN left out)."""
    seen = {v for column in columns for v in column if v is not None and v == v}
    return sorted(seen, key=lambda v: (str(type(v)), v))


def confusion_matrix(a: Sequence[Hashable], b: Sequence[Hashable],
                     labels: Sequence[Hashable] | None = None) -> np.ndarray:
    """Counts table: row = label given by rater `a`, column = label given by rater `b`.

    Pairs where either label is not in `labels` (default: every label seen) are left out.
    Raises AgreementError when `a` and `b` differ in length.
    """
    if len(a) != len(b):
        raise AgreementError(f"the two raters labelled {len(a)} and {len(b)} units; pass one label per unit each")
    labels = list(labels) if labels is not None else category_labels(a, b)
    index = {label: i for i, label in enumerate(labels)}
    pairs = [(index[x], index[y]) for x, y in zip(a, b) if x in index and y in index]
    table = np.zeros((len(labels), len(labels)), dtype=float)
    if pairs:
        rows, cols = np.asarray(pairs).T
        np.add.at(table, (rows, cols), 1)
    return table


# -- Cohen's kappa -----------------------------------------------------------------------


def cohen_kappa_table(table: np.ndarray, weights: Weights = None) -> float:
    """Cohen's kappa from a k x k counts table.

    kappa = 1 - sum(w * O) / sum(w * E), with O the observed proportions, E = outer product
    of the margins (chance agreement) and w the disagreement weights: 1 off the diagonal
    (Cohen 1960), |i-j| ("linear") or (i-j)^2 ("quadratic", Cohen 1968), i and j being the
    *indices* of the categories (as irr::kappa2 and scikit-learn do). NaN when chance
    disagreement is zero (every unit in one category for both raters).
    """
    table = np.asarray(table, dtype=float)
    k = table.shape[0]
    if table.ndim != 2 or table.shape[1] != k:
        raise AgreementError(f"a Cohen's kappa table must be square, got shape {table.shape}")
    total = table.sum()
    if total <= 0:
        return float("nan")
    observed = table / total
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    i, j = np.indices((k, k))
    if weights is None:
        w = (i != j).astype(float)
    elif weights == "linear":
        w = np.abs(i - j).astype(float)
    elif weights == "quadratic":
        w = ((i - j) ** 2).astype(float)
    else:
        raise AgreementError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    chance = (w * expected).sum()
    if chance == 0:
        return float("nan")
    return float(1.0 - (w * observed).sum() / chance)


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable], weights: Weights = None,
                labels: Sequence[Hashable] | None = None) -> float:
    """Cohen's kappa between two raters' labels of the same units (Cohen 1960/1968).

    `labels` orders the categories for weighting; the default is the sorted labels seen,
    so weights go by the index of the observed levels (irr::kappa2 convention).
    """
    return cohen_kappa_table(confusion_matrix(a, b, labels), weights)


def one_vs_rest_kappa(a: Sequence[Hashable], b: Sequence[Hashable],
                      labels: Sequence[Hashable] | None = None) -> dict[Hashable, float]:
    """Per-class agreement: Cohen's kappa on "is it class c?" for each class c."""
    labels = list(labels) if labels is not None else category_labels(a, b)
    return {c: cohen_kappa([x == c for x in a], [y == c for y in b], labels=[False, True]) for c in labels}


# -- Fleiss' kappa -----------------------------------------------------------------------


def counts_from_ratings(ratings: Sequence[Sequence[Hashable]],
                        labels: Sequence[Hashable] | None = None) -> tuple[np.ndarray, list[Hashable]]:
    """Items x raters labels (None/NaN = missing) -> items x categories counts, and the categories."""
    labels = list(labels) if labels is not None else category_labels(*ratings)
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(ratings), len(labels)), dtype=float)
    for row, item in enumerate(ratings):
        for value in item:
            if value in index:
                counts[row, index[value]] += 1
    return counts, labels


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an items x categories matrix of rating counts (Fleiss 1971).

    P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1)), P_bar = mean P_i,
    p_j = sum_i n_ij / sum_i n_i, P_e = sum_j p_j^2, kappa = (P_bar - P_e) / (1 - P_e).
    With the same number of raters per item this is Fleiss (1971) exactly; with varying
    n_i it is the usual generalisation (Fleiss, Levin & Paik 2003). Items with fewer than
    two ratings are left out. NaN when fewer than one item remains or P_e = 1.
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2:
        raise AgreementError(f"Fleiss' kappa needs an items x categories count matrix, got shape {counts.shape}")
    n_i = counts.sum(axis=1)
    counts = counts[n_i >= 2]
    n_i = n_i[n_i >= 2]
    if len(counts) == 0:
        return float("nan")
    p_i = (counts * (counts - 1)).sum(axis=1) / (n_i * (n_i - 1))
    p_j = counts.sum(axis=0) / n_i.sum()
    p_e = float((p_j**2).sum())
    if p_e >= 1:
        return float("nan")
    return float((p_i.mean() - p_e) / (1 - p_e))


# -- Krippendorff's alpha ----------------------------------------------------------------


def krippendorff_alpha(reliability_data: Any, level: Level = "nominal") -> float:
    """Krippendorff's alpha for a raters x units matrix with NaN for missing values.

    Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", sections C-F:
    coincidences o_ck = sum_u sum_{i != j} [v_ui = c][v_uj = k] / (m_u - 1) over units with
    m_u >= 2 values, n_c = sum_k o_ck, n = sum_c n_c, and
        alpha = 1 - (n - 1) * sum_ck o_ck delta_ck / sum_ck n_c n_k delta_ck
    with the difference functions
        nominal  delta = [c != k]
        ordinal  delta = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2
        interval delta = (c - k)^2
        ratio    delta = ((c - k) / (c + k))^2
    Values must be numeric (encode labels as integers for nominal data). NaN when no unit
    has two values or there is no variation at all.
    """
    data = np.asarray(reliability_data, dtype=float)
    if data.ndim != 2:
        raise AgreementError(f"reliability data must be raters x units, got shape {data.shape}")
    if level not in ("nominal", "ordinal", "interval", "ratio"):
        raise AgreementError(f"level must be nominal, ordinal, interval or ratio, got {level!r}")
    values = np.unique(data[~np.isnan(data)])
    if len(values) == 0:
        return float("nan")
    # units x values: how many raters gave value c to unit u
    per_unit = (data.T[:, :, None] == values[None, None, :]).sum(axis=1).astype(float)
    m_u = per_unit.sum(axis=1)
    per_unit, m_u = per_unit[m_u >= 2], m_u[m_u >= 2]
    if len(per_unit) == 0:
        return float("nan")
    coincidences = np.einsum("uc,uk->ck", per_unit / (m_u - 1)[:, None], per_unit)
    coincidences -= np.diag((per_unit / (m_u - 1)[:, None]).sum(axis=0))
    n_c = coincidences.sum(axis=1)
    n = n_c.sum()
    delta = _difference(values, n_c, level)
    expected = (np.outer(n_c, n_c) * delta).sum()
    if expected == 0:
        return float("nan")
    return float(1.0 - (n - 1) * (coincidences * delta).sum() / expected)


def _difference(values: np.ndarray, n_c: np.ndarray, level: Level) -> np.ndarray:
    c, k = np.meshgrid(values, values, indexing="ij")
    if level == "nominal":
        return (c != k).astype(float)
    if level == "interval":
        return (c - k) ** 2
    if level == "ratio":
        total = c + k
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total == 0, 0.0, ((c - k) / total) ** 2)
    # ordinal: ranks by the marginal counts of the values between c and k inclusive
    cumulative = np.concatenate([[0.0], np.cumsum(n_c)])
    i, j = np.meshgrid(np.arange(len(values)), np.arange(len(values)), indexing="ij")
    low, high = np.minimum(i, j), np.maximum(i, j)
    between = cumulative[high + 1] - cumulative[low]
    return (between - (n_c[i] + n_c[j]) / 2) ** 2


# -- ICC and Spearman --------------------------------------------------------------------


def icc(data: Any, targets: str = "target", raters: str = "rater", ratings: str = "rating") -> dict[str, dict]:
    """The six Shrout & Fleiss (1979) intraclass correlations, computed by pingouin.

    `data` is a long DataFrame (columns `targets`, `raters`, `ratings`) or a wide
    targets x raters array. Returns {"ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"} ->
    {"icc", "F", "df1", "df2", "pval", "ci95": [lo, hi], "pingouin": pingouin's name}.
    ICC2 = ICC(2,1) = McGraw & Wong ICC(A,1); ICC3k = ICC(3,k) = ICC(C,k). Targets with a
    missing rating are dropped. Raises AgreementError with fewer than 5 complete targets or
    2 raters (pingouin's minimum).
    """
    import pandas as pd
    import pingouin

    if not isinstance(data, pd.DataFrame):
        wide = np.asarray(data, dtype=float)
        if wide.ndim != 2:
            raise AgreementError(f"wide ICC data must be targets x raters, got shape {wide.shape}")
        t, r = np.indices(wide.shape)
        data = pd.DataFrame({targets: t.ravel(), raters: r.ravel(), ratings: wide.ravel()})
    complete = data.dropna(subset=[ratings]).pivot_table(index=targets, columns=raters, values=ratings).dropna()
    if complete.shape[0] < 5 or complete.shape[1] < 2:
        raise AgreementError(f"ICC needs at least 5 targets rated by every rater and 2 raters; "
                             f"got {complete.shape[0]} complete targets and {complete.shape[1]} raters")
    long = complete.reset_index().melt(id_vars=targets, var_name=raters, value_name=ratings)
    # zero residual variance (raters identical up to a shift) gives inf/NaN forms, not warnings
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        table = pingouin.intraclass_corr(long, targets=targets, raters=raters, ratings=ratings)
    result = {}
    for row in table.itertuples(index=False):
        name = SHROUT_FLEISS_NAMES[row.Type]
        result[name] = {"icc": float(row.ICC), "F": float(row.F), "df1": int(row.df1), "df2": int(row.df2),
                        "pval": float(row.pval), "ci95": [float(v) for v in row.CI95], "pingouin": row.Type}
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rank correlation (ties get mean ranks) and its two-sided p-value (scipy,
    t approximation). Pairs with a NaN are dropped; (NaN, NaN) with fewer than 3 pairs."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan"), float("nan")
    result = spearmanr(x[keep], y[keep])
    return float(result.statistic), float(result.pvalue)


# -- multi-label -------------------------------------------------------------------------


def masi_distance(set_a: Iterable[Hashable], set_b: Iterable[Hashable]) -> float:
    """MASI distance between two label sets (Passonneau 2006, "Measuring agreement on
    set-valued items (MASI) for semantic and pragmatic annotation", LREC).

    distance = 1 - J * M, J = |A & B| / |A | B| (Jaccard), M = 1 for identical sets, 2/3
    when one is a subset of the other, 1/3 when they only overlap, 0 when disjoint.
    Two empty sets are identical (distance 0).
    """
    a, b = set(set_a), set(set_b)
    if not a and not b:
        return 0.0
    union, common = len(a | b), len(a & b)
    if a == b:
        monotonicity = 1.0
    elif a <= b or b <= a:
        monotonicity = 2 / 3
    elif common:
        monotonicity = 1 / 3
    else:
        monotonicity = 0.0
    return 1.0 - (common / union) * monotonicity


# -- intervals ---------------------------------------------------------------------------


def bootstrap_ci(statistic: Callable[..., Any], data: Sequence[Any], n: int = 1000, seed: int = 0,
                 confidence: float = 0.95, batched: bool = False) -> tuple[float, float]:
    """Percentile bootstrap interval (Efron & Tibshirani 1993, ch. 13) resampling units.

    `data` is a sequence of arrays sharing their first axis (the units: clips, items); each
    resample draws units with replacement and calls statistic(*arrays). With batched=True the
    statistic is called once with arrays of shape (n, units, ...) and returns n estimates
    (see cohen_kappa_rows, spearman_rows). Resamples where the statistic is NaN are
    dropped. (NaN, NaN) when n == 0, there are no units, or every resample was NaN.
    """
    arrays = [np.asarray(array) for array in data]
    units = len(arrays[0]) if arrays else 0
    if n <= 0 or units == 0:
        return float("nan"), float("nan")
    if any(len(array) != units for array in arrays):
        raise AgreementError("bootstrap arrays must share their first axis (one row per unit)")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n, _BOOTSTRAP_CELLS // units))  # bounds memory: chunk x units indices at a time
    parts = []
    for start in range(0, n, chunk):
        draws = rng.integers(0, units, size=(min(chunk, n - start), units))
        if batched:
            parts.append(np.asarray(statistic(*(array[draws] for array in arrays)), dtype=float).ravel())
        else:
            parts.append(np.array([statistic(*(array[idx] for array in arrays)) for idx in draws], dtype=float))
    estimates = np.concatenate(parts)
    estimates = estimates[~np.isnan(estimates)]
    if len(estimates) == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


def cohen_kappa_rows(a_codes: np.ndarray, b_codes: np.ndarray, k: int, weights: Weights = None) -> np.ndarray:
    """Cohen's kappa for each row of two (rows, units) arrays of category codes 0..k-1, in
    one pass (for bootstrap_ci(batched=True)); same formula as cohen_kappa_table."""
    a_codes, b_codes = np.atleast_2d(a_codes), np.atleast_2d(b_codes)
    rows, units = a_codes.shape
    flat = (np.arange(rows)[:, None] * k * k + a_codes * k + b_codes).ravel()
    observed = np.bincount(flat, minlength=rows * k * k).reshape(rows, k, k) / units
    expected = observed.sum(axis=2)[:, :, None] * observed.sum(axis=1)[:, None, :]
    i, j = np.indices((k, k))
    w = {None: (i != j), "linear": np.abs(i - j), "quadratic": (i - j) ** 2}[weights].astype(float)
    chance = (w * expected).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(chance == 0, np.nan, 1.0 - (w * observed).sum(axis=(1, 2)) / chance)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho for each row of two (rows, units) arrays (mean ranks for ties): the
    Pearson correlation of the ranks, in one pass (for bootstrap_ci(batched=True))."""
    from scipy.stats import rankdata

    rx, ry = rankdata(np.atleast_2d(x), axis=1), rankdata(np.atleast_2d(y), axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator == 0, np.nan, (rx * ry).sum(axis=1) / denominator)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson (1927) score interval for a proportion successes/trials, 0..1.

    centre = (p + z^2/2n) / (1 + z^2/n), half = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
    (NaN, NaN) for zero trials.
    """
    from scipy.stats import norm

    if trials <= 0:
        return float("nan"), float("nan")
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = successes / trials
    denominator = 1 + z**2 / trials
    centre = (p + z**2 / (2 * trials)) / denominator
    half = z * np.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denominator
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def clopper_pearson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper & Pearson (1934) exact interval from beta quantiles, 0..1; (NaN, NaN) for zero trials."""
    from scipy.stats import beta

    if trials <= 0:
        return float("nan"), float("nan")
    alpha = 1 - confidence
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high
