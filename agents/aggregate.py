"""Aggregation: one consensus per clip from all its annotations and their judge scores.

Everything works on integer-coded arrays of shape (clips, annotators), so 100,000 clips x
5 annotators aggregate in well under a second once tabulated:

- `encode` / `tabulate` turn records into arrays: `matrix[i, w]` is the label index that
  annotator w gave clip i, -1 where it gave none (absent, invalid, error, refused, or
  abstained: an agent with no input holds no opinion, as in `fanout.agreement`).
- `majority_vote(matrix, K)`: share of hard votes per label.
- `weighted_vote(matrix, weights, K, votes=None)`: the same with one weight per answer
  (S_final from the judge), optionally over soft votes (the annotators' label_probabilities).
- `DawidSkene`: EM over per-annotator confusion matrices (A. P. Dawid and A. M. Skene,
  "Maximum likelihood estimation of observer error-rates using the EM algorithm",
  JRSS Series C 28(1), 1979, 20-28), written to follow crowd-kit's
  `crowdkit.aggregation.DawidSkene` (Apache-2.0) step for step: majority-vote
  initialisation, M-step, then `n_iter` rounds of E-step / priors / M-step, stopping when
  the per-answer evidence lower bound gains less than `tol`. tests/test_aggregate.py checks
  it against crowd-kit's published example and against crowd-kit itself.

The consensus distribution (`Consensus.distribution`) is the one of the vote that
`RouteConfig.aggregation` names:

- "weighted" (default): S_final-weighted mean of the annotators' soft votes,
  p(k) = sum_w s_w q_w(k) / sum_w s_w, where q_w is annotator w's label_probabilities
  (one-hot on its label when it gave none; uniform over its `labels` for a multi-label
  answer without probabilities) and s_w its S_final (DEFAULT_WEIGHT where the judge gave
  none; floored at MIN_WEIGHT so clips whose answers all score 0 fall back to equal weights).
  This is the "soft voting" of an ensemble: an annotator unsure between two labels lends
  both half its weight, so confidence reflects the annotators' own doubt.
- "majority": unweighted shares of hard votes.
- "dawid_skene": the Dawid-Skene posterior, fitted across every clip passed in (the run),
  on the primary labels only. Its posteriors are sharper than vote shares (they multiply
  the annotators' likelihoods), so calibrate before relying on `min_confidence` with it.

All three labels are always recorded (`majority_label`, `weighted_label`,
`dawid_skene_label`); `label` is the configured one. Ties go to the label listed first
in the space. `confidence` = p(label); `entropy` = -sum p log p / log K (0..1).

Multi-label: when any valid answer names more than one label, `labels` holds every label
with consensus probability >= MULTI_LABEL_THRESHOLD (0.3: about twice the uniform share
for 7 labels, and at most three labels can pass), the primary label first. Otherwise
`labels` is just (label,).

Cross-modal conflict: each answer is filed under its dominant modality (the offline agents
"text", "acoustic", "visual" under text / audio / visual; other agents under the modality
most of their evidence items cite; no evidence or a tie: none). Each modality's answers
give a weighted soft vote; the clip is flagged when two modalities each back a label with
probability >= CONFLICT_MIN_CONFIDENCE and the labels differ.

Coverage: an answer records the share c (0..1) of the clip its modality covered
(agents.coverage: face presence, voiced seconds, confident words). Its soft vote becomes
c q + (1 - c) / K, so an answer that saw a face in a tenth of the clip lends the
consensus only a tenth of its certainty. Answers without a coverage (LLM endpoints) keep
theirs. Abstentions (status ABSTAINED) never vote and count in `n_abstained`.

`build_consensus` is the record-level entry point; it also routes (routing.route_many),
so every returned Consensus carries a route, its reasons and a review priority.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from merforge.agents.labels import LabelSpace
from merforge.perf import gc_paused, trusted_maker
from merforge.storage.config import RouteConfig
from merforge.storage.records import Annotation, AnnotationStatus, Consensus, JudgeScores

if TYPE_CHECKING:
    from merforge.agents.calibration import WorkspaceCalibration

MODALITIES = ("text", "audio", "visual")
OFFLINE_MODALITY = {"text": "text", "acoustic": "audio", "audio": "audio", "visual": "visual"}
MULTI_LABEL_THRESHOLD = 0.3
CONFLICT_MIN_CONFIDENCE = 0.5
DEFAULT_WEIGHT = 0.5  # an answer the judge did not score counts half
MIN_WEIGHT = 1e-3
AGGREGATIONS = ("weighted", "majority", "dawid_skene")

# answer states in AnnotationTable.state
ABSENT, VALID, INVALID, ABSTAINED = 0, 1, 2, 3

_EPS = 1e-10  # crowd-kit's floor for error-matrix entries and priors


class AggregationError(ValueError):
    """Bad input to an aggregator (shapes, label codes, unknown aggregation)."""


# -- votes ---------------------------------------------------------------------------


def _check_matrix(matrix: np.ndarray, n_labels: int) -> np.ndarray:
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise AggregationError(f"expected a (clips, annotators) label matrix, got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.integer):
        raise AggregationError(f"label matrix must hold integer label codes (-1: no answer), got {matrix.dtype}")
    if matrix.size and (matrix.max() >= n_labels or matrix.min() < -1):
        raise AggregationError(f"label codes must lie in -1..{n_labels - 1}; found {matrix.min()}..{matrix.max()}")
    return matrix


def one_hot(matrix: np.ndarray, n_labels: int) -> np.ndarray:
    """(clips, annotators, K) float array: 1 at each answer's label, all 0 where there is none."""
    matrix = _check_matrix(matrix, n_labels)
    votes = np.zeros(matrix.shape + (n_labels,))
    i, w = np.nonzero(matrix >= 0)
    votes[i, w, matrix[i, w]] = 1.0
    return votes


def _argmax_or_none(proba: np.ndarray) -> np.ndarray:
    labels = proba.argmax(axis=1)
    labels[proba.sum(axis=1) <= 0] = -1
    return labels


def weighted_vote(matrix: np.ndarray, weights: np.ndarray | None, n_labels: int,
                  votes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted vote per clip: (labels (clips,), distribution (clips, K)).

    `weights`: one per annotator (annotators,) or one per answer (clips, annotators); None is
    equal weights. `votes`: soft votes (clips, annotators, K), each row summing to 1 where the
    annotator answered; None uses one-hot hard votes from `matrix`. Clips with no answer get
    label -1 and an all-zero distribution. Ties go to the lowest label code.
    """
    matrix = _check_matrix(matrix, n_labels)
    answered = matrix >= 0
    if weights is None:
        w = answered.astype(float)
    else:
        w = np.broadcast_to(np.asarray(weights, dtype=float), matrix.shape)
        if np.any(np.isnan(w[answered])) or np.any(w[answered] < 0):
            raise AggregationError("weights must be finite and >= 0 where there is an answer")
        w = np.where(answered, w, 0.0)
    if votes is None:
        votes = one_hot(matrix, n_labels)
    elif votes.shape != matrix.shape + (n_labels,):
        raise AggregationError(f"votes must have shape {matrix.shape + (n_labels,)}, got {votes.shape}")
    scores = np.einsum("iw,iwk->ik", w, votes)
    total = scores.sum(axis=1, keepdims=True)
    proba = np.divide(scores, total, out=np.zeros_like(scores), where=total > 0)
    return _argmax_or_none(proba), proba


def majority_vote(matrix: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote per clip: (labels, vote shares (clips, K)); -1 / zeros where nobody answered."""
    matrix = _check_matrix(matrix, n_labels)
    i, w = np.nonzero(matrix >= 0)
    counts = np.bincount(i * n_labels + matrix[i, w], minlength=matrix.shape[0] * n_labels)
    counts = counts.reshape(matrix.shape[0], n_labels).astype(float)
    total = counts.sum(axis=1, keepdims=True)
    proba = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    return _argmax_or_none(proba), proba


def normalised_entropy(proba: np.ndarray) -> np.ndarray:
    """-sum p log p / log K per row, 0..1 (0 for an all-zero row)."""
    k = proba.shape[1]
    if k < 2:
        return np.zeros(proba.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(proba > 0, proba * np.log(proba), 0.0)
    return np.clip(-terms.sum(axis=1) / math.log(k), 0.0, 1.0)


# -- Dawid-Skene -----------------------------------------------------------------------


class DawidSkene:
    """Dawid & Skene (1979) EM over per-annotator confusion matrices, on a label matrix.

    Follows crowd-kit 1.4's `DawidSkene` (same initialisation, update order, floors and
    stopping rule), vectorised with a sparse one-hot of the answers:

    - init: posteriors = majority-vote shares; priors = their mean; errors = M-step.
    - each of `n_iter` rounds: E-step (posterior ∝ prior_c * prod_w e_w[y_w, c], in logs),
      priors = mean posterior, M-step (e_w[k, c] ∝ sum_i [y_iw = k] p_ic, floored at 1e-10
      over the labels the annotator used, normalised over k), then the evidence lower bound
      per answer; stop when it gains less than `tol`.

    `n_iter=0` returns the majority-vote initialisation (crowd-kit's convention, and the
    "iter0" entry of the reference values). Clips nobody answered get the priors as
    posterior and label -1; they do not enter the fit.

    After `fit`: `probas_` (clips, K) posteriors, `labels_` (clips,) argmax (-1: no answer),
    `priors_` (K,), `errors_` (annotators, K observed, K true) with
    errors_[w, k, c] = P(w answers k | truth c) (crowd-kit's orientation; rows of labels an
    annotator never used are 0), `accuracies_` (annotators,) = the posterior-expected share
    of each annotator's answers that equal the true label (NaN for one with no answers),
    `loss_history_`, `n_iter_` (rounds run).
    """

    def __init__(self, n_iter: int = 100, tol: float = 1e-5):
        if n_iter < 0:
            raise AggregationError(f"n_iter must be >= 0, got {n_iter}")
        self.n_iter = n_iter
        self.tol = tol

    def fit(self, matrix: np.ndarray, n_labels: int) -> "DawidSkene":
        matrix = _check_matrix(matrix, n_labels)
        n_items, n_workers = matrix.shape
        k = n_labels
        rows, workers = np.nonzero(matrix >= 0)
        answers = matrix[rows, workers]
        active = np.unique(rows)
        self.probas_ = np.zeros((n_items, k))
        self.labels_ = np.full(n_items, -1)
        self.errors_ = np.zeros((n_workers, k, k))
        self.accuracies_ = np.full(n_workers, np.nan)
        self.loss_history_: list[float] = []
        self.n_iter_ = 0
        if active.size == 0:
            self.priors_ = np.full(k, 1.0 / k)
            return self
        local = np.searchsorted(active, rows)
        n = active.size
        # one-hot answers: row = clip, column = (annotator, answered label)
        y = sparse.csr_matrix((np.ones(rows.size), (local, workers * k + answers)), shape=(n, n_workers * k))
        y_t = y.T.tocsr()
        used = np.zeros((n_workers, k), dtype=bool)
        used[workers, answers] = True
        answers_per_item = np.bincount(local, minlength=n).astype(float)

        def m_step(probas: np.ndarray) -> np.ndarray:
            errors = np.asarray(y_t @ probas).reshape(n_workers, k, k)
            errors = np.where(used[:, :, None], np.maximum(errors, _EPS), 0.0)
            total = errors.sum(axis=1, keepdims=True)  # 0 only for an annotator with no answers
            return np.divide(errors, total, out=np.zeros_like(errors), where=total > 0)

        def log_errors(errors: np.ndarray) -> np.ndarray:
            with np.errstate(divide="ignore"):
                return np.where(used[:, :, None], np.log(np.where(errors > 0, errors, 1.0)), 0.0).reshape(-1, k)

        # y @ log_errors(errors) of the errors the last lower bound was taken at: the next E-step's too
        answered_log: list = [None, None]  # [errors, y @ log_errors(errors)]

        def answers_log_likelihood(errors: np.ndarray) -> np.ndarray:
            if answered_log[0] is errors:
                return answered_log[1]
            product = y @ log_errors(errors)
            answered_log[:] = [errors, product]
            return product

        def e_step(priors: np.ndarray, errors: np.ndarray) -> np.ndarray:
            log_lik = np.log(np.maximum(priors, _EPS)) + answers_log_likelihood(errors)
            log_lik -= log_lik.max(axis=1, keepdims=True)
            lik = np.exp(log_lik, out=log_lik)
            lik /= lik.sum(axis=1, keepdims=True)
            return lik

        def lower_bound(probas: np.ndarray, priors: np.ndarray, errors: np.ndarray) -> float:
            # crowd-kit adds log prior once per answer (not once per clip); kept for the same stopping point
            joint = float(np.sum(np.multiply(probas, answers_log_likelihood(errors), out=scratch)))
            joint += float(answers_per_item @ (probas @ np.log(np.maximum(priors, _EPS))))
            clipped = np.maximum(probas, _EPS)
            entropy = -float(np.sum(np.multiply(clipped, np.log(clipped, out=scratch), out=scratch)))
            return (joint + entropy) / rows.size

        counts = np.bincount(local * k + answers, minlength=n * k).reshape(n, k).astype(float)
        probas = counts / counts.sum(axis=1, keepdims=True)
        scratch = np.empty_like(probas)
        priors = probas.mean(axis=0)
        errors = m_step(probas)
        loss = -np.inf
        for _ in range(self.n_iter):
            probas = e_step(priors, errors)
            priors = probas.mean(axis=0)
            errors = m_step(probas)
            self.n_iter_ += 1
            new_loss = lower_bound(probas, priors, errors)
            self.loss_history_.append(new_loss)
            if new_loss - loss < self.tol:
                break
            loss = new_loss

        self.priors_ = priors
        self.errors_ = errors
        self.probas_[:] = priors
        self.probas_[active] = probas
        self.labels_[active] = probas.argmax(axis=1)
        per_worker = np.bincount(workers, minlength=n_workers)
        hits = np.bincount(workers, weights=probas[local, answers], minlength=n_workers)
        self.accuracies_ = np.divide(hits, per_worker, out=np.full(n_workers, np.nan), where=per_worker > 0)
        return self

    def predict_proba(self) -> np.ndarray:
        """Posteriors (clips, K) from the last `fit`."""
        return self.probas_

    def predict(self) -> np.ndarray:
        return self.labels_

    def fit_predict_proba(self, matrix: np.ndarray, n_labels: int) -> np.ndarray:
        return self.fit(matrix, n_labels).probas_


# -- records -> arrays ------------------------------------------------------------------


@dataclass
class AnnotationTable:
    """Annotations as arrays over (clips, annotators[, labels]). NaN marks a missing number."""

    clip_ids: list[str]
    annotator_ids: list[str]
    labels: tuple[str, ...]
    matrix: np.ndarray  # (n, W) int: label code, -1 where no valid answer
    state: np.ndarray  # (n, W) int8: ABSENT / VALID / INVALID / ABSTAINED
    votes: np.ndarray  # (n, W, K) hard votes: one-hot, or uniform over a multi-label answer's set
    soft: np.ndarray  # (n, W, K) soft votes: label_probabilities (normalised), else `votes`
    s_final: np.ndarray  # (n, W) judge S_final, NaN where unscored
    modality: np.ndarray  # (n, W) int8 index into MODALITIES, -1: none
    injection: np.ndarray  # (n,) bool: some answer flagged instruction-like text
    injection_reason: list[str]
    intensity: np.ndarray  # (n, W)
    valence: np.ndarray
    arousal: np.ndarray
    multi_label: bool = False
    coverage: np.ndarray | None = None  # (n, W) share of the clip the answer's modality covered; NaN: not measured

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    @classmethod
    def from_arrays(cls, matrix: np.ndarray, labels: Sequence[str], clip_ids: Sequence[str] | None = None,
                    annotator_ids: Sequence[str] | None = None, s_final: np.ndarray | None = None,
                    soft: np.ndarray | None = None, modality: np.ndarray | None = None,
                    invalid: np.ndarray | None = None, injection: np.ndarray | None = None) -> "AnnotationTable":
        """A table straight from arrays (no records): the fast path for large synthetic or
        stored runs. `invalid` (n, W) bool marks invalid answers (their matrix entry must be -1);
        `soft` defaults to one-hot votes; `modality` holds indices into MODALITIES (-1: none)."""
        labels = tuple(labels)
        matrix = _check_matrix(np.asarray(matrix), len(labels))
        n, n_w = matrix.shape
        state = np.where(matrix >= 0, VALID, ABSENT).astype(np.int8)
        if invalid is not None:
            state[np.asarray(invalid, dtype=bool) & (matrix < 0)] = INVALID
        votes = one_hot(matrix, len(labels))
        nan = np.full((n, n_w), np.nan)
        return cls(
            clip_ids=list(clip_ids) if clip_ids is not None else [f"clip{i}" for i in range(n)],
            annotator_ids=list(annotator_ids) if annotator_ids is not None else [f"a{w}" for w in range(n_w)],
            labels=labels, matrix=matrix, state=state, votes=votes, soft=votes if soft is None else soft,
            s_final=nan.copy() if s_final is None else np.asarray(s_final, dtype=float),
            modality=np.full((n, n_w), -1, dtype=np.int8) if modality is None else np.asarray(modality, np.int8),
            injection=np.zeros(n, dtype=bool) if injection is None else np.asarray(injection, dtype=bool),
            injection_reason=[""] * n, intensity=nan, valence=nan.copy(), arousal=nan.copy())


def dominant_modality(annotation: Annotation) -> str | None:
    """text / audio / visual: the offline agent's own modality, else the one most evidence cites."""
    own = OFFLINE_MODALITY.get(annotation.annotator_id)
    if own and annotation.endpoint in ("", "offline"):
        return own
    return _most_cited(tuple([item.modality for item in annotation.evidence]))


@lru_cache(maxsize=10_000)
def _most_cited(cited: tuple[str, ...]) -> str | None:
    """The modality cited most often; None when none is, or when two tie."""
    counts = {m: 0 for m in MODALITIES}
    for modality in cited:
        counts[modality] += 1
    best = max(counts.values())
    if best == 0 or sum(1 for c in counts.values() if c == best) > 1:
        return None
    return max(counts, key=counts.get)


def _dominant_code(annotation: Annotation) -> int:
    """MODALITIES index of `dominant_modality(annotation)`, -1 for none."""
    modality = dominant_modality(annotation)
    return -1 if modality is None else _MODALITY_CODE[modality]


_MODALITY_CODE = {m: c for c, m in enumerate(MODALITIES)}


def _label_code(raw: str | None, index: dict[str, int], space: LabelSpace | None) -> int:
    if not raw:
        return -1
    code = index.get(raw)
    if code is None and space is not None:
        code = index.get(space.normalise(raw) or "")
    return -1 if code is None else code


def tabulate(annotations_by_clip: Mapping[str, Sequence[Annotation]],
             scores_by_annotation: Mapping[str, JudgeScores] | None = None,
             space: LabelSpace | None = None, labels: Sequence[str] | None = None) -> AnnotationTable:
    """Arrays of every answer. Label order: `labels`, else the space's, else sorted labels seen.

    An answer is VALID when its status is OK and its label is in the space (synonyms
    normalised); INVALID when it is not (bad status or label outside the space); ABSTAINED
    when the agent said it had nothing to judge (status ABSTAINED). Clips keep the mapping's
    order; annotators are sorted by id. When one annotator answered a clip twice, a valid
    answer beats an invalid one, otherwise the later one wins.
    """
    with gc_paused():
        return _tabulate(annotations_by_clip, scores_by_annotation, space, labels)


def _tabulate(annotations_by_clip: Mapping[str, Sequence[Annotation]],
              scores_by_annotation: Mapping[str, JudgeScores] | None,
              space: LabelSpace | None, labels: Sequence[str] | None) -> AnnotationTable:
    scores_by_annotation = scores_by_annotation or {}
    clip_ids = list(annotations_by_clip)
    if labels is None:
        if space is not None:
            labels = space.labels
        else:
            labels = sorted({a.label for anns in annotations_by_clip.values() for a in anns if a.label})
    labels = tuple(labels)
    index = {label: k for k, label in enumerate(labels)}
    annotator_ids = sorted({a.annotator_id for anns in annotations_by_clip.values() for a in anns})
    column = {a: w for w, a in enumerate(annotator_ids)}
    n, n_w, k = len(clip_ids), len(annotator_ids), len(labels)
    injection = np.zeros(n, dtype=bool)
    injection_reason = [""] * n
    nan = math.nan
    ok = AnnotationStatus.OK
    abstained = AnnotationStatus.ABSTAINED
    # one slot per (clip, annotator), at i * W + w; a valid answer beats an invalid one, otherwise the later
    # one wins (all of a slot's fields are the later answer's)
    size = n * n_w
    state_slots = bytearray(size)  # ABSENT
    code_slots = [-1] * size
    s_final_slots = [nan] * size
    modality_slots = [-1] * size
    intensity_slots = [nan] * size
    valence_slots = [nan] * size
    arousal_slots = [nan] * size
    coverage_slots = [nan] * size
    prob_rows: dict[int, list[float]] = {}
    label_sets: dict[int, list[int]] = {}
    code_of = index.get
    dominant = _dominant_code
    for i, clip in enumerate(clip_ids):
        base = i * n_w
        for a in annotations_by_clip[clip]:
            key = base + column[a.annotator_id]
            if a.injection_flag and not injection[i]:
                injection[i] = True
                injection_reason[i] = a.injection_reason
            if a.status == ok:
                label = a.label
                code = code_of(label, -2) if label else -1
                if code == -2:
                    code = _label_code(label, index, space)
            else:
                code = -1
            if code < 0:
                if state_slots[key] != VALID:
                    state_slots[key] = ABSTAINED if a.status == abstained else INVALID
                continue
            state_slots[key] = VALID
            code_slots[key] = code
            if scores_by_annotation:
                score = scores_by_annotation.get(a.id)
                s_final_slots[key] = score.s_final if score is not None and score.status == "ok" \
                    and score.s_final is not None else nan
            modality_slots[key] = dominant(a)
            value = a.intensity
            intensity_slots[key] = nan if value is None else value
            value = a.valence
            valence_slots[key] = nan if value is None else value
            value = a.arousal
            arousal_slots[key] = nan if value is None else value
            value = a.coverage
            coverage_slots[key] = nan if value is None else value
            probabilities = a.label_probabilities
            if not probabilities:
                if key in prob_rows:
                    del prob_rows[key]
            elif len(probabilities) == k and tuple(probabilities) == labels:
                prob_rows[key] = list(probabilities.values())
            else:  # keys out of order, missing, or synonyms ("rage"): map each onto the space
                row = [0.0] * k
                for name, value in probabilities.items():
                    c = code_of(name, -2) if name else -1
                    if c == -2:
                        c = _label_code(name, index, space)
                    if c >= 0:
                        row[c] += value
                prob_rows[key] = row
            if len(a.labels) > 1:
                label_sets[key] = sorted({c for c in (_label_code(x, index, space) for x in a.labels) if c >= 0}
                                         | {code})
            elif key in label_sets:
                del label_sets[key]

    state = np.frombuffer(state_slots, dtype=np.int8).copy()
    matrix = np.array(code_slots, dtype=np.int64)
    s_final_arr = np.array(s_final_slots, dtype=float)
    modality = np.array(modality_slots, dtype=np.int8)
    numbers = np.array([intensity_slots, valence_slots, arousal_slots], dtype=float)
    soft = np.zeros((size, k))
    if prob_rows:
        rows = np.fromiter(chain.from_iterable(prob_rows.values()), dtype=float, count=len(prob_rows) * k)
        soft[np.fromiter(prob_rows, dtype=np.int64, count=len(prob_rows))] = np.clip(rows.reshape(-1, k), 0, None)
    sets = [(key, codes) for key, codes in label_sets.items() if len(codes) > 1]
    multi_label = bool(sets)
    matrix = matrix.reshape(n, n_w)
    votes = one_hot(matrix, k).reshape(size, k)
    for key, codes in sets:
        votes[key] = 0.0
        votes[key, codes] = 1.0 / len(codes)
    votes = votes.reshape(n, n_w, k)
    soft = soft.reshape(n, n_w, k)
    total = soft.sum(axis=2, keepdims=True)
    # np.where(total > 0, soft / np.where(total > 0, total, 1.0), votes), in place (no (n, W, K) temporaries)
    positive = total > 0
    np.divide(soft, np.where(positive, total, 1.0), out=soft)
    np.copyto(soft, votes, where=~positive)
    coverage = np.array(coverage_slots, dtype=float)
    shrink = np.flatnonzero(~np.isnan(coverage) & (coverage < 1.0))
    if shrink.size:  # an answer that covered a share c of the clip keeps c of its soft vote; the rest is uniform
        flat = soft.reshape(size, k)
        c = np.clip(coverage[shrink], 0.0, 1.0)[:, None]
        flat[shrink] = c * flat[shrink] + (1.0 - c) / k
    coverage = coverage.reshape(n, n_w)
    state, s_final_arr, modality = state.reshape(n, n_w), s_final_arr.reshape(n, n_w), modality.reshape(n, n_w)
    numbers = numbers.reshape(3, n, n_w)
    return AnnotationTable(clip_ids=clip_ids, annotator_ids=annotator_ids, labels=labels, matrix=matrix, state=state,
                           votes=votes, soft=soft, s_final=s_final_arr, modality=modality, injection=injection,
                           injection_reason=injection_reason, intensity=numbers[0], valence=numbers[1],
                           arousal=numbers[2], multi_label=multi_label, coverage=coverage)



def encode(annotations: Sequence[Annotation], space: LabelSpace | None = None,
           labels: Sequence[str] | None = None) -> tuple[list[str], list[str], tuple[str, ...], np.ndarray]:
    """(clip_ids, annotator_ids, labels, matrix): the label matrix of a flat list of annotations,
    -1 where an annotator gave no valid answer (see `tabulate`)."""
    by_clip: dict[str, list[Annotation]] = {}
    for a in annotations:
        by_clip.setdefault(a.clip_id, []).append(a)
    table = tabulate(by_clip, None, space, labels)
    return table.clip_ids, table.annotator_ids, table.labels, table.matrix


# -- consensus --------------------------------------------------------------------------


@dataclass
class ConsensusTable:
    """Consensus for many clips as arrays; routing fills route / route_reasons / priority."""

    clip_ids: list[str]
    labels: tuple[str, ...]
    aggregation: str
    label: np.ndarray  # (n,) chosen label code, -1: none
    distribution: np.ndarray  # (n, K)
    confidence: np.ndarray
    entropy: np.ndarray
    margin: np.ndarray  # p(top) - p(second)
    chosen: np.ndarray  # (n, K) bool: the chosen label set
    majority_label: np.ndarray
    weighted_label: np.ndarray
    dawid_skene_label: np.ndarray
    conflict: np.ndarray  # (n,) bool
    conflict_reason: list[str]
    n_valid: np.ndarray  # answers that voted
    n_invalid: np.ndarray  # invalid / refused / error answers
    n_answers: np.ndarray  # every answer, abstentions included
    n_abstained: np.ndarray  # answers that had nothing to judge
    n_agreeing: np.ndarray  # valid answers whose label is the chosen one
    annotator_ids: list[str]
    s_final_agreeing: np.ndarray  # mean S_final of valid answers whose label is the chosen one; NaN: none scored
    injection: np.ndarray
    injection_reason: list[str]
    intensity: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    multi_label: bool = False
    dawid_skene: DawidSkene | None = None
    route: np.ndarray | None = None  # (n,) int8: index into ROUTES
    route_reasons: list[tuple[str, ...]] = field(default_factory=list)
    priority: np.ndarray | None = None
    agreeing_precision: np.ndarray | None = None  # (n, W) with a calibration: each agreeing answer's own
    # calibrated precision, P(truth = label | that answer alone); NaN elsewhere

    def to_records(self) -> dict[str, Consensus]:
        """One `Consensus` per clip (routed fields included when routing ran)."""
        with gc_paused():
            return self._records()

    def _records(self) -> dict[str, Consensus]:
        from merforge.agents.routing import ROUTES

        names = self.labels
        out: dict[str, Consensus] = {}
        # the columns as Python values, as float(), int() and bool() of each item make them
        def floats(values: np.ndarray) -> list:
            return np.asarray(values, dtype=float).tolist()

        def ints(values: np.ndarray) -> list:
            return np.asarray(values).astype(np.int64, copy=False).tolist()

        dist = self.distribution.tolist()
        chosen_sets = np.asarray(self.chosen, dtype=bool).tolist()
        labels = ints(self.label)
        confidence, entropy = floats(self.confidence), floats(self.entropy)
        majority, weighted, ds = ints(self.majority_label), ints(self.weighted_label), ints(self.dawid_skene_label)
        conflict = np.asarray(self.conflict, dtype=bool).tolist()
        intensity, valence, arousal = floats(self.intensity), floats(self.valence), floats(self.arousal)
        routed = self.route is not None
        if routed:
            routes, priority, route_reasons = ints(self.route), floats(self.priority), self.route_reasons
        else:
            default_route, default_reasons, default_priority = (
                _CONSENSUS_DEFAULTS["route"], _CONSENSUS_DEFAULTS["route_reasons"], _CONSENSUS_DEFAULTS["priority"])
        conflict_reason = self.conflict_reason
        # clips whose chosen set holds more than their label (multi-label): the rest have labels (label,) or ()
        others = self.chosen.copy()
        has = self.label >= 0
        others[np.flatnonzero(has), self.label[has]] = False
        more = others.any(axis=1)
        rows = np.flatnonzero(more)
        order = dict(zip(rows.tolist(), np.argsort(-self.distribution[rows], axis=1, kind="stable").tolist()))
        more = more.tolist()
        make = _MAKE_CONSENSUS if _CONSENSUS_FAST else _construct_consensus
        isnan = math.isnan
        for i, clip in enumerate(self.clip_ids):
            code = labels[i]
            if more[i]:
                chosen = chosen_sets[i]
                chosen_labels = tuple(names[c] for c in ([code] if code >= 0 else [])
                                      + [c for c in order[i] if chosen[c] and c != code])
            else:
                chosen_labels = (names[code],) if code >= 0 else ()
            out[clip] = make({  # every field, in field order
                "clip_id": clip, "label": names[code] if code >= 0 else None,
                "labels": chosen_labels,
                "distribution": {x: p for x, p in zip(names, dist[i]) if p > 0},
                "confidence": confidence[i], "entropy": entropy[i],
                "majority_label": names[majority[i]] if majority[i] >= 0 else None,
                "weighted_label": names[weighted[i]] if weighted[i] >= 0 else None,
                "dawid_skene_label": names[ds[i]] if ds[i] >= 0 else None,
                "conflict": conflict[i], "conflict_reason": conflict_reason[i],
                "route": ROUTES[routes[i]] if routed else default_route,
                "route_reasons": route_reasons[i] if routed else default_reasons,
                "priority": priority[i] if routed else default_priority,
                "intensity": None if isnan(intensity[i]) else intensity[i],
                "valence": None if isnan(valence[i]) else valence[i],
                "arousal": None if isnan(arousal[i]) else arousal[i]})
        return out


_CONSENSUS_DEFAULTS = {name: f.get_default(call_default_factory=True) for name, f in Consensus.model_fields.items()
                       if not f.is_required()}


def _construct_consensus(values: dict) -> Consensus:
    return Consensus.model_construct(**values)


# Consensus records are made from to_records' literal (every field, in field order) as model_construct
# makes them, without its per-field alias look-ups; model_construct where that literal's order is not
# the model's, or where the record could need more than its __dict__ (trusted_maker says None)
_MAKE_CONSENSUS = trusted_maker(Consensus, tuple(Consensus.model_fields), complete=True)
_CONSENSUS_FAST = _MAKE_CONSENSUS is not None and tuple(Consensus.model_fields) == (
    "clip_id", "label", "labels", "distribution", "confidence", "entropy", "majority_label", "weighted_label",
    "dawid_skene_label", "conflict", "conflict_reason", "route", "route_reasons", "priority", "intensity",
    "valence", "arousal")


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    have = ~np.isnan(values) & (weights > 0)
    total = np.where(have, weights, 0.0).sum(axis=1)
    summed = np.where(have, values * weights, 0.0).sum(axis=1)
    return np.divide(summed, total, out=np.full(values.shape[0], np.nan), where=total > 0)


def _modality_conflicts(table: AnnotationTable, weights: np.ndarray, min_confidence: float,
                        calibration: "WorkspaceCalibration | None" = None) -> tuple[np.ndarray, list[str]]:
    """Per modality a vote of its answers (with a calibration: its agents' posterior, so an
    agent whose answer carries no information, such as "neutral" from words that carry no
    emotion, backs nothing), and the clips where two modalities confidently differ."""
    n = len(table.clip_ids)
    mod_label = np.full((n, len(MODALITIES)), -1)
    mod_conf = np.zeros((n, len(MODALITIES)))
    for m in range(len(MODALITIES)):
        mine = (table.modality == m) & (table.state == VALID)
        if calibration is not None:
            proba = calibration.posterior(np.where(mine, table.matrix, -1), table.annotator_ids, table.soft)
        else:
            w = np.where(mine, weights, 0.0)
            scores = np.einsum("iw,iwk->ik", w, table.soft)
            total = scores.sum(axis=1, keepdims=True)
            proba = np.divide(scores, total, out=np.zeros_like(scores), where=total > 0)
        mod_label[:, m] = _argmax_or_none(proba)
        mod_conf[:, m] = proba.max(axis=1)
    confident = (mod_label >= 0) & (mod_conf >= min_confidence)
    pairs = [(a, b) for a in range(len(MODALITIES)) for b in range(a + 1, len(MODALITIES))]
    conflict = np.zeros(n, dtype=bool)
    for a, b in pairs:
        conflict |= confident[:, a] & confident[:, b] & (mod_label[:, a] != mod_label[:, b])
    reasons = [""] * n
    rows = np.flatnonzero(conflict)  # per clip in plain Python (numpy scalars one by one are slow): the same values
    names, modalities = table.labels, range(len(MODALITIES))
    with gc_paused():
        for i, labels, confidences, sure in zip(rows.tolist(), mod_label[rows].tolist(), mod_conf[rows].tolist(),
                                                confident[rows].tolist()):
            said = [f"{MODALITIES[m]} says {names[labels[m]]} ({confidences[m]:.2f})" for m in modalities if sure[m]]
            reasons[i] = "modalities conflict: " + ", ".join(said)
    return conflict, reasons


def consensus_table(table: AnnotationTable, aggregation: str = "weighted",
                    multi_label_threshold: float = MULTI_LABEL_THRESHOLD,
                    conflict_min_confidence: float = CONFLICT_MIN_CONFIDENCE,
                    dawid_skene: DawidSkene | None = None,
                    calibration: "WorkspaceCalibration | None" = None) -> ConsensusTable:
    """Consensus arrays for every clip of `table` (see the module docstring for each vote).

    Dawid-Skene is fitted on the whole table (one model for the run) unless a fitted-to-
    this-table `dawid_skene` is passed. With a `calibration` (agents.calibration, fitted on
    labelled clips over the same labels) the distribution is its posterior, whatever
    `aggregation` says: the agents' confusions measured against truth replace their
    self-reported and run-estimated reliability, and `confidence` is the calibrated precision
    of the label (WorkspaceCalibration.decide); the table's `aggregation` reads "calibrated".
    """
    if aggregation not in AGGREGATIONS:
        raise AggregationError(f"aggregation {aggregation!r} is not known; choose one of {', '.join(AGGREGATIONS)}")
    k = table.n_labels
    valid = table.state == VALID
    weights = np.where(valid, np.maximum(np.nan_to_num(table.s_final, nan=DEFAULT_WEIGHT), MIN_WEIGHT), 0.0)
    majority_label, majority_dist = weighted_vote(table.matrix, None, k, votes=table.votes)
    weighted_label, weighted_dist = weighted_vote(table.matrix, weights, k, votes=table.soft)
    ds = dawid_skene if dawid_skene is not None else DawidSkene().fit(table.matrix, k)
    ds_dist = np.where(valid.any(axis=1, keepdims=True), ds.probas_, 0.0)
    ds_label = ds.labels_
    dist, label = {"weighted": (weighted_dist, weighted_label), "majority": (majority_dist, majority_label),
                   "dawid_skene": (ds_dist, ds_label)}[aggregation]
    if calibration is not None:
        if tuple(calibration.labels) != tuple(table.labels):
            raise AggregationError(f"the calibration was fitted on labels {', '.join(calibration.labels)}, not on "
                                   f"{', '.join(table.labels)}; run `merforge calibrate` again for this label space")
        dist, label, calibrated_confidence, agreeing_precision = calibration.decide(
            np.where(table.state == VALID, table.matrix, -1), table.annotator_ids, table.soft)
        aggregation = "calibrated"
    else:
        agreeing_precision = calibrated_confidence = None
    n = len(table.clip_ids)
    rows = np.arange(n)
    confidence = np.where(label >= 0, dist[rows, np.maximum(label, 0)], 0.0)
    if calibrated_confidence is not None:  # the calibrated precision of the label (WorkspaceCalibration.decide)
        confidence = calibrated_confidence
    top2 = -np.partition(-dist, 1, axis=1)[:, :2] if k > 1 else np.hstack([dist, np.zeros((n, 1))])
    margin = top2[:, 0] - top2[:, 1]
    chosen = np.zeros((n, k), dtype=bool)
    chosen[rows[label >= 0], label[label >= 0]] = True
    if table.multi_label:
        chosen |= dist >= multi_label_threshold
    agreeing = valid & (table.matrix == label[:, None]) & (label[:, None] >= 0)
    s_final_agreeing = _weighted_mean(np.where(agreeing, table.s_final, np.nan), agreeing.astype(float))
    conflict, conflict_reason = _modality_conflicts(table, weights, conflict_min_confidence, calibration)
    return ConsensusTable(
        clip_ids=table.clip_ids, labels=table.labels, aggregation=aggregation, label=label, distribution=dist,
        confidence=confidence, entropy=normalised_entropy(dist), margin=margin, chosen=chosen,
        majority_label=majority_label, weighted_label=weighted_label, dawid_skene_label=ds_label,
        conflict=conflict, conflict_reason=conflict_reason, n_valid=valid.sum(axis=1),
        n_invalid=(table.state == INVALID).sum(axis=1), n_answers=(table.state != ABSENT).sum(axis=1),
        n_abstained=(table.state == ABSTAINED).sum(axis=1), n_agreeing=agreeing.sum(axis=1),
        annotator_ids=table.annotator_ids, agreeing_precision=agreeing_precision,
        s_final_agreeing=s_final_agreeing, injection=table.injection, injection_reason=table.injection_reason,
        intensity=_weighted_mean(table.intensity, weights), valence=_weighted_mean(table.valence, weights),
        arousal=_weighted_mean(table.arousal, weights), multi_label=table.multi_label, dawid_skene=ds)


def build_consensus(annotations_by_clip: Mapping[str, Sequence[Annotation]],
                    scores_by_annotation: Mapping[str, JudgeScores] | None, space: LabelSpace,
                    route_config: RouteConfig | None = None, route: bool = True,
                    calibration: "WorkspaceCalibration | None" = None) -> dict[str, Consensus]:
    """One routed `Consensus` per clip: tabulate, aggregate (route_config.aggregation picks the
    label), then `routing.route_many` (route, reasons, priority). With route=False the records
    keep the default route (review) and no reasons."""
    from merforge.agents.routing import route_many

    route_config = route_config or RouteConfig()
    table = tabulate(annotations_by_clip, scores_by_annotation, space)
    result = consensus_table(table, route_config.aggregation, calibration=calibration)
    if route:
        route_many(result, route_config, calibration)
    return result.to_records()


__all__ = [
    "AggregationError", "AnnotationTable", "ConsensusTable", "DawidSkene", "MODALITIES",
    "build_consensus", "consensus_table", "dominant_modality", "encode", "majority_vote", "normalised_entropy",
    "gc_paused", "one_hot", "tabulate", "weighted_vote",
]
