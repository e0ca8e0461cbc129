"""Face extractors: one interface, pluggable backends chosen by name (``extract.extractors`` in params).

A backend is an :class:`ExtractorSet`: an aligner (detect + landmarks + aligned crop per frame) and
four batched extractors over aligned crops (parsing, identity, 3DMM/pose + expression, gaze). Output
shapes and dtypes are fixed by :mod:`facex_data.schema`.

Plugging in a backend (the ``paper`` one, later): put a module ``facex_data.extractors.<name>`` that
decorates a factory with ``@register_backend("<name>")``; :func:`build_extractors` imports it on first
use, so the Ray pipeline, the shard writer and the params schema need no change.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from facex_data import schema


@dataclass(frozen=True)
class ExtractorOptions:
    """What every backend factory receives (built by the pipeline from ``ExtractConfig``)."""

    crop_size: int = 256
    detector_upsample: int = 0
    models_dir: Path | None = None
    device: str = "cpu"
    detector: str = "scrfd"  # paper backend: "scrfd" (insightface, from models_dir) or "dlib" (shipped HOG + 68)


@dataclass
class AlignedFaces:
    """A batch of aligned face crops and their landmarks in crop coordinates."""

    crops: np.ndarray  # (B, S, S, 3) uint8 RGB
    landmarks: np.ndarray  # (B, 68, 2) float32 (x, y)

    def __len__(self) -> int:
        return len(self.crops)


@dataclass
class Detection:
    """The face kept in one frame: the largest one, with how many were found."""

    crop: np.ndarray  # (S, S, 3) uint8 RGB
    landmarks: np.ndarray  # (68, 2) float32, crop coordinates
    bbox: tuple[int, int, int, int]  # (left, top, right, bottom) in frame pixels
    n_faces: int
    transform: np.ndarray  # (2, 3) float64, frame -> crop similarity


class Extractor(Protocol):
    name: str
    version: str
    weights: dict[str, str]  # file name -> sha256
    num_gpus: float  # > 0 when the backend runs on a GPU (the pipeline then asks Ray for GPU actors)

    def __call__(self, faces: AlignedFaces) -> np.ndarray: ...


class FaceAligner(Protocol):
    name: str
    version: str
    weights: dict[str, str]
    num_gpus: float

    def __call__(self, frames: np.ndarray) -> list[Detection | None]: ...


@dataclass
class FaceFeatures:
    """Everything extracted from one frame, ready for the shard writer."""

    detection: Detection
    parsing: np.ndarray
    identity: np.ndarray
    tdmm: np.ndarray
    gaze: np.ndarray


@dataclass
class ExtractorSet:
    """A backend: the aligner and the four extractors, called together on a batch of frames."""

    backend: str
    aligner: FaceAligner
    parsing: Extractor
    identity: Extractor
    tdmm: Extractor
    gaze: Extractor
    parsing_classes: tuple[str, ...]  # classes this backend can produce; every other pixel is UNKNOWN
    options: ExtractorOptions = field(default_factory=ExtractorOptions)

    @property
    def num_gpus(self) -> float:
        return max(e.num_gpus for e in (self.aligner, self.parsing, self.identity, self.tdmm, self.gaze))

    def describe(self) -> dict:
        """Name, version and weight hashes of every part (recorded in each sample's json)."""
        parts = {"detector": self.aligner, "parsing": self.parsing, "identity": self.identity,
                 "tdmm": self.tdmm, "gaze": self.gaze}
        return {
            "backend": self.backend,
            **{role: {"name": e.name, "version": e.version, "weights": dict(e.weights)} for role, e in parts.items()},
            "parsing_classes": list(self.parsing_classes),
            "parsing_unknown_value": schema.UNKNOWN,
            "tdmm_layout": {k: list(v) for k, v in schema.TDMM_LAYOUTS[self.backend].items()},
        }

    def __call__(self, frames: np.ndarray) -> list[FaceFeatures | None]:
        """Extract features for a (B, H, W, 3) uint8 RGB batch; None where a frame shows no face."""
        detections = self.aligner(frames)
        found = [d for d in detections if d is not None]
        if not found:
            return [None] * len(detections)
        faces = AlignedFaces(np.stack([d.crop for d in found]), np.stack([d.landmarks for d in found]))
        parsing, identity, tdmm, gaze = (self.parsing(faces), self.identity(faces), self.tdmm(faces),
                                         self.gaze(faces))
        out: list[FaceFeatures | None] = []
        j = 0
        for d in detections:
            if d is None:
                out.append(None)
                continue
            feats = FaceFeatures(d, parsing[j], identity[j], tdmm[j], gaze[j])
            schema.check_sample_arrays(self.backend, feats.identity, feats.tdmm, feats.gaze, d.landmarks,
                                       feats.parsing, self.options.crop_size)
            out.append(feats)
            j += 1
        return out


BackendFactory = Callable[[ExtractorOptions], ExtractorSet]
_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Decorator: make ``factory(options) -> ExtractorSet`` available as backend ``name``."""

    def wrap(factory: BackendFactory) -> BackendFactory:
        _BACKENDS[name] = factory
        return factory

    return wrap


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def build_extractors(name: str, options: ExtractorOptions | None = None) -> ExtractorSet:
    """The backend registered as ``name`` (importing ``facex_data.extractors.<name>`` if needed)."""
    if name not in _BACKENDS:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    if name not in _BACKENDS:
        raise ValueError(
            f"extractor backend {name!r} is not available in this installation (registered: "
            f"{', '.join(available_backends()) or 'none'}); set extract.extractors in the params file"
        )
    return _BACKENDS[name](options or ExtractorOptions())


@functools.cache
def sha256_file(path: Path) -> str:
    """sha256 of a weight file (cached: workers hash each file once)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = [
    "AlignedFaces", "Detection", "Extractor", "ExtractorOptions", "ExtractorSet", "FaceAligner", "FaceFeatures",
    "available_backends", "build_extractors", "register_backend", "sha256_file",
]
