"""Face alignment geometry shared by the backends: the 5-point template, 68 -> 5 points, a similarity fit."""

from __future__ import annotations

import numpy as np

# ArcFace's 112-px 5-point template (eye centres, nose tip, mouth corners), shrunk so the crop keeps
# hair and chin around the face: the paper's 128-px ArcFace input is a centre crop of this one.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
TEMPLATE_SCALE = 0.55
TEMPLATE_SHIFT_Y = 0.03

L_EYE, R_EYE = list(range(36, 42)), list(range(42, 48))  # dlib/iBUG-68 indices; l_ = the image-left one


def crop_template(size: int) -> np.ndarray:
    """Where the 5 alignment points go in a ``size`` x ``size`` crop."""
    unit = (ARCFACE_112 - 56.0) / 112.0 * TEMPLATE_SCALE + np.array([0.5, 0.5 + TEMPLATE_SHIFT_Y])
    return unit * size


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """68 landmarks -> (eye centres, nose tip, mouth corners)."""
    return np.stack([landmarks[L_EYE].mean(0), landmarks[R_EYE].mean(0), landmarks[30], landmarks[48], landmarks[54]])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping src points onto dst, as a 2x3 matrix."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m
