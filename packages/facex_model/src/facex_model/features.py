"""Extracted face features -> the model's per-side tensors.

One place says how a shard sample (``facex_data.shards.decode_sample``) or a freshly extracted
``facex_data.extractors.FaceFeatures`` becomes the inputs FaceXModel reads for one side of a pair:

    <side>_image       float (3, R, R) in [-1, 1], the aligned crop resized to the training resolution
    <side>_parsing     long (R, R) BiSeNet-19 ids (255 = unknown), nearest-resized
    <side>_id          float (T, D): the ArcFace layer-4 map as T tokens (paper backend, when stored),
                       else the identity vector as one token
    <side>_pose        float (3,) yaw/pitch/roll (radians)
    <side>_expression  float (E,) 10 landmark-geometry features (offline) or 64 3DMM coefficients (paper)
    <side>_gaze        float (2,) yaw/pitch (radians)
    <side>_texture     float (80,) 3DMM texture (paper backend only)
    <side>_lighting    float (27,) SH lighting (paper backend only)

Training, inference and evaluation all go through :func:`side_inputs`, so a model trained on shards
sees exactly what it sees when a user hands it a photo; :func:`to_uint8` is the way back to pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from facex_data import schema
from facex_data.latents import training_pixels
from facex_data.layout import sample_backend

SIDES = ("source", "target", "reference")
FEATURE_NAMES = ("image", "parsing", "id", "pose", "expression", "gaze", "texture", "lighting")


def tdmm_parts(tdmm: np.ndarray | torch.Tensor, backend: str) -> dict[str, torch.Tensor]:
    """Stored tdmm coefficients -> the named parts of the backend's layout (``schema.split_tdmm``), as tensors."""
    if backend not in schema.TDMM_LAYOUTS:
        raise ValueError(f"unknown extractor backend {backend!r}; known: {', '.join(schema.TDMM_LAYOUTS)}")
    t = np.asarray(tdmm, dtype=np.float32)
    if t.shape[-1] < schema.TDMM_DIM[backend]:
        raise ValueError(f"{backend} tdmm has {t.shape[-1]} coefficients, the layout needs {schema.TDMM_DIM[backend]}")
    return {name: torch.as_tensor(part) for name, part in schema.split_tdmm(t, backend).items()}


def identity_tokens(identity: Any, idmap: Any | None = None) -> torch.Tensor:
    """(T, D) identity tokens: a stored (D, h, w) ArcFace map flattened row-major, else the vector as 1 token."""
    if idmap is not None:
        m = torch.as_tensor(np.asarray(idmap, dtype=np.float32))
        return m.flatten(1).transpose(0, 1).contiguous()
    return torch.as_tensor(np.asarray(identity, dtype=np.float32)).reshape(1, -1)


def image_tensor(image: Any, resolution: int) -> torch.Tensor:
    """uint8 (3, H, W) tensor or (H, W, 3) array -> float (3, R, R) in [-1, 1], resized on the uint8 pixels by
    ``facex_data.latents.training_pixels`` (the resize precomputed latents were made from, too)."""
    a = np.asarray(image)
    if a.ndim != 3:
        raise ValueError(f"expected an RGB image, got shape {a.shape}")
    if a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.shape[-1] != 3:
        raise ValueError(f"expected an RGB image, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a.astype(np.float32)), 0, 255).astype(np.uint8)
    a = training_pixels(a, resolution)
    x = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float()
    return x.div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Model images in [-1, 1], (..., 3, H, W) -> (..., H, W, 3) uint8 RGB: the inverse of :func:`image_tensor`."""
    pixels = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte()
    return pixels.movedim(-3, -1).cpu().numpy()


def parsing_tensor(parsing: Any, resolution: int) -> torch.Tensor:
    """uint8 (H, W) class map -> long (R, R), nearest-resized (class ids are labels, never blended)."""
    p = np.asarray(parsing)
    if p.shape[-2:] != (resolution, resolution):
        p = cv2.resize(np.ascontiguousarray(p.astype(np.uint8)), (resolution, resolution),
                       interpolation=cv2.INTER_NEAREST)  # fmt: skip
    return torch.from_numpy(np.ascontiguousarray(p)).long()


def side_inputs(
    *,
    image: Any,
    parsing: Any,
    identity: Any,
    tdmm: Any,
    gaze: Any,
    backend: str,
    resolution: int,
    idmap: Any | None = None,
    latent: Any | None = None,
) -> dict[str, torch.Tensor]:
    """One face's features -> unbatched model inputs (names without the side prefix); `latent`: the crop's VAE
    posterior moments at `resolution` when they were precomputed (``latent``: float (2C, h, w))."""
    parts = tdmm_parts(tdmm, backend)
    out = {
        "image": image_tensor(image, resolution),
        "parsing": parsing_tensor(parsing, resolution),
        "id": identity_tokens(identity, idmap),
        "pose": parts["angles"],
        "expression": parts["expression"],
        "gaze": torch.as_tensor(np.asarray(gaze, dtype=np.float32)),
    }
    for name in ("texture", "lighting"):
        if name in parts:
            out[name] = parts[name]
    if latent is not None:
        out["latent"] = torch.as_tensor(np.asarray(latent, dtype=np.float32))
    return out


def sample_inputs(sample: Mapping[str, Any], resolution: int) -> dict[str, torch.Tensor]:
    """A decoded shard sample (``facex_data.shards.decode_arrays``) -> unbatched model inputs; its precomputed
    latents come along when they were made at `resolution`."""
    latents = sample["meta"].get("latents") or {}
    return side_inputs(
        image=sample["image"],
        parsing=sample["parsing"],
        identity=sample["id"],
        tdmm=sample["tdmm"],
        gaze=sample["gaze"],
        idmap=sample.get("idmap"),
        backend=sample_backend(sample["meta"]),
        resolution=resolution,
        latent=sample.get("latent") if latents.get("resolution") == resolution else None,
    )


def features_inputs(features: Any, backend: str, resolution: int) -> dict[str, torch.Tensor]:
    """A ``facex_data.extractors.FaceFeatures`` (one detected face) -> unbatched model inputs."""
    return side_inputs(
        image=features.detection.crop,
        parsing=features.parsing,
        identity=features.identity,
        tdmm=features.tdmm,
        gaze=features.gaze,
        idmap=features.idmap,
        backend=backend,
        resolution=resolution,
    )


def collate_sides(items: Sequence[Mapping[str, Mapping[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """[{side: {name: tensor}}, ...] -> the model's batch {f"{side}_{name}": stacked tensor}."""
    if not items:
        raise ValueError("cannot collate an empty list of samples")
    out: dict[str, torch.Tensor] = {}
    for side, feats in items[0].items():
        for name in feats:
            out[f"{side}_{name}"] = torch.stack([item[side][name] for item in items])
    return out


def batch_to(batch: Mapping[str, torch.Tensor], device: torch.device | str, dtype: torch.dtype | None = None):
    """Move a batch to a device; floating tensors also to `dtype` when given (parsing stays integer)."""
    moved = {}
    for key, value in batch.items():
        if dtype is not None and value.is_floating_point():
            moved[key] = value.to(device=device, dtype=dtype)
        else:
            moved[key] = value.to(device)
    return moved


def backend_config(backend: str) -> dict[str, Any]:
    """The FaceXConfig fields fixed by the extractor backend whose features the model reads."""
    if backend == "offline":
        return {
            "extractors": backend,
            "id_dim": schema.ID_DIM["offline"],
            "id_tokens": 1,
            "vector_dims": {
                "pose": 3,
                "expression": len(schema.OFFLINE_EXPRESSION),
                "gaze": schema.GAZE_DIM,
                "texture": 0,
                "lighting": 0,
            },
        }
    if backend == "paper":
        layout = schema.TDMM_LAYOUTS["paper"]
        dims = {name: b - a for name, (a, b) in layout.items()}
        return {
            "extractors": backend,
            "id_dim": schema.ID_DIM["paper"],
            "id_tokens": schema.IDMAP_SHAPE[1] * schema.IDMAP_SHAPE[2],
            "vector_dims": {
                "pose": dims["angles"],
                "expression": dims["expression"],
                "gaze": schema.GAZE_DIM,
                "texture": dims["texture"],
                "lighting": dims["lighting"],
            },
        }
    raise ValueError(f"unknown extractor backend {backend!r}; known: offline, paper")
