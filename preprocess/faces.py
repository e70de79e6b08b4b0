"""Faces: detection, 468 landmarks, tracks, head pose and geometric AU estimates.

Method
------
Detection and landmarks re-implement the CPU graph of MediaPipe 0.10.21's legacy
`face_mesh` solution around its two TensorFlow Lite models, run in the LiteRT
interpreter (`ai_edge_litert`) so the `mediapipe` package (and its OpenCV build, which
conflicts with ours) is not needed. Current mediapipe releases ship neither the models
nor a graph that can run them (shared/FEASIBILITY.md, "Face landmarks with current
mediapipe"). Sources: mediapipe/modules/face_detection/face_detection.pbtxt,
face_detection_short_range.pbtxt, mediapipe/calculators/tflite/ssd_anchors_calculator.cc,
mediapipe/calculators/tensor/tensors_to_detections_calculator.cc,
mediapipe/calculators/util/non_max_suppression_calculator.cc,
mediapipe/modules/face_landmark/face_landmark_front_cpu.pbtxt (detection -> ROI) and
face_landmark_cpu.pbtxt (ROI -> landmarks), all Apache-2.0.

1. BlazeFace short range (Bazarevsky et al. 2019, arXiv:1907.05047): the picture is
   letterboxed to 128 x 128 RGB in [-1, 1]; 896 SSD anchors (strides 8, 16, 16, 16,
   fixed size) decode the regressors into a float box and six keypoints (eyes, nose tip,
   mouth, ear tragions); scores are sigmoids; overlapping boxes are merged by weighted
   non-maximum suppression (IoU > 0.3). The model is made for faces that fill a good
   part of the picture, so pictures wider than tall are also searched in overlapping
   square tiles (`_tiles`), which finds the smaller faces of group photos.
2. Face mesh (Kartynnik et al. 2019, arXiv:1907.06724): the region of interest is the
   detection box made square on its long side, rotated so the eyes are level, scaled by
   1.5; it is warped to 192 x 192 RGB in [0, 1] with border replication, and the 468
   predicted points are mapped back through the inverse warp. The model's face-presence
   output (a logit) gives the observation's score.
3. Tracks: faces in consecutive analysed frames are linked greedily by box IoU
   (`FaceConfig.track_iou`). The primary face is the track present in most analysed
   frames weighted by its mean box size; near-ties are broken by overlap with speech
   when speech spans are given (`mark_primary`).
4. Head pose: the face frame spanned by the 3D mesh points (eye axis, forehead-to-chin
   axis; MediaPipe's z is in the same scale as x), as yaw, pitch, roll in degrees. A
   weak-perspective approximation: pitch reads about +5..+10 degrees for a level
   frontal face because the mesh's forehead point sits behind its chin point.
5. Expressions: with `FaceConfig.expression`, every face gets the probabilities of the
   FER2013 expression model on fer's crop of the same picture (preprocess.expression).
6. Action units are ESTIMATES from landmark geometry, not FACS coding. Each AU uses the
   cue the FACS manual names for it (Ekman, Friesen & Hager 2002): AU12 = lip corners
   pulled up and out, AU4 = brows lowered and drawn together, AU26 = jaw dropped, etc.
   (`_AU_RULES`). The geometry is normalised for face shape and size: distances in the
   face's own frame (in-plane rotation removed) over the inter-ocular distance (outer eye
   corners). A cue's excess over neutral is squashed to 0..1 with
   1 - exp(-excess / scale). Which neutral:
   - a track with a neutral phase (the expression model's arg-max is neutral in at least
     MIN_NEUTRAL_FRAMES = 5 of its frames, at least NEUTRAL_PHASE_SHARE = 15% of them)
     is measured against the median of those neutral frames: the person's own face at
     rest, which removes their face shape exactly (`neutral_baseline`);
   - any other face (stills, short tracks, an expression held for the whole track, or
     the expression model switched off) is measured in absolute terms against typical
     neutral measures (NEUTRAL_MEASURES: the median of 47 labelled neutral faces), with
     a per-AU tolerance for how much neutral faces differ (NEUTRAL_TOLERANCE: three in
     four of those neutral faces read 0).
   Why not a baseline from the track itself, as a percentile of its own frames: an
   expression held through the whole clip (posed stills, an actor saying one sentence
   in one emotion) then is its own baseline and every AU reads about 0 (issue 13). A
   neutral phase is recognised by the expression model rather than by geometry, because
   geometry alone cannot tell a resting face from a held one. On CK+ peaks (posed, no
   neutral phase) the absolute estimates follow the EMFACS prototypes: AU6/AU12 0.71/0.77
   for happiness, AU1/AU2 0.50/0.34 for surprise, AU9 0.62 for disgust, AU15 0.36 for
   sadness (benchmarks/expression_bench.py).

Alternatives (`FaceConfig.au_backend`): "pyfeat" uses py-feat's detector when installed
with its weights; "openface-csv" reads OpenFace 2 FeatureExtraction output
(`load_openface_csv`).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import cv2
import numpy as np

from merforge.errors import MerforgeError
from merforge.preprocess.media import Frame
from merforge.storage.config import FaceConfig
from merforge.storage.records import FaceObservation

MODEL_DIR = Path(__file__).parent / "models" / "mediapipe"
DETECTOR_FILE = "face_detection_short_range.tflite"
LANDMARK_FILE = "face_landmark.tflite"

DETECTOR_SIZE = 128  # pixels, square input of BlazeFace short range
LANDMARK_SIZE = 192  # pixels, square input of the face mesh model
NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold for face detection
ROI_SCALE = 1.5  # MediaPipe's RectTransformationCalculator scale for the face mesh ROI
# Larger pictures are analysed downscaled to this long side: detection works at 128 px
# and the mesh at 192 px per face, so more pixels only cost time.
MAX_ANALYSIS_SIDE = 1280
# Below this face-presence probability the mesh is not a face (MediaPipe uses 0.5).
MIN_PRESENCE = 0.5
NUM_LANDMARKS = 468


class FaceModelError(MerforgeError):
    """The face models cannot be found or loaded."""


class FaceBackendUnavailable(MerforgeError):
    """The configured AU backend (py-feat) is not installed or lacks its weights."""


class OpenFaceCsvError(MerforgeError):
    """An OpenFace CSV is missing, unreadable or lacks the columns merforge needs."""


# -- models -----------------------------------------------------------------------------

# Loaded interpreters are cached per (model path, threads): loading costs ~20 ms per
# model and every FaceAnalyzer (one per file) would otherwise reload. A LiteRT
# interpreter must not run on two threads at once, so each comes with a lock that
# FaceMeshModel holds around set_tensor/invoke/get_tensor.
_INTERPRETERS: dict[tuple[str, int], tuple[object, threading.Lock]] = {}
_INTERPRETERS_LOCK = threading.Lock()


def litert_interpreter(path: Path, threads: int, error: type[MerforgeError] = FaceModelError,
                       what: str = "face model", missing_hint: str = "") -> tuple[object, threading.Lock]:
    """A cached LiteRT interpreter for the .tflite model at `path`, with its lock.

    Raises `error` (FaceModelError unless the caller names its own type) when the file is
    missing ("<what> not found at <path>; <missing_hint>", by default how to set
    face.model_dir), when LiteRT cannot be imported, or when the model does not load.
    """
    key = (str(path), threads)
    with _INTERPRETERS_LOCK:
        cached = _INTERPRETERS.get(key)
    if cached is not None:
        return cached
    if not path.is_file():
        raise error(f"{what} not found at {path}; " + (missing_hint or (
            f"set face.model_dir to a folder holding {DETECTOR_FILE} and {LANDMARK_FILE} (MediaPipe 0.10.21), "
            "or leave it empty for the vendored copies")))
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as failure:
        raise error(f"cannot import the LiteRT interpreter ({failure}); install ai-edge-litert") from None
    try:
        with _quiet_native_stderr():
            interpreter = Interpreter(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as failure:
        raise error(f"cannot load {what} {path}: {failure}") from None
    with _INTERPRETERS_LOCK:
        return _INTERPRETERS.setdefault(key, (interpreter, threading.Lock()))


@contextlib.contextmanager
def _quiet_native_stderr():
    """LiteRT's C++ runtime prints an INFO line per interpreter straight to file
    descriptor 2; hide it so a curator's terminal shows only what matters."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _ssd_anchors() -> np.ndarray:
    """(896, 2) anchor centres in 0..1 for BlazeFace short range.

    SsdAnchorsCalculator with num_layers 4, strides 8, 16, 16, 16, aspect ratio 1,
    interpolated scale aspect ratio 1 and fixed_anchor_size: two anchors per cell, and
    layers with the same stride are merged (so stride 16 has six anchors per cell).
    """
    centres = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = DETECTOR_SIZE // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


_ANCHORS = _ssd_anchors()


@dataclass
class Detection:
    """A BlazeFace detection in source pixels: box (x, y, w, h), six keypoints (x, y):
    right eye, left eye (the subject's), nose tip, mouth centre, right ear, left ear."""

    score: float  # 0..1
    box: np.ndarray  # (4,) x, y, width, height in pixels
    keypoints: np.ndarray  # (6, 2) pixels


@dataclass
class FaceMesh:
    """A detected face with its 468 MediaPipe face-mesh points in source pixels."""

    detection: Detection
    landmarks: np.ndarray  # (468, 3): x, y in pixels; z in the same scale, relative
    presence: float  # 0..1, the mesh model's face-presence probability

    @property
    def box(self) -> np.ndarray:
        """Tight box (x, y, w, h) in pixels around the landmarks."""
        lo = self.landmarks[:, :2].min(axis=0)
        hi = self.landmarks[:, :2].max(axis=0)
        return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a (4,) against boxes b (n, 4), boxes as x, y, w, h."""
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[0] + a[2], b[:, 0] + b[:, 2])
    y1 = np.minimum(a[1] + a[3], b[:, 1] + b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = a[2] * a[3] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def _weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, threshold: float) -> list[Detection]:
    """MediaPipe's WEIGHTED non-maximum suppression: each cluster (IoU > threshold with
    its best box) becomes one detection whose box and keypoints are the score-weighted
    mean of the cluster's, keeping the best score."""
    order = np.argsort(-scores)
    out = []
    while order.size:
        best = order[0]
        overlap = _iou(boxes[best], boxes[order]) > threshold
        overlap[0] = True
        members = order[overlap]
        weights = scores[members][:, None]
        box = (boxes[members] * weights).sum(0) / weights.sum()
        kps = (keypoints[members] * weights[:, :, None]).sum(0) / weights.sum()
        out.append(Detection(score=float(scores[best]), box=box.astype(np.float32), keypoints=kps.astype(np.float32)))
        order = order[~overlap]
    return out


class FaceMeshModel:
    """BlazeFace short range + the 468-point face mesh, run with LiteRT on BGR pictures.

    `threads`: LiteRT threads per model (1 or 2 suit a 2-core machine, where decoding
    runs beside). Raises FaceModelError when a model file is missing or broken.
    """

    def __init__(self, model_dir: Path | str | None = None, threads: int = 1,
                 min_detection_score: float = 0.5, max_faces: int = 5, tiles: bool = True):
        self.model_dir = Path(model_dir) if model_dir else MODEL_DIR
        self.threads = threads
        self.min_detection_score = min_detection_score
        self.max_faces = max_faces
        self.tiles = tiles
        # Load now so that a missing model fails before any decoding.
        self._models()

    def _models(self):
        detector = litert_interpreter(self.model_dir / DETECTOR_FILE, self.threads)
        mesh = litert_interpreter(self.model_dir / LANDMARK_FILE, self.threads)
        return detector, mesh

    # detection ----------------------------------------------------------------------

    def _detect_region(self, rgb: np.ndarray, x0: float, y0: float, w: float, h: float):
        """Raw scored boxes and keypoints (source pixels) for one letterboxed region."""
        (detector, lock), _ = self._models()
        scale = DETECTOR_SIZE / max(w, h)
        pad_x = (DETECTOR_SIZE - w * scale) / 2
        pad_y = (DETECTOR_SIZE - h * scale) / 2
        matrix = np.array([[scale, 0, pad_x - scale * x0], [0, scale, pad_y - scale * y0]], dtype=np.float64)
        # MediaPipe letterboxes with black (BORDER_ZERO) and samples bilinearly.
        tensor = cv2.warpAffine(rgb, matrix, (DETECTOR_SIZE, DETECTOR_SIZE), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        tensor = tensor.astype(np.float32) * (2.0 / 255.0) - 1.0
        with lock:
            detector.set_tensor(detector.get_input_details()[0]["index"], tensor[None])
            detector.invoke()
            outputs = {d["name"]: d["index"] for d in detector.get_output_details()}
            raw = detector.get_tensor(outputs["regressors"])[0].copy()
            logits = detector.get_tensor(outputs["classificators"])[0, :, 0].copy()
        scores = _sigmoid(logits)
        keep = scores >= self.min_detection_score
        if not keep.any():
            return np.zeros(0, np.float32), np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32)
        raw, scores, anchors = raw[keep], scores[keep], _ANCHORS[keep]
        # Offsets are in input pixels (x/y/w/h scale 128) relative to the anchor centre.
        centre = raw[:, 0:2] / DETECTOR_SIZE + anchors
        size = raw[:, 2:4] / DETECTOR_SIZE
        kps = raw[:, 4:16].reshape(-1, 6, 2) / DETECTOR_SIZE + anchors[:, None, :]
        # Tensor (0..1) -> source pixels through the inverse letterbox.
        pad = np.array([pad_x, pad_y], np.float32)
        origin = np.array([x0, y0], np.float32)
        centre = (centre * DETECTOR_SIZE - pad) / scale + origin
        size = size * DETECTOR_SIZE / scale
        kps = (kps * DETECTOR_SIZE - pad) / scale + origin
        boxes = np.concatenate([centre - size / 2, size], axis=1)
        return scores, boxes, kps

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        """Faces in a BGR uint8 picture, at most `max_faces`; boxes and keypoints in pixels.

        The whole-picture pass is MediaPipe's and comes first (its boxes match MediaPipe
        0.10.21 to 0.1 px); faces found only in the tiles are appended, best first.
        """
        return self._detect_rgb(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def _detect_rgb(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        regions = _regions(w, h, self.tiles)
        detections = _weighted_nms(*self._detect_region(rgb, *regions[0]), NMS_IOU)
        if len(regions) > 1:
            parts = [self._detect_region(rgb, *region) for region in regions[1:]]
            scores = np.concatenate([p[0] for p in parts])
            if scores.size:
                tiled = _weighted_nms(scores, np.concatenate([p[1] for p in parts]),
                                      np.concatenate([p[2] for p in parts]), NMS_IOU)
                # A tile sees a face larger, so its box is tighter than the whole-picture
                # box of the same face: a centre inside a kept box means the same face.
                for candidate in tiled:
                    cx, cy = candidate.box[:2] + candidate.box[2:] / 2
                    if not any(d.box[0] <= cx <= d.box[0] + d.box[2] and d.box[1] <= cy <= d.box[1] + d.box[3]
                               for d in detections):
                        detections.append(candidate)
        return detections[: self.max_faces]

    # landmarks ----------------------------------------------------------------------

    def landmarks(self, rgb: np.ndarray, detection: Detection) -> FaceMesh:
        """468 mesh points for one detection (MediaPipe's ROI: square on the long side,
        eyes level, x1.5), in source pixels."""
        _, (mesh, lock) = self._models()
        right_eye, left_eye = detection.keypoints[0], detection.keypoints[1]
        # MediaPipe: rotation = target_angle - atan2(-(y1 - y0), x1 - x0), in pixel units.
        angle = -math.atan2(-(left_eye[1] - right_eye[1]), left_eye[0] - right_eye[0])
        x, y, bw, bh = detection.box
        centre = np.array([x + bw / 2, y + bh / 2], np.float64)
        side = max(bw, bh) * ROI_SCALE
        cos, sin = math.cos(angle), math.sin(angle)
        # Forward map: ROI pixel (u, v) in 0..192 -> source pixel.
        k = side / LANDMARK_SIZE
        to_source = np.array([[k * cos, -k * sin, 0.0], [k * sin, k * cos, 0.0]])
        to_source[:, 2] = centre - to_source[:, :2] @ np.array([LANDMARK_SIZE / 2, LANDMARK_SIZE / 2])
        crop = cv2.warpAffine(rgb, to_source, (LANDMARK_SIZE, LANDMARK_SIZE),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        tensor = crop.astype(np.float32) * (1.0 / 255.0)
        with lock:
            mesh.set_tensor(mesh.get_input_details()[0]["index"], tensor[None])
            mesh.invoke()
            outputs = {d["name"]: d["index"] for d in mesh.get_output_details()}
            points = mesh.get_tensor(outputs["conv2d_21"]).reshape(NUM_LANDMARKS, 3).astype(np.float64)
            presence = float(_sigmoid(mesh.get_tensor(outputs["conv2d_31"]).reshape(())))
        out = np.empty((NUM_LANDMARKS, 3), np.float32)
        out[:, :2] = points[:, :2] @ to_source[:, :2].T + to_source[:, 2]
        out[:, 2] = points[:, 2] * k  # depth in source pixels, relative to the face centre
        return FaceMesh(detection=detection, landmarks=out, presence=presence)

    def analyse(self, bgr: np.ndarray) -> list[FaceMesh]:
        """Detect faces and their mesh in a BGR uint8 picture; meshes with face presence
        below 0.5 are dropped. Coordinates in pixels of `bgr`."""
        if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ValueError("expected a BGR uint8 picture of shape (height, width, 3)")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        detections = self._detect_rgb(rgb)
        faces = [self.landmarks(rgb, d) for d in detections]
        return [f for f in faces if f.presence >= MIN_PRESENCE]


def _regions(width: int, height: int, tiles: bool) -> list[tuple[float, float, float, float]]:
    """Regions (x, y, w, h) searched by the detector: the whole picture, and when `tiles`
    and the picture is not square, overlapping squares on its short side."""
    regions = [(0.0, 0.0, float(width), float(height))]
    if not tiles:
        return regions
    short, long = min(width, height), max(width, height)
    if long <= short * 1.2:
        return regions
    count = math.ceil(long / short) + 1  # overlap so that a face is whole in one tile
    for i in range(count):
        offset = (long - short) * i / (count - 1)
        regions.append((offset, 0.0, short, short) if width >= height else (0.0, offset, short, short))
    return regions


# -- geometry: head pose, region descriptors, AU estimates -------------------------------

# MediaPipe face-mesh indices ("right"/"left" are the subject's; the subject's right eye
# is on the image's left). From mediapipe/modules/face_geometry/data/canonical_face_model_uv_visualization.png.
_EYE_OUTER = (33, 263)
_EYE_INNER = (133, 362)
_LID_UPPER = (159, 386)
_LID_LOWER = (145, 374)
_BROW_INNER = (107, 336)
_BROW_MID = (105, 334)
_BROW_OUTER = (46, 276)
_NOSE_ALA = (129, 358)
_CHEEK = (205, 425)
_MOUTH_CORNER = (61, 291)
_LIP_INNER = (13, 14)  # upper, lower
_NOSE_TIP, _SUBNASALE, _CHIN, _FOREHEAD = 1, 2, 152, 10


def head_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from the 3D mesh points (x right, y down, z away
    from the camera, all in pixels): the face frame is the eye axis (right to left outer
    eye corner) and the forehead-to-chin axis, made orthonormal.

    yaw > 0: the face turns to its left (towards image right); pitch > 0: it looks
    down; roll > 0: it tilts clockwise in the image. About 0 for a frontal face.
    """
    p = landmarks.astype(np.float64)
    x_axis = p[_EYE_OUTER[1]] - p[_EYE_OUTER[0]]
    x_axis /= np.linalg.norm(x_axis) + 1e-9
    down = p[_CHIN] - p[_FOREHEAD]
    z_axis = np.cross(x_axis, down)
    z_axis /= np.linalg.norm(z_axis) + 1e-9
    y_axis = np.cross(z_axis, x_axis)
    yaw = math.degrees(math.atan2(x_axis[2], math.hypot(x_axis[0], x_axis[1])))
    pitch = math.degrees(math.atan2(y_axis[2], y_axis[1]))
    roll = math.degrees(math.atan2(x_axis[1], x_axis[0]))
    return yaw, pitch, roll


def face_measures(landmarks: np.ndarray) -> dict[str, float]:
    """Raw geometric measures of one face, in units of the inter-ocular distance (outer
    eye corners), in the face's own frame (in-plane rotation removed; y down).

    Region descriptors (also inputs to the AU estimates): mouth_open (inner lip gap),
    mouth_width, eye_open (mean lid gap), brow_inner / brow_outer (height of the brow
    above the eye corner), brow_gap (between inner brow ends), corner_lift (mouth corners
    above the lip centre), nose_eye (ala below the inner eye corner), cheek_eye (cheek
    below the eye line), jaw (subnasale to chin).
    """
    p = landmarks[:, :2].astype(np.float64)
    right, left = p[_EYE_OUTER[0]], p[_EYE_OUTER[1]]
    axis = left - right
    iod = float(np.linalg.norm(axis))
    if iod < 1e-6:
        raise ValueError("degenerate landmarks: the outer eye corners coincide")
    cos, sin = axis / iod
    # Rotate into the face frame and scale by the inter-ocular distance.
    q = (p - (right + left) / 2) @ np.array([[cos, -sin], [sin, cos]]) / iod

    def y(i: int) -> float:
        return float(q[i, 1])

    def pair(a: tuple[int, int], b: tuple[int, int]) -> float:
        """Mean over both sides of how far b lies below a (y down)."""
        return (y(b[0]) - y(a[0]) + y(b[1]) - y(a[1])) / 2

    lip_centre = (y(_LIP_INNER[0]) + y(_LIP_INNER[1])) / 2
    return {
        "mouth_open": y(_LIP_INNER[1]) - y(_LIP_INNER[0]),
        "mouth_width": float(np.linalg.norm(q[_MOUTH_CORNER[1]] - q[_MOUTH_CORNER[0]])),
        "eye_open": pair(_LID_UPPER, _LID_LOWER),
        "brow_inner": pair(_BROW_INNER, _EYE_INNER),
        "brow_mid": pair(_BROW_MID, _LID_UPPER),
        "brow_outer": pair(_BROW_OUTER, _EYE_OUTER),
        "brow_gap": float(q[_BROW_INNER[1], 0] - q[_BROW_INNER[0], 0]),
        "corner_lift": lip_centre - (y(_MOUTH_CORNER[0]) + y(_MOUTH_CORNER[1])) / 2,
        "nose_eye": pair(_EYE_INNER, _NOSE_ALA),
        "cheek_eye": pair(_EYE_OUTER, _CHEEK),
        "jaw": y(_CHIN) - y(_SUBNASALE),
    }


MEASURES = ("mouth_open", "mouth_width", "eye_open", "brow_inner", "brow_mid", "brow_outer", "brow_gap",
            "corner_lift", "nose_eye", "cheek_eye", "jaw")


@dataclass(frozen=True)
class _AURule:
    """An AU estimate: a weighted sum of measures, compared with its neutral baseline.
    `rises`: the sum grows when the AU acts (baseline = low percentile), else it falls
    (baseline = high percentile). `scale`: excess (IOD units) that maps to 1 - 1/e."""

    weights: dict[str, float]
    rises: bool
    scale: float


# Cues follow the FACS manual's appearance changes. Scales are about half the 10th-90th
# percentile spread of each cue over WolfgangLanger_Pexels.mp4 (tests/data), so a
# strong action reads ~0.85; they are rough and uncalibrated against FACS coding.
_AU_RULES: dict[str, _AURule] = {
    "AU1": _AURule({"brow_inner": 1.0}, True, 0.03),  # inner brow raiser
    "AU2": _AURule({"brow_outer": 1.0}, True, 0.02),  # outer brow raiser
    "AU4": _AURule({"brow_mid": 1.0, "brow_gap": 0.5}, False, 0.03),  # brows lowered, drawn together
    "AU5": _AURule({"eye_open": 1.0}, True, 0.03),  # upper lid raiser: eyes widen
    "AU6": _AURule({"cheek_eye": 1.0}, False, 0.03),  # cheek raiser: cheeks move towards the eyes
    "AU7": _AURule({"eye_open": 1.0}, False, 0.03),  # lid tightener: eyes narrow
    "AU9": _AURule({"nose_eye": 1.0}, False, 0.03),  # nose wrinkler: alae pulled up
    "AU12": _AURule({"corner_lift": 1.0, "mouth_width": 0.5}, True, 0.08),  # lip corners up and out
    "AU15": _AURule({"corner_lift": 1.0}, False, 0.04),  # lip corners pulled down
    "AU20": _AURule({"mouth_width": 1.0, "corner_lift": -1.0}, True, 0.08),  # lips stretched sideways
    "AU25": _AURule({"mouth_open": 1.0}, True, 0.08),  # lips part
    "AU26": _AURule({"jaw": 1.0}, True, 0.12),  # jaw drops
}
AU_NAMES = tuple(_AU_RULES)
# A track has a neutral phase when the expression model calls at least this many of its
# frames neutral (arg-max), and they are at least this share of the track's frames: a
# second at 5 fps, and enough of the track that a few misread frames cannot make one.
MIN_NEUTRAL_FRAMES = 5
NEUTRAL_PHASE_SHARE = 0.15
# Typical neutral measures (IOD units) for still pictures and tracks without a neutral
# phase: the median over the 47 FER+ neutral faces of ../shared/data/labelled (each
# enlarged 4x with expression.enlarge_face_crop), printed by benchmarks/expression_bench.py.
NEUTRAL_MEASURES = {
    "mouth_open": 0.018, "mouth_width": 0.519, "eye_open": 0.103, "brow_inner": 0.252, "brow_mid": 0.205,
    "brow_outer": 0.127, "brow_gap": 0.334, "corner_lift": 0.016, "nose_eye": 0.403, "cheek_eye": 0.465,
    "jaw": 0.621,
}
# People differ in face shape, so against typical measures an AU's cue must exceed the
# neutral value by this much (IOD units) before it counts: the 75th percentile of the
# cue's excess over NEUTRAL_MEASURES among the same 47 neutral faces, so that three in
# four neutral faces read 0 (expression_bench.py). Against a person's own neutral the
# tolerance is 0.
NEUTRAL_TOLERANCE = {
    "AU1": 0.015, "AU2": 0.017, "AU4": 0.036, "AU5": 0.010, "AU6": 0.021, "AU7": 0.015, "AU9": 0.016,
    "AU12": 0.034, "AU15": 0.018, "AU20": 0.046, "AU25": 0.020, "AU26": 0.130,
}


def _rule_values(rule: _AURule, measures: np.ndarray) -> np.ndarray:
    """Weighted sums of a rule over rows of `measures` (n, len(MEASURES))."""
    total = np.zeros(len(measures))
    for name, weight in rule.weights.items():
        total += weight * measures[:, MEASURES.index(name)]
    return total


def estimate_aus(measures: np.ndarray, neutral: np.ndarray | None = None) -> list[dict[str, float]]:
    """AU estimates (0..1) for rows of raw measures (n, len(MEASURES)) of ONE face.

    Each AU's cue is compared with the same cue on `neutral` (one row of measures: the
    person's own neutral, see `neutral_baseline`), or, when None, on NEUTRAL_MEASURES
    less the AU's NEUTRAL_TOLERANCE; the excess over neutral is squashed with
    1 - exp(-excess / scale). Rows are independent
    of each other, so an expression held in every row keeps its estimate. These are
    geometric estimates of AU intensity, not FACS coding.
    """
    measures = np.atleast_2d(np.asarray(measures, dtype=np.float64))
    typical = neutral is None
    neutral = _neutral_row() if typical else np.asarray(neutral, dtype=np.float64)
    out: list[dict[str, float]] = [{} for _ in range(len(measures))]
    for name, rule in _AU_RULES.items():
        values = _rule_values(rule, measures)
        base = float(_rule_values(rule, np.atleast_2d(neutral))[0])
        excess = ((values - base) if rule.rises else (base - values)) - (NEUTRAL_TOLERANCE[name] if typical else 0.0)
        estimate = 1.0 - np.exp(-np.clip(excess, 0.0, None) / rule.scale)
        for row, value in zip(out, estimate):
            row[name] = round(float(value), 4)
    return out


def _neutral_row() -> np.ndarray:
    return np.array([NEUTRAL_MEASURES[m] for m in MEASURES])


def neutral_baseline(measures: np.ndarray, expressions: Sequence[dict[str, float]]) -> np.ndarray | None:
    """A face track's own neutral measures, or None when the track has no neutral phase.

    `measures`: (n, len(MEASURES)) rows of one track; `expressions`: the expression
    model's probabilities for the same rows (empty dicts where it did not run). The
    track has a neutral phase when the model's arg-max is neutral in at least
    MIN_NEUTRAL_FRAMES rows making at least NEUTRAL_PHASE_SHARE of the track; the
    baseline is then the median of those rows' measures (the median, so that a few
    misread rows do not move it).
    """
    measures = np.atleast_2d(np.asarray(measures, dtype=np.float64))
    if len(expressions) != len(measures):
        raise ValueError(f"{len(measures)} rows of measures but {len(expressions)} expression results")
    neutral = [i for i, probabilities in enumerate(expressions)
               if probabilities and max(probabilities, key=probabilities.get) == "neutral"]
    if len(neutral) < MIN_NEUTRAL_FRAMES or len(neutral) < NEUTRAL_PHASE_SHARE * len(measures):
        return None
    return np.median(measures[neutral], axis=0)


# -- tracks and the primary face -------------------------------------------------------

# A track survives this many seconds without a matching face (a blink of the detector,
# a hand in front of the face) before a reappearing face starts a new one.
MAX_TRACK_GAP = 1.0
# Tracks whose presence-and-size weight is within this share of the best count as tied;
# speech overlap (when known) then decides.
PRIMARY_TIE = 0.10


@dataclass
class _Track:
    track_id: int
    box: np.ndarray
    last_time: float


class IouTracker:
    """Links faces across analysed frames: each face continues the open track whose last
    box overlaps it most (IoU >= `min_iou`, greedy, best pairs first), else starts a new
    track. Track ids count from 0 in order of appearance."""

    def __init__(self, min_iou: float, max_gap: float = MAX_TRACK_GAP):
        self.min_iou = min_iou
        self.max_gap = max_gap
        self._tracks: list[_Track] = []
        self._next_id = 0

    def assign(self, time: float, boxes: Sequence[np.ndarray]) -> list[int]:
        """Track ids for `boxes` (x, y, w, h pixels) seen at `time` seconds."""
        open_tracks = [t for t in self._tracks if time - t.last_time <= self.max_gap]
        pairs = []
        for i, box in enumerate(boxes):
            if open_tracks:
                ious = _iou(np.asarray(box, np.float64), np.array([t.box for t in open_tracks], np.float64))
                pairs += [(float(v), i, j) for j, v in enumerate(ious) if v >= self.min_iou]
        ids: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        for _, i, j in sorted(pairs, reverse=True):
            if ids[i] is None and j not in used:
                ids[i] = open_tracks[j].track_id
                used.add(j)
                open_tracks[j].box = np.asarray(boxes[i], np.float64)
                open_tracks[j].last_time = time
        for i, box in enumerate(boxes):
            if ids[i] is None:
                track = _Track(self._next_id, np.asarray(box, np.float64), time)
                self._tracks.append(track)
                ids[i] = track.track_id
                self._next_id += 1
        self._tracks = [t for t in self._tracks if time - t.last_time <= self.max_gap]
        return ids  # type: ignore[return-value]


def _speech_overlap(times: Iterable[float], speaking_times: Sequence[tuple[float, float]], half: float) -> float:
    """Seconds of speech within +-half of each time (each analysed frame stands for its slot)."""
    total = 0.0
    for t in times:
        for start, end in speaking_times:
            total += max(0.0, min(end, t + half) - max(start, t - half))
    return total


def mark_primary(observations: Sequence[FaceObservation], analysed_count: int | None = None,
                 frame_area: float | None = None,
                 speaking_times: Sequence[tuple[float, float]] | None = None,
                 interval: float = 0.2) -> list[FaceObservation]:
    """The same observations with `primary` set on one face per analysed frame.

    Tracks are ranked by presence (share of analysed frames with the face) times the
    square root of mean box area (relative to `frame_area`, or the largest box); tracks
    within 10% of the best are tied and the one overlapping most with `speaking_times`
    ((start, end) seconds, e.g. voice activity or the speaker's turns) wins. In each
    frame the present face of the best-ranked track is primary.
    """
    if not observations:
        return []
    by_track: dict[int, list[FaceObservation]] = {}
    for obs in observations:
        by_track.setdefault(obs.track_id, []).append(obs)
    frames = analysed_count or len({o.time for o in observations})
    area = frame_area or max(o.box[2] * o.box[3] for o in observations) or 1.0
    weight = {tid: len(obs) / frames * math.sqrt(np.mean([o.box[2] * o.box[3] for o in obs]) / area)
              for tid, obs in by_track.items()}
    best = max(weight.values())
    speech = {tid: (_speech_overlap([o.time for o in obs], speaking_times, interval / 2) if speaking_times else 0.0)
              for tid, obs in by_track.items()}
    rank = sorted(by_track, key=lambda tid: (weight[tid] >= best * (1 - PRIMARY_TIE), speech[tid], weight[tid]),
                  reverse=True)
    order = {tid: i for i, tid in enumerate(rank)}
    primary_at: dict[float, int] = {}
    for obs in observations:
        current = primary_at.get(obs.time)
        if current is None or order[obs.track_id] < order[current]:
            primary_at[obs.time] = obs.track_id
    return [obs.model_copy(update={"primary": primary_at[obs.time] == obs.track_id}) for obs in observations]


# -- the frame consumer ------------------------------------------------------------------


@dataclass
class _Pending:
    """What is kept per observation until finish(): no pixels."""

    time: float
    track_id: int
    box: tuple[float, float, float, float]
    score: float
    head_pose: tuple[float, float, float]
    measures: np.ndarray  # (len(MEASURES),) float32
    landmarks: np.ndarray | None = None  # (468, 3) float32, only with keep_landmarks
    aus: dict[str, float] | None = None  # set directly by the pyfeat / openface backends
    expression: dict[str, float] = field(default_factory=dict)  # concept -> probability (face.expression)


class FaceAnalyzer:
    """Frame consumer: faces, tracks, head pose, expression probabilities and AU estimates
    at `config.fps`.

    Analyses the frame at or after each point of a 1/fps grid (like KeyframeCandidates)
    at its coded size (`frame.native`), downscaled to a long side of 1280 px when
    larger; boxes and landmarks are reported in SOURCE pixels. With config.expression,
    every face also gets the expression model's probabilities (preprocess.expression,
    on fer's crop of the same picture). Per observation only a small vector of measures
    is kept (plus the 468 points with `keep_landmarks`, ~5.6 KB each); whether a track
    has a neutral phase to take its AU baseline from needs the whole track, so AUs are
    computed in `finish()`.

    After `finish()`: `observations` (one FaceObservation per face per analysed frame,
    time-ordered), `analysed_times` (every analysed time, with or without a face),
    `descriptors()` and, with keep_landmarks, `landmark_table()`.

    `speaking_times`: optional (start, end) seconds of speech; they break ties between
    candidate primary faces (see mark_primary); `assign_primary` can apply them later.
    `source_path`: the video, needed by au_backend "openface-csv" to find
    <openface_csv_dir>/<stem>.csv. Raises FaceModelError, ExpressionModelError,
    FaceBackendUnavailable or OpenFaceCsvError at construction when a configured model or
    backend cannot run.
    """

    def __init__(self, config: FaceConfig, *, threads: int = 1, keep_landmarks: bool = False,
                 speaking_times: Sequence[tuple[float, float]] | None = None,
                 source_path: Path | None = None, tiles: bool = True):
        self.config = config
        self.model = FaceMeshModel(config.model_dir or None, threads=threads,
                                   min_detection_score=config.min_detection_score,
                                   max_faces=config.max_faces, tiles=tiles)
        self.interval = 1.0 / config.fps
        self.keep_landmarks = keep_landmarks
        self.speaking_times = list(speaking_times) if speaking_times else None
        self.analysed_times: list[float] = []
        self.observations: list[FaceObservation] = []
        self.frame_size: tuple[int, int] | None = None  # source (width, height)
        self.seconds_analysing = 0.0  # wall time spent in the face models and geometry
        self.neutral_tracks: list[int] = []  # after finish(): tracks whose AUs use their own neutral phase
        self._tracker = IouTracker(config.track_iou)
        self._pending: list[_Pending] = []
        self._next_time = 0.0
        self._finished = False
        self._pyfeat = PyFeatBackend() if config.au_backend == "pyfeat" else None
        self.expression_model = None
        if config.expression:
            from merforge.preprocess.expression import ExpressionModel

            self.expression_model = ExpressionModel(config.expression_model or None, threads=threads)
        self.seconds_expression = 0.0  # wall time in the expression model (crop included), part of seconds_analysing
        self._openface: list[FaceObservation] | None = None
        if config.au_backend == "openface-csv":
            if source_path is None or not config.openface_csv_dir:
                raise OpenFaceCsvError("au_backend 'openface-csv' needs face.openface_csv_dir and the video path "
                                       "(FaceAnalyzer(source_path=...)) to find <openface_csv_dir>/<video stem>.csv")
            self._openface = load_openface_csv(Path(config.openface_csv_dir) / f"{Path(source_path).stem}.csv")

    def process_frame(self, frame: Frame) -> None:
        if frame.time + 1e-6 < self._next_time:
            return
        # Stay on the grid even when frames are dropped or the rate is irregular.
        self._next_time = (int(frame.time / self.interval + 1e-6) + 1) * self.interval
        self.analyse_frame(frame.native, frame.time)

    def analyse_frame(self, bgr: np.ndarray, time: float) -> None:
        """Analyse one BGR uint8 picture shown at `time` seconds (no time-grid check)."""
        started = perf_counter()
        height, width = bgr.shape[:2]
        self.frame_size = (width, height)
        self.analysed_times.append(time)
        scale = 1.0
        if max(width, height) > MAX_ANALYSIS_SIDE:
            scale = MAX_ANALYSIS_SIDE / max(width, height)
            bgr = cv2.resize(bgr, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        faces = self.model.analyse(bgr)
        boxes = [f.detection.box / scale for f in faces]
        ids = self._tracker.assign(time, boxes)
        pyfeat_aus = self._pyfeat.aus(bgr, [f.detection.box for f in faces]) if (self._pyfeat and faces) else None
        for k, (face, box, track_id) in enumerate(zip(faces, boxes, ids)):
            expression: dict[str, float] = {}
            if self.expression_model is not None:
                expression_started = perf_counter()
                expression = {c: round(p, 4) for c, p in self.expression_model.predict(bgr, face.detection.box).items()}
                self.seconds_expression += perf_counter() - expression_started
            points = face.landmarks.copy()
            points /= scale
            self._pending.append(_Pending(
                time=time, track_id=track_id, box=tuple(round(float(v), 2) for v in box),
                score=round(face.detection.score, 4),
                head_pose=tuple(round(v, 2) for v in head_pose(points)),
                measures=np.array([face_measures(points)[m] for m in MEASURES], np.float32),
                landmarks=points if self.keep_landmarks else None,
                aus=pyfeat_aus[k] if pyfeat_aus is not None else None, expression=expression,
            ))
        self.seconds_analysing += perf_counter() - started

    def finish(self, end_time: float) -> None:
        """Compute AU estimates per track (against the track's own neutral phase where it
        has one, else NEUTRAL_MEASURES: see `neutral_baseline`), then choose primary faces."""
        by_track: dict[int, list[_Pending]] = {}
        for item in self._pending:
            by_track.setdefault(item.track_id, []).append(item)
        self.neutral_tracks = []
        for track_id, items in by_track.items():
            if all(i.aus is not None for i in items):
                continue
            measures = np.stack([i.measures for i in items])
            neutral = neutral_baseline(measures, [i.expression for i in items])
            if neutral is not None:
                self.neutral_tracks.append(track_id)
            for item, aus in zip(items, estimate_aus(measures, neutral)):
                if item.aus is None:
                    item.aus = aus
        observations = [FaceObservation(time=i.time, track_id=i.track_id, box=i.box, score=i.score,
                                        aus=i.aus or {}, head_pose=i.head_pose, expression=i.expression)
                        for i in self._pending]
        self._finished = True
        self.assign_primary(self.speaking_times, observations)
        if self._openface is not None:
            self._apply_openface()

    def assign_primary(self, speaking_times: Sequence[tuple[float, float]] | None = None,
                       observations: Sequence[FaceObservation] | None = None) -> list[FaceObservation]:
        """(Re)choose the primary face per analysed frame, e.g. once speech is known."""
        area = float(self.frame_size[0] * self.frame_size[1]) if self.frame_size else None
        self.observations = mark_primary(observations if observations is not None else self.observations,
                                         analysed_count=len(self.analysed_times), frame_area=area,
                                         speaking_times=speaking_times, interval=self.interval)
        return self.observations

    def _apply_openface(self) -> None:
        """Replace the primary face's AUs (and head pose) with the OpenFace row nearest in
        time, within half an analysis interval; OpenFace tracks one face."""
        rows = self._openface or []
        if not rows:
            return
        times = np.array([r.time for r in rows])
        updated = []
        for obs in self.observations:
            if obs.primary:
                j = int(np.argmin(np.abs(times - obs.time)))
                if abs(times[j] - obs.time) <= self.interval / 2:
                    obs = obs.model_copy(update={"aus": rows[j].aus, "head_pose": rows[j].head_pose})
            updated.append(obs)
        self.observations = updated

    def presence(self) -> list[tuple[float, int]]:
        """(time, number of faces) for every analysed time, zero where no face."""
        counts = {t: 0 for t in self.analysed_times}
        for item in self._pending:
            counts[item.time] += 1
        return sorted(counts.items())

    def descriptors(self) -> list[dict[str, float]]:
        """Per observation (same order as `observations`): time, track_id and the raw
        region descriptors of face_measures (inter-ocular units)."""
        return [{"time": i.time, "track_id": i.track_id,
                 **{m: round(float(v), 4) for m, v in zip(MEASURES, i.measures)}} for i in self._pending]

    def landmark_table(self) -> dict[str, np.ndarray]:
        """Columns for a Parquet table: time (n,) s, track_id (n,), landmarks (n, 468, 3)
        float32 in source pixels. Needs keep_landmarks=True."""
        if not self.keep_landmarks:
            raise ValueError("landmarks were not kept: create FaceAnalyzer(..., keep_landmarks=True)")
        kept = [i for i in self._pending if i.landmarks is not None]
        return {
            "time": np.array([i.time for i in kept], np.float64),
            "track_id": np.array([i.track_id for i in kept], np.int32),
            "landmarks": np.stack([i.landmarks for i in kept]) if kept else np.zeros((0, NUM_LANDMARKS, 3), np.float32),
        }


def analyse_image(bgr: np.ndarray, config: FaceConfig | None = None, *, tiles: bool = True) -> list[FaceObservation]:
    """Faces in one still BGR uint8 picture: time 0, track ids 0.. in detection order,
    boxes in pixels, expression probabilities (with config.expression), AU estimates
    against typical neutral measures (NEUTRAL_MEASURES, since a still has no neutral
    phase to take a baseline from), the largest face primary."""
    analyzer = FaceAnalyzer(config or FaceConfig(), tiles=tiles)
    analyzer.analyse_frame(bgr, 0.0)
    analyzer.finish(0.0)
    return analyzer.observations


# -- other AU backends -------------------------------------------------------------------

PYFEAT_HINT = ("install py-feat in this environment (pip install py-feat; it needs torch 2.14.1 with "
               "torchvision 0.29.1) and run it once with network access so that its detector weights are "
               "cached from https://huggingface.co/py-feat, or set face.au_backend = \"geometry\"")


class PyFeatBackend:
    """AU probabilities (0..1) from py-feat's detector for the faces merforge found.

    Faces, tracks and head pose still come from the MediaPipe models; py-feat runs on the
    same (possibly downscaled) picture and each of its faces is matched to ours by box
    IoU. Raises FaceBackendUnavailable when py-feat or its weights are missing.
    NOTE: not exercised by the test suite (py-feat cannot run offline here).
    """

    def __init__(self):
        try:
            import feat
        except ImportError:
            raise FaceBackendUnavailable(f"au_backend \"pyfeat\": the py-feat package (module `feat`) is not "
                                         f"installed; {PYFEAT_HINT}") from None
        detector_class = getattr(feat, "Detector", None) or getattr(feat, "Detectorv1", None)
        if detector_class is None:
            raise FaceBackendUnavailable(f"au_backend \"pyfeat\": this py-feat ({getattr(feat, '__version__', '?')}) "
                                         f"has no Detector class; {PYFEAT_HINT}")
        try:
            self.detector = detector_class(device="cpu")
        except Exception as error:  # weights download / load errors come in many types
            raise FaceBackendUnavailable(f"au_backend \"pyfeat\": py-feat is installed but its detector did not "
                                         f"load ({type(error).__name__}: {error}); its weights are probably "
                                         f"missing; {PYFEAT_HINT}") from None

    def aus(self, bgr: np.ndarray, boxes: Sequence[np.ndarray]) -> list[dict[str, float] | None]:
        """Per box (x, y, w, h pixels of `bgr`): {"AU1": p, ...} or None where py-feat
        found no matching face (those faces fall back to the geometric estimates)."""
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "frame.png"
            cv2.imwrite(str(path), bgr)
            detect = getattr(self.detector, "detect", None) or self.detector.detect_image
            try:
                table = detect([str(path)], data_type="image")
            except TypeError:
                table = detect([str(path)])
        au_columns = [c for c in table.columns if str(c).startswith("AU") and str(c)[2:].isdigit()]
        theirs = table[["FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight"]].to_numpy(np.float64)
        out: list[dict[str, float] | None] = []
        for box in boxes:
            if len(theirs) == 0:
                out.append(None)
                continue
            ious = _iou(np.asarray(box, np.float64), theirs)
            j = int(np.argmax(ious))
            if ious[j] < 0.3:
                out.append(None)
                continue
            row = table.iloc[j]
            out.append({f"AU{int(str(c)[2:])}": round(float(row[c]), 4) for c in au_columns})
        return out


def load_openface_csv(path: Path | str, fps: float | None = None,
                      times: Sequence[float] | None = None) -> list[FaceObservation]:
    """FaceObservations from an OpenFace 2 FeatureExtraction / FaceLandmarkVidMulti CSV.

    Time: `times[i]` for the i-th row when given, else (frame - 1) / `fps` when fps is
    given, else the CSV's `timestamp` column (seconds). Rows with success = 0 are
    skipped. AUs: OpenFace intensities AUxx_r are on a 0..5 scale and are stored
    DIVIDED BY 5 (0..1) as "AU1", "AU12", ...; occurrences AUxx_c (0/1) as "AU1_c",
    "AU28_c", .... Box: the extent of the 2D landmarks x_0..x_67, y_0..y_67 (pixels).
    Head pose: (yaw, pitch, roll) = (pose_Ry, pose_Rx, pose_Rz) in degrees (OpenFace
    gives radians, camera frame). Track: face_id when present, else 0; the face with the
    most successful rows is primary. Raises OpenFaceCsvError on a missing file or column.
    """
    import csv

    path = Path(path)
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle, skipinitialspace=True)
            header = [h.strip() for h in next(reader)]
            rows = [r for r in reader if r]
    except FileNotFoundError:
        raise OpenFaceCsvError(f"OpenFace CSV not found: {path}; run OpenFace FeatureExtraction on the video "
                               "and put its CSV there, named <video stem>.csv") from None
    except (OSError, StopIteration, csv.Error, UnicodeDecodeError) as error:
        raise OpenFaceCsvError(f"cannot read OpenFace CSV {path}: {error or 'empty file'}") from None
    col = {name: i for i, name in enumerate(header)}
    needed = ["frame", "confidence", "success"] + ([] if (fps or times is not None) else ["timestamp"])
    missing = [n for n in needed if n not in col]
    if missing:
        raise OpenFaceCsvError(f"{path} lacks column(s) {', '.join(missing)}: is it OpenFace 2 output?")
    if times is not None and len(times) != len(rows):
        raise OpenFaceCsvError(f"{path} has {len(rows)} rows but {len(times)} times were given")
    au_r = [(h, f"AU{int(h[2:-2])}") for h in header if h.startswith("AU") and h.endswith("_r")]
    au_c = [(h, f"AU{int(h[2:-2])}_c") for h in header if h.startswith("AU") and h.endswith("_c")]
    xs = [col[f"x_{k}"] for k in range(68) if f"x_{k}" in col]
    ys = [col[f"y_{k}"] for k in range(68) if f"y_{k}" in col]
    has_pose = all(f"pose_R{a}" in col for a in "xyz")
    observations = []
    for i, row in enumerate(rows):
        try:
            if float(row[col["success"]]) < 0.5:
                continue
            if times is not None:
                time = float(times[i])
            elif fps:
                time = (float(row[col["frame"]]) - 1) / fps
            else:
                time = float(row[col["timestamp"]])
            box = (0.0, 0.0, 0.0, 0.0)
            if xs and ys:
                x = np.array([float(row[k]) for k in xs])
                y = np.array([float(row[k]) for k in ys])
                box = (round(float(x.min()), 2), round(float(y.min()), 2),
                       round(float(x.max() - x.min()), 2), round(float(y.max() - y.min()), 2))
            aus = {name: round(min(max(float(row[col[h]]) / 5.0, 0.0), 1.0), 4) for h, name in au_r}
            aus.update({name: float(row[col[h]]) for h, name in au_c})
            pose = None
            if has_pose:
                rx, ry, rz = (math.degrees(float(row[col[f"pose_R{a}"]])) for a in "xyz")
                pose = (round(ry, 2), round(rx, 2), round(rz, 2))
            track = int(float(row[col["face_id"]])) if "face_id" in col else 0
        except (ValueError, IndexError) as error:
            raise OpenFaceCsvError(f"{path}, data row {i + 1}: {error}") from None
        observations.append(FaceObservation(time=round(time, 4), track_id=track, box=box,
                                            score=round(float(row[col["confidence"]]), 4), aus=aus, head_pose=pose))
    counts: dict[int, int] = {}
    for obs in observations:
        counts[obs.track_id] = counts.get(obs.track_id, 0) + 1
    best = max(counts, key=lambda t: (counts[t], -t), default=None)
    return [obs.model_copy(update={"primary": obs.track_id == best}) for obs in observations]
