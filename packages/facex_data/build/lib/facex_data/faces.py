"""dlib's shipped face models (dlib-bin + face-recognition-models, CC0): where they are, and a detector."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

DLIB_MODELS = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "mmod_detector": "mmod_human_face_detector.dat",
    "identity": "dlib_face_recognition_resnet_model_v1.dat",
}


class FaceNotFoundError(RuntimeError):
    """No face in an image that must show one."""


def dlib_model_path(kind: str) -> Path:
    """Path of a model file shipped by face-recognition-models.

    Found via the package spec rather than by importing it: its ``__init__`` needs ``pkg_resources``.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package face-recognition-models is not installed: run `make setup`")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / DLIB_MODELS[kind]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall face-recognition-models (`make setup`)")
    return path


@functools.lru_cache(maxsize=1)
def frontal_detector():
    """dlib's HOG frontal face detector (built into dlib, no file needed)."""
    import dlib

    return dlib.get_frontal_face_detector()


def detect_faces(image: np.ndarray, upsample: int = 1) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) boxes of the faces in an HxWx3 uint8 RGB image, largest first."""
    rects = frontal_detector()(np.ascontiguousarray(image), upsample)
    boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
    return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)


def largest_face_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """The largest face's box, or FaceNotFoundError."""
    boxes = detect_faces(image)
    if not boxes:
        raise FaceNotFoundError("no face found")
    return boxes[0]
