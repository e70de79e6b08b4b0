"""Categorical speech emotion from eGeMAPS functionals: the acoustic specialist's classifier.

Features are the 88 openSMILE eGeMAPSv02 functionals of a clip (`ProsodyStats.egemaps`,
computed by `preprocess.prosody.egemaps_functionals` over the clip's audio; Eyben et
al., "The Geneva Minimalistic Acoustic Parameter Set (GeMAPS) for Voice Research and
Affective Computing", IEEE Trans. Affective Computing 7(2), 2016). Each is standardised
with the training mean and sd, and a linear softmax classifier gives a probability per
emotion:

    z = (x - mean) / scale;  p = softmax(W z + b)

W and b come from one of the `classifier_candidates` (scikit-learn multinomial logistic
regression with balanced class weights, or shrinkage LDA with equal priors), chosen by
held-out UAR in `merforge.agents.train_speech_emotion`, which also writes the model card.
The model is stored as JSON (no pickle): feature names, means, scales, classes,
coefficients, intercepts, the digest of the training rows and the held-out results (see
`load_speech_emotion_model`).

Missing features: openSMILE leaves some functionals undefined on some input (they are
omitted from `ProsodyStats.egemaps`). A missing feature enters at its training mean
(z = 0, no contribution), and `missing_features` names them so the answer can say so.
When more than `MAX_MISSING_SHARE` of the model's features are missing (eGeMAPS turned
off, or not speech), `predict_proba` raises `MissingFeaturesError` instead of guessing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from merforge.errors import MerforgeError

EMOTIONS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
MODEL_FILENAME = "speech_emotion_v1.json"
SPEECH_EMOTION_MODEL_PATH = Path(__file__).parent / "models" / MODEL_FILENAME
MODEL_FORMAT = "merforge-speech-emotion"
FORMAT_VERSION = 1
MAX_MISSING_SHARE = 0.25
DEFAULT_CLASSIFIER = "logistic-C0.1"


class SpeechEmotionError(MerforgeError):
    """The speech-emotion model cannot be fitted, loaded or applied."""


class SpeechEmotionModelError(SpeechEmotionError):
    """The model file is missing or malformed."""


class MissingFeaturesError(SpeechEmotionError):
    """Too few of the model's eGeMAPS features were measured on a clip."""


# -- classifiers --------------------------------------------------------------------------


def _logistic(c: float):
    def make():
        from sklearn.linear_model import LogisticRegression

        # lbfgs on 7 classes is the multinomial (softmax) model; balanced weights because
        # URDU has 4 of the 7 emotions, so classes are not equally frequent overall.
        return LogisticRegression(C=c, class_weight="balanced", max_iter=10_000)

    return make


def _shrinkage_lda():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    # Ledoit-Wolf shrinkage of the pooled covariance; equal priors play the part of
    # balanced class weights. Its multi-class probabilities are softmax(decision_function).
    return _EqualPriorLDA(LinearDiscriminantAnalysis)


class _EqualPriorLDA:
    """LinearDiscriminantAnalysis with equal priors over the classes present in training."""

    def __init__(self, cls):
        self._cls = cls
        self.model = None

    def fit(self, z: np.ndarray, y: np.ndarray) -> "_EqualPriorLDA":
        classes = np.unique(y)
        self.model = self._cls(solver="lsqr", shrinkage="auto", priors=np.full(classes.size, 1.0 / classes.size))
        self.model.fit(z, y)
        self.classes_, self.coef_, self.intercept_ = self.model.classes_, self.model.coef_, self.model.intercept_
        return self


CLASSIFIERS = {
    "logistic-C0.01": ("multinomial logistic regression, balanced class weights, L2 C=0.01", _logistic(0.01)),
    "logistic-C0.1": ("multinomial logistic regression, balanced class weights, L2 C=0.1", _logistic(0.1)),
    "logistic-C1": ("multinomial logistic regression, balanced class weights, L2 C=1", _logistic(1.0)),
    "lda-shrinkage": ("linear discriminant analysis, Ledoit-Wolf shrinkage, equal priors", _shrinkage_lda),
}


def classifier_candidates() -> dict[str, str]:
    """Name -> description of the classifiers `fit_speech_emotion` can fit and store."""
    return {name: description for name, (description, _) in CLASSIFIERS.items()}


# -- features -----------------------------------------------------------------------------


def feature_matrix(features: Sequence[Mapping[str, float]], names: Sequence[str],
                   means: Sequence[float] | None = None) -> np.ndarray:
    """Rows of eGeMAPS dicts -> an (n, len(names)) float matrix; a missing or non-finite
    value becomes `means[j]` (NaN when `means` is None)."""
    fill = np.full(len(names), np.nan) if means is None else np.asarray(means, dtype=np.float64)
    matrix = np.tile(fill, (len(features), 1))
    for i, row in enumerate(features):
        for j, name in enumerate(names):
            value = row.get(name)
            if value is not None and math.isfinite(value):
                matrix[i, j] = float(value)
    return matrix


def missing_features(model: Mapping, egemaps: Mapping[str, float]) -> list[str]:
    """The model's features that `egemaps` lacks or leaves non-finite."""
    return [name for name in model["features"]
            if egemaps.get(name) is None or not math.isfinite(egemaps[name])]


# -- fit ----------------------------------------------------------------------------------


def fit_speech_emotion(features: Sequence[Mapping[str, float]], labels: Sequence[str],
                       classifier: str = DEFAULT_CLASSIFIER, names: Sequence[str] | None = None) -> dict:
    """Fit a classifier (a `classifier_candidates` name) on eGeMAPS dicts and their
    emotion labels (`EMOTIONS`); returns the JSON-ready model (without training
    provenance, which `train_speech_emotion` adds).

    `names`: the features to use, default every name seen in `features` (sorted). A
    missing value is imputed with the feature's mean over the rows that have it. Raises
    SpeechEmotionError for an unknown classifier or label, fewer than two classes, a
    feature no row has, or unequal lengths.
    """
    if classifier not in CLASSIFIERS:
        raise SpeechEmotionError(f"unknown classifier {classifier!r}; choose from {', '.join(CLASSIFIERS)}")
    if len(features) != len(labels):
        raise SpeechEmotionError(f"{len(features)} feature rows but {len(labels)} labels")
    unknown = sorted(set(labels) - set(EMOTIONS))
    if unknown:
        raise SpeechEmotionError(f"label(s) {', '.join(unknown)} are not among {', '.join(EMOTIONS)}")
    if len(set(labels)) < 2:
        raise SpeechEmotionError(f"need at least two emotions to fit a classifier, got {sorted(set(labels))}")
    names = sorted({name for row in features for name in row}) if names is None else list(names)
    x = feature_matrix(features, names)
    measured = np.isfinite(x)
    if not measured.any(axis=0).all():
        absent = [name for name, seen in zip(names, measured.any(axis=0)) if not seen]
        raise SpeechEmotionError(f"no training row has the feature(s) {', '.join(absent[:5])}")
    means = np.nanmean(x, axis=0)
    x = np.where(measured, x, means)
    scales = x.std(axis=0)
    scales = np.where(scales > 0, scales, 1.0)
    y = np.asarray(labels)
    estimator = CLASSIFIERS[classifier][1]().fit((x - means) / scales, y)
    classes = [str(c) for c in estimator.classes_]
    coefficients, intercepts = np.asarray(estimator.coef_), np.asarray(estimator.intercept_)
    if len(classes) == 2 and coefficients.shape[0] == 1:
        # Two classes: scikit-learn stores the log-odds of the second; softmax([0, w.z + b]) is the same model.
        coefficients = np.vstack([np.zeros_like(coefficients), coefficients])
        intercepts = np.concatenate([[0.0], intercepts])
    return {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "classifier": {"name": classifier, "description": CLASSIFIERS[classifier][0],
                       "prediction": "p = softmax(coefficients @ ((x - means) / scales) + intercepts)"},
        "features": list(names),
        "means": [float(v) for v in means],
        "scales": [float(v) for v in scales],
        "classes": classes,
        "coefficients": [[float(v) for v in row] for row in coefficients],
        "intercepts": [float(v) for v in intercepts],
    }


# -- predict ------------------------------------------------------------------------------


def predict_matrix(model: Mapping, x: np.ndarray) -> np.ndarray:
    """Class probabilities (n, len(model["classes"])) for a feature matrix in the model's
    feature order, missing values already imputed."""
    z = (x - np.asarray(model["means"])) / np.asarray(model["scales"])
    logits = z @ np.asarray(model["coefficients"]).T + np.asarray(model["intercepts"])
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def predict_proba(model: Mapping, egemaps: Mapping[str, float]) -> dict[str, float]:
    """Probability per emotion (the model's classes; they sum to 1) for one clip's
    eGeMAPS functionals (`ProsodyStats.egemaps`).

    A missing feature enters at its training mean (see the module docstring); more than
    MAX_MISSING_SHARE missing raises MissingFeaturesError naming how many and why.
    """
    missing = missing_features(model, egemaps)
    if len(missing) > MAX_MISSING_SHARE * len(model["features"]):
        raise MissingFeaturesError(
            f"{len(missing)} of the {len(model['features'])} eGeMAPS features the speech-emotion model needs were not "
            f"measured (e.g. {', '.join(missing[:3])}); set prosody.egemaps = true and run preprocess again")
    x = feature_matrix([egemaps], model["features"], model["means"])
    probabilities = predict_matrix(model, x)[0]
    return {label: float(p) for label, p in zip(model["classes"], probabilities)}


def feature_contributions(model: Mapping, egemaps: Mapping[str, float],
                          emotion: str) -> list[tuple[str, float, float, float]]:
    """(feature, value, z, contribution) for the measured features, largest contribution
    first: how much each moved the log-probability of `emotion` (first order: z_j times
    the emotion's coefficient minus the probability-weighted mean coefficient of all
    classes). Raises SpeechEmotionError when `emotion` is not one of the model's classes."""
    if emotion not in model["classes"]:
        raise SpeechEmotionError(f"{emotion!r} is not one of the model's classes ({', '.join(model['classes'])})")
    x = feature_matrix([egemaps], model["features"], model["means"])
    probabilities = predict_matrix(model, x)[0]
    coefficients = np.asarray(model["coefficients"])
    relative = coefficients[model["classes"].index(emotion)] - probabilities @ coefficients
    z = ((x - np.asarray(model["means"])) / np.asarray(model["scales"]))[0]
    rows = [(name, float(egemaps[name]), float(z[j]), float(relative[j] * z[j]))
            for j, name in enumerate(model["features"])
            if egemaps.get(name) is not None and math.isfinite(egemaps[name])]
    return sorted(rows, key=lambda row: -row[3])


# -- cross-validation ---------------------------------------------------------------------


def cross_validated_predictions(features: Sequence[Mapping[str, float]], labels: Sequence[str],
                                groups: Sequence[str], classifier: str = DEFAULT_CLASSIFIER,
                                n_splits: int | None = None) -> list[dict[str, float]]:
    """Held-out probabilities per row: each row is predicted by a model fitted (with
    `fit_speech_emotion`, through the stored form) on the rows of the other groups.

    `groups`: one id per row (speaker for leave-one-speaker-out, corpus for
    leave-one-corpus-out). `n_splits` None: one fold per group; else GroupKFold with that
    many folds. Emotions absent from a fold's training rows get probability 0 there.
    Raises SpeechEmotionError when there are fewer than two groups.
    """
    from sklearn.model_selection import GroupKFold, LeaveOneGroupOut

    if not (len(features) == len(labels) == len(groups)):
        raise SpeechEmotionError(f"features, labels and groups differ in length "
                                 f"({len(features)}, {len(labels)}, {len(groups)})")
    if len(set(groups)) < 2:
        raise SpeechEmotionError("cross-validation needs at least two groups (speakers or corpora)")
    names = sorted({name for row in features for name in row})
    splitter = LeaveOneGroupOut() if n_splits is None else GroupKFold(n_splits=n_splits)
    out: list[dict[str, float]] = [{} for _ in features]
    for train, test in splitter.split(np.zeros(len(labels)), labels, groups):
        model = fit_speech_emotion([features[i] for i in train], [labels[i] for i in train], classifier, names)
        probabilities = predict_matrix(model, feature_matrix([features[i] for i in test], names, model["means"]))
        for row, p in zip(test, probabilities):
            out[row] = {emotion: 0.0 for emotion in EMOTIONS} | dict(zip(model["classes"], map(float, p)))
    return out


# -- scores -------------------------------------------------------------------------------


def scores(truth: Sequence[str], predicted: Sequence[str]) -> dict:
    """Accuracy, UAR (unweighted average recall: mean recall over the emotions present in
    `truth`, Schuller et al., "The INTERSPEECH 2009 Emotion Challenge") and recall per
    present emotion, rounded to 4 decimals, with the number of clips."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    present = [e for e in EMOTIONS if (truth == e).any()]
    recall = {e: round(float((predicted[truth == e] == e).mean()), 4) for e in present}
    return {"clips": int(truth.size), "accuracy": round(float((truth == predicted).mean()), 4),
            "uar": round(float(np.mean(list(recall.values()))), 4), "recall": recall}


def confusion_table(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, dict[str, int]]:
    """Counts: truth emotion -> predicted emotion -> clips (emotions present in `truth`)."""
    table: dict[str, dict[str, int]] = {}
    for t, p in zip(truth, predicted):
        row = table.setdefault(t, {e: 0 for e in EMOTIONS})
        row[p] += 1
    return {e: table[e] for e in EMOTIONS if e in table}


def top_emotion(probabilities: Mapping[str, float]) -> str:
    return max(probabilities.items(), key=lambda kv: kv[1])[0]


# -- load ---------------------------------------------------------------------------------


def model_digest(model: Mapping) -> str:
    """sha256 (first 16 hex) of the model's canonical JSON: names the exact model in provenance."""
    return hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:16]


def validate_model(model: object, source: str) -> dict:
    """Check the structure of a speech-emotion model; returns it. Raises
    SpeechEmotionModelError naming `source` and the first problem found."""
    def bad(problem: str) -> SpeechEmotionModelError:
        return SpeechEmotionModelError(f"{source} is not a usable speech-emotion model: {problem}; retrain it with "
                                       "`python -m merforge.agents.train_speech_emotion --labelled "
                                       "../shared/data/labelled --out agents/models` or set annotate.acoustic_model "
                                       "to a good file")

    if not isinstance(model, dict):
        raise bad("the file does not hold a JSON object")
    if model.get("format") != MODEL_FORMAT or model.get("format_version") != FORMAT_VERSION:
        raise bad(f"format {model.get('format')!r} version {model.get('format_version')!r}, expected "
                  f"{MODEL_FORMAT!r} version {FORMAT_VERSION}")
    for key in ("features", "means", "scales", "classes", "coefficients", "intercepts"):
        if not isinstance(model.get(key), list) or not model[key]:
            raise bad(f"{key!r} is missing or empty")
    n_features, n_classes = len(model["features"]), len(model["classes"])
    if len(model["means"]) != n_features or len(model["scales"]) != n_features:
        raise bad(f"{n_features} features but {len(model['means'])} means and {len(model['scales'])} scales")
    if len(model["intercepts"]) != n_classes or len(model["coefficients"]) != n_classes:
        raise bad(f"{n_classes} classes but {len(model['coefficients'])} coefficient rows and "
                  f"{len(model['intercepts'])} intercepts")
    if any(not isinstance(row, list) or len(row) != n_features for row in model["coefficients"]):
        raise bad(f"every coefficient row must have {n_features} values")
    unknown = [c for c in model["classes"] if c not in EMOTIONS]
    if unknown:
        raise bad(f"class(es) {', '.join(map(str, unknown))} are not among {', '.join(EMOTIONS)}")
    try:
        numbers = np.array([*model["means"], *model["scales"], *model["intercepts"],
                            *(v for row in model["coefficients"] for v in row)], dtype=np.float64)
    except (TypeError, ValueError):
        raise bad("a mean, scale, coefficient or intercept is not a number") from None
    if not np.isfinite(numbers).all() or min(model["scales"]) <= 0:
        raise bad("non-finite numbers or a scale <= 0")
    return model


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, size: int) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpeechEmotionModelError(f"speech-emotion model not found at {path}; set annotate.acoustic_model to a "
                                      "model file, or train one with `python -m merforge.agents.train_speech_emotion "
                                      "--labelled ../shared/data/labelled --out agents/models`") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpeechEmotionModelError(f"cannot read the speech-emotion model {path}: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpeechEmotionModelError(f"{path} is not valid JSON ({error}); retrain it with "
                                      "`python -m merforge.agents.train_speech_emotion`") from None
    return validate_model(data, str(path))


def save_speech_emotion_model(model: dict, path: Path | str) -> Path:
    """Validate a model (e.g. one `fit_speech_emotion` fitted on a benchmark's training
    folds) and write it as JSON (temporary name, then rename), ready for
    `annotate.acoustic_model`. Raises SpeechEmotionModelError for a malformed model."""
    path = Path(path)
    validate_model(model, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(model, indent=1) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def load_speech_emotion_model(path: Path | str = SPEECH_EMOTION_MODEL_PATH) -> dict:
    """Read and validate a model file (see `validate_model`). Cached per path and file
    version; do not modify the returned dict. Raises SpeechEmotionModelError when the file
    is missing, unreadable, not JSON, or not a well-formed model."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return _load(str(path), 0, -1)  # raises the not-found error
    return _load(str(path), stat.st_mtime_ns, stat.st_size)
