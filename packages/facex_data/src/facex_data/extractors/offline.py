"""The offline backend: dlib's shipped models (HOG detector, 68 landmarks, 128-d ResNet identity) and
landmark geometry (solvePnP pose, expression ratios, polygon region masks, pupil-based gaze).

Everything comes from weights inside installed packages (dlib-bin, face-recognition-models), so it
runs on a fresh CPU machine. Hair, ears, neck, cloth and background cannot be told apart from
landmarks: those pixels are ``schema.UNKNOWN`` and :data:`PARSING_CLASSES` lists what is produced.
"""

from __future__ import annotations

import cv2
import dlib
import numpy as np

from facex_data import schema
from facex_data.extractors import (
    AlignedFaces,
    Detection,
    ExtractorOptions,
    ExtractorSet,
    register_backend,
    sha256_file,
)
from facex_data.extractors.align import L_EYE, R_EYE, crop_template, five_points, similarity_transform
from facex_data.faces import dlib_model_path, frontal_detector

VERSION = "1"
DLIB_VERSION = f"dlib-{dlib.__version__}"
PARSING_CLASSES = ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "mouth", "u_lip", "l_lip")

# A generic 3-D face (mm) for solvePnP, camera axes (x right, y down, z away from the camera):
# nose tip, chin, image-left eye outer corner, image-right eye outer corner, mouth corners.
POSE_MODEL = np.array(
    [[0.0, 0.0, 0.0], [0.0, 330.0, 65.0], [-225.0, -170.0, 135.0], [225.0, -170.0, 135.0],
     [-150.0, 150.0, 125.0], [150.0, 150.0, 125.0]]
)
POSE_POINTS = [30, 8, 36, 45, 48, 54]

L_BROW, R_BROW = list(range(17, 22)), list(range(22, 27))
U_LIP = [48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60]
L_LIP = [54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64]
MOUTH = list(range(60, 68))


class DlibAligner:
    """HOG detection (largest face kept), 68 landmarks, 5-point similarity alignment to a crop."""

    name = "dlib-hog-landmarks68"
    version = f"{DLIB_VERSION}/{VERSION}"
    num_gpus = 0.0

    def __init__(self, options: ExtractorOptions) -> None:
        path = dlib_model_path("landmarks68")
        self.predictor = dlib.shape_predictor(str(path))
        self.weights = {path.name: sha256_file(path)}
        self.size = options.crop_size
        self.upsample = options.detector_upsample
        self.template = crop_template(self.size)

    def __call__(self, frames: np.ndarray) -> list[Detection | None]:
        return [self.align(frame) for frame in frames]

    def align(self, frame: np.ndarray) -> Detection | None:
        image = np.ascontiguousarray(frame)
        rects = list(frontal_detector()(image, self.upsample))
        if not rects:
            return None
        rect = max(rects, key=_rank)
        shape = self.predictor(image, rect)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        m = similarity_transform(five_points(points), self.template)
        crop = cv2.warpAffine(image, m, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        landmarks = (points @ m[:, :2].T + m[:, 2]).astype(np.float32)
        bbox = (int(rect.left()), int(rect.top()), int(rect.right()), int(rect.bottom()))
        return Detection(crop, landmarks, bbox, len(rects), m, five_points(landmarks).astype(np.float32))

    def boxes(self, frame: np.ndarray) -> list[tuple[int, int, int, int]]:
        rects = sorted(frontal_detector()(np.ascontiguousarray(frame), self.upsample), key=_rank, reverse=True)
        return [(int(r.left()), int(r.top()), int(r.right()), int(r.bottom())) for r in rects]


def _rank(rect) -> tuple[int, int, int]:
    """Larger faces first; ties broken by position so the choice is deterministic."""
    return rect.width() * rect.height(), -rect.left(), -rect.top()


class DlibIdentity:
    """dlib's 128-d ResNet face descriptor, computed on the aligned crop from its landmarks."""

    name = "dlib-resnet-v1-128"
    version = f"{DLIB_VERSION}/{VERSION}"
    num_gpus = 0.0

    def __init__(self, options: ExtractorOptions) -> None:
        path = dlib_model_path("identity")
        self.model = dlib.face_recognition_model_v1(str(path))
        self.weights = {path.name: sha256_file(path)}

    def __call__(self, faces: AlignedFaces) -> tuple[np.ndarray, None]:
        out = np.zeros((len(faces), schema.ID_DIM["offline"]), np.float32)
        for i, (crop, lmk) in enumerate(zip(faces.crops, faces.landmarks)):
            size = crop.shape[0]
            shape = dlib.full_object_detection(
                dlib.rectangle(0, 0, size - 1, size - 1),
                dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in lmk]),
            )
            out[i] = np.asarray(self.model.compute_face_descriptor(np.ascontiguousarray(crop), shape, 0, 0.25))
        return out, None  # a descriptor, no feature map


def head_pose(landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(yaw, pitch, roll) in radians and a normalised translation from 6 landmarks by solvePnP.

    R = Rz(roll) Ry(yaw) Rx(pitch); mirroring the image negates yaw and roll and keeps pitch.
    """
    camera = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], dtype=np.float64)
    image_points = landmarks[POSE_POINTS].astype(np.float64)
    ok, rvec, tvec = cv2.solvePnP(POSE_MODEL, image_points, camera, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return np.zeros(3, np.float32), np.zeros(3, np.float32)
    r, _ = cv2.Rodrigues(rvec)
    pitch = np.arctan2(r[2, 1], r[2, 2])
    yaw = np.arctan2(-r[2, 0], np.hypot(r[2, 1], r[2, 2]))
    roll = np.arctan2(r[1, 0], r[0, 0])
    t = tvec.ravel()
    translation = np.array([t[0] / t[2], t[1] / t[2], t[2] / 1000.0])
    return np.array([yaw, pitch, roll], np.float32), translation.astype(np.float32)


def expression_features(lmk: np.ndarray) -> np.ndarray:
    """Landmark-geometry expression, scale-free (divided by the eye distance); order = schema.OFFLINE_EXPRESSION."""
    p = lmk.astype(np.float64)
    iod = max(np.linalg.norm(p[L_EYE].mean(0) - p[R_EYE].mean(0)), 1e-6)

    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(p[a] - p[b]))

    def eye_open(e: list[int]) -> float:
        return (dist(e[1], e[5]) + dist(e[2], e[4])) / (2 * max(dist(e[0], e[3]), 1e-6))

    feats = [
        dist(62, 66) / iod,
        dist(48, 54) / iod,
        eye_open(L_EYE),
        eye_open(R_EYE),
        (p[L_EYE, 1].mean() - p[L_BROW, 1].mean()) / iod,
        (p[R_EYE, 1].mean() - p[R_BROW, 1].mean()) / iod,
        ((p[62, 1] + p[66, 1]) / 2 - (p[48, 1] + p[54, 1]) / 2) / iod,
        (p[48, 1] - p[54, 1]) / iod,
        (p[8, 1] - p[33, 1]) / iod,
        dist(21, 22) / iod,
    ]
    return np.array(feats, np.float32)


class PoseExpression:
    """tdmm.npy for the offline backend: solvePnP pose + translation + expression ratios."""

    name = "opencv-solvepnp-landmark-expression"
    version = f"opencv-{cv2.__version__}/{VERSION}"
    weights: dict[str, str] = {}
    num_gpus = 0.0

    def __init__(self, options: ExtractorOptions) -> None:
        self.size = options.crop_size

    def __call__(self, faces: AlignedFaces) -> np.ndarray:
        out = np.zeros((len(faces), schema.TDMM_DIM["offline"]), np.float32)
        for i, lmk in enumerate(faces.landmarks):
            angles, translation = head_pose(lmk, self.size)
            out[i] = np.concatenate([angles, translation, expression_features(lmk)])
        return out


def _poly(points: np.ndarray) -> np.ndarray:
    return np.round(points).astype(np.int32).reshape(-1, 1, 2)


def region_mask(lmk: np.ndarray, size: int) -> np.ndarray:
    """BiSeNet-19 ids from landmark polygons; UNKNOWN outside the face (hair, ears, neck, background)."""
    p = lmk.astype(np.float64)
    iod = np.linalg.norm(p[L_EYE].mean(0) - p[R_EYE].mean(0))
    mask = np.full((size, size), schema.UNKNOWN, np.uint8)
    ids = schema.CLASS_ID
    cv2.fillPoly(mask, [_poly(cv2.convexHull(p[:27].astype(np.float32)).reshape(-1, 2))], ids["skin"])
    bridge = np.array([[p[27, 0] - 0.12 * iod, p[27, 1]], [p[27, 0] + 0.12 * iod, p[27, 1]]])
    nose = np.vstack([bridge[1:], p[[35, 34, 33, 32, 31]], bridge[:1]])
    cv2.fillPoly(mask, [_poly(nose)], ids["nose"])
    for brow, name in ((L_BROW, "l_brow"), (R_BROW, "r_brow")):
        top, bottom = p[brow] - [0, 0.03 * iod], p[brow][::-1] + [0, 0.09 * iod]
        cv2.fillPoly(mask, [_poly(np.vstack([top, bottom]))], ids[name])
    cv2.fillPoly(mask, [_poly(p[L_EYE])], ids["l_eye"])
    cv2.fillPoly(mask, [_poly(p[R_EYE])], ids["r_eye"])
    cv2.fillPoly(mask, [_poly(p[U_LIP])], ids["u_lip"])
    cv2.fillPoly(mask, [_poly(p[L_LIP])], ids["l_lip"])
    cv2.fillPoly(mask, [_poly(p[MOUTH])], ids["mouth"])
    return mask


class LandmarkParsing:
    """parsing.png from landmark polygons (only the classes in PARSING_CLASSES)."""

    name = "landmark-polygons"
    version = f"opencv-{cv2.__version__}/{VERSION}"
    weights: dict[str, str] = {}
    num_gpus = 0.0

    def __init__(self, options: ExtractorOptions) -> None:
        self.size = options.crop_size

    def __call__(self, faces: AlignedFaces) -> np.ndarray:
        return np.stack([region_mask(lmk, self.size) for lmk in faces.landmarks])


def pupil_offset(gray: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """Darkest-blob centroid inside an eye polygon, relative to the eye centre, in half eye widths."""
    mask = np.zeros(gray.shape, np.uint8)
    cv2.fillPoly(mask, [_poly(eye)], 1)
    values = gray[mask > 0]
    if values.size < 4:
        return np.zeros(2)
    dark = (gray <= np.percentile(values, 25)) & (mask > 0)
    ys, xs = np.nonzero(dark)
    centre = eye.mean(0)
    half_width = max(np.linalg.norm(eye[3] - eye[0]) / 2, 1e-6)
    return (np.array([xs.mean(), ys.mean()]) - centre) / half_width


class PupilGaze:
    """gaze.npy = (yaw, pitch) radians from the pupil's offset inside both eye polygons (a heuristic)."""

    name = "pupil-offset"
    version = f"opencv-{cv2.__version__}/{VERSION}"
    weights: dict[str, str] = {}
    num_gpus = 0.0

    def __init__(self, options: ExtractorOptions) -> None:
        pass

    def __call__(self, faces: AlignedFaces) -> np.ndarray:
        out = np.zeros((len(faces), schema.GAZE_DIM), np.float32)
        for i, (crop, lmk) in enumerate(zip(faces.crops, faces.landmarks)):
            gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
            offset = (pupil_offset(gray, lmk[L_EYE]) + pupil_offset(gray, lmk[R_EYE])) / 2
            # the eyeball radius is about half the eye width: offset = sin(angle)
            out[i] = np.arcsin(np.clip(offset, -1.0, 1.0))
        return out


@register_backend("offline")
def offline_backend(options: ExtractorOptions) -> ExtractorSet:
    return ExtractorSet(
        backend="offline",
        aligner=DlibAligner(options),
        parsing=LandmarkParsing(options),
        identity=DlibIdentity(options),
        tdmm=PoseExpression(options),
        gaze=PupilGaze(options),
        parsing_classes=PARSING_CLASSES,
        options=options,
    )
