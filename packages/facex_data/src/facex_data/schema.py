"""The shard sample schema: every key, shape and dtype a FaceX WebDataset sample carries.

One sample = one sampled video frame. Members of a sample in a ``shard-%06d.tar``::

    <key>.jpg          aligned face crop, RGB, CROP_SIZE x CROP_SIZE (config), JPEG at fixed quality
    <key>.parsing.png  uint8 HxW class map in BiSeNet-19 (CelebAMask-HQ) ids; UNKNOWN (255) where the
                       backend cannot tell (the offline backend: hair, ears, neck, background, ...)
    <key>.id.npy       identity embedding, float32 (ID_DIM[backend],)
    <key>.tdmm.npy     float32 coefficients; the layout depends on the backend (TDMM_LAYOUTS)
    <key>.gaze.npy     float32 (2,) = (yaw, pitch) in radians, + = subject looks to image right / down
    <key>.lmk.npy      float32 (68, 2) landmarks in crop pixel coordinates (x, y), dlib/iBUG-68 order
    <key>.json         clip id, frame index, fps, time, bbox, faces found, backends, attributes
    <key>.idmap.npy    (paper backend only) float16 IDMAP_SHAPE: ArcFace iresnet100 layer-4 map of the
                       IDMAP_CROP-px aligned crop, channels first; ``.reshape(512, -1).T`` = 64 tokens x 512
    <key>.latent.npy   (when extract.latents_vae is set) float16 (2C, h, w): the VAE posterior's mean and log-variance
                       of the stored JPEG crop at the training resolution the json names (``latents.resolution``),
                       so training samples latents without running the VAE encoder

Key: ``__key__ = <clip_id>/<frame_index:06d>``. WebDataset splits a member name into key and
extension at the first dot *of the basename* (``^((?:.*/|)[^.]+)[.]([^/]*)$``), so the ``/`` is safe
and ``tar`` shows one folder per clip; a dot in a clip id would cut the key, so dots in clip ids are
written as ``_`` in the key (the json keeps the true clip id).
"""

from __future__ import annotations

import numpy as np

SCHEMA_VERSION = 1

JPG = "jpg"
PARSING = "parsing.png"
IDENTITY = "id.npy"
TDMM = "tdmm.npy"
GAZE = "gaze.npy"
LANDMARKS = "lmk.npy"
META = "json"
IDMAP = "idmap.npy"
LATENT = "latent.npy"
SAMPLE_KEYS = (JPG, PARSING, IDENTITY, TDMM, GAZE, LANDMARKS, META)
OPTIONAL_SAMPLE_KEYS = (IDMAP, LATENT)  # written when the backend / settings produce them, read back when present
LATENT_DTYPE = np.float16

# ArcFace (paper backend): the 512-d embedding (L2-normalised) comes from the standard 112-px aligned
# crop; the identity map from a 128-px crop (insightface norm_crop convention), as Face-Adapter feeds it:
# iresnet100 downsamples 16x, so layer 4 is 512 x 8 x 8 = 64 tokens of 512.
ARCFACE_CROP = 112
IDMAP_CROP = 128
IDMAP_SHAPE = (512, IDMAP_CROP // 16, IDMAP_CROP // 16)
IDMAP_DTYPE = np.float16

N_LANDMARKS = 68
GAZE_DIM = 2
UNKNOWN = 255  # parsing value for "the backend cannot classify this pixel"

# BiSeNet-19 / CelebAMask-HQ ids. l_/r_ follow dlib's numbering: l_ = the image-left one (points 17-21, 36-41).
PARSING_CLASSES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "glasses", "l_ear", "r_ear", "earring",
    "nose", "mouth", "u_lip", "l_lip", "neck", "necklace", "cloth", "hair", "hat",
)
CLASS_ID = {name: i for i, name in enumerate(PARSING_CLASSES)}

# Offline tdmm.npy: pose from solvePnP, then normalised landmark-geometry expression features.
OFFLINE_EXPRESSION = (
    "mouth_open", "mouth_width", "l_eye_open", "r_eye_open", "l_brow_raise", "r_brow_raise",
    "smile", "lip_corner_asym", "jaw_drop", "brow_squeeze",
)
TDMM_LAYOUTS: dict[str, dict[str, tuple[int, int]]] = {
    # yaw/pitch/roll in radians (yaw + = nose turned towards image left); translation x/z, y/z, z/1000
    "offline": {"angles": (0, 3), "translation": (3, 6), "expression": (6, 6 + len(OFFLINE_EXPRESSION))},
    # Deep3DFaceRecon (paper backend): 257 coefficients, DESIGN §3
    "paper": {"identity": (0, 80), "expression": (80, 144), "texture": (144, 224), "angles": (224, 227),
              "lighting": (227, 254), "translation": (254, 257)},
}
TDMM_DIM = {name: max(end for _, end in layout.values()) for name, layout in TDMM_LAYOUTS.items()}
# Face-Adapter's Deep3DFaceRecon variant has one more head: 4 pupil coefficients after the 257
TDMM_OPTIONAL: dict[str, dict[str, tuple[int, int]]] = {"paper": {"pupil": (257, 261)}}
ID_DIM = {"offline": 128, "paper": 512}


def sample_key(clip_id: str, frame_index: int) -> str:
    """``__key__`` of a frame: ``<clip_id>/<frame_index:06d>`` (dots in the clip id become ``_``)."""
    return f"{clip_id.replace('.', '_')}/{frame_index:06d}"


def check_sample_arrays(backend: str, identity: np.ndarray, tdmm: np.ndarray, gaze: np.ndarray,
                        landmarks: np.ndarray, parsing: np.ndarray, crop_size: int,
                        idmap: np.ndarray | None = None) -> None:
    """Raise ValueError if an extractor returned a shape/dtype the schema does not allow."""
    tdmm_dims = (TDMM_DIM[backend], *(end for _, end in TDMM_OPTIONAL.get(backend, {}).values()))
    tdmm_dim = tdmm.shape[0] if tdmm.ndim == 1 and tdmm.shape[0] in tdmm_dims else TDMM_DIM[backend]
    expected = {
        "id": (identity, (ID_DIM[backend],), np.float32),
        "tdmm": (tdmm, (tdmm_dim,), np.float32),
        "gaze": (gaze, (GAZE_DIM,), np.float32),
        "lmk": (landmarks, (N_LANDMARKS, 2), np.float32),
        "parsing": (parsing, (crop_size, crop_size), np.uint8),
    }
    if idmap is not None:
        expected["idmap"] = (idmap, IDMAP_SHAPE, IDMAP_DTYPE)
    for name, (arr, shape, dtype) in expected.items():
        if arr.shape != shape or arr.dtype != dtype:
            raise ValueError(f"{backend} {name}: got {arr.dtype}{arr.shape}, schema says {np.dtype(dtype)}{shape}")


def split_tdmm(tdmm: np.ndarray, backend: str) -> dict[str, np.ndarray]:
    """Coefficients (..., D) -> named arrays (pose ``angles``, ``expression``, ...) by the backend's layout."""
    layout = dict(TDMM_LAYOUTS[backend])
    layout.update({k: v for k, v in TDMM_OPTIONAL.get(backend, {}).items() if tdmm.shape[-1] >= v[1]})
    return {name: tdmm[..., a:b] for name, (a, b) in layout.items()}
