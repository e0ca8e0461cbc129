"""Face extractors: one interface, pluggable backends chosen by name (``extract.extractors`` in params).

A backend is an :class:`ExtractorSet`: an aligner (detect + landmarks + 5 points + aligned crop per
frame) and four batched extractors over :class:`AlignedFaces` (parsing, identity, 3DMM/pose +
expression, gaze). Callers use its two calls, :meth:`ExtractorSet.features` (frames) and
:meth:`ExtractorSet.measure` (aligned faces). Output shapes and dtypes are fixed by :mod:`facex_data.schema`.

Plugging in a backend (the ``paper`` one, later): put a module ``facex_data.extractors.<name>`` that
decorates a factory with ``@register_backend("<name>")``; :func:`build_extractors` imports it on first
use, so the Ray pipeline, the shard writer and the params schema need no change.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facex_data import schema


@dataclass(frozen=True)
class ExtractorOptions:
    """What every backend factory receives (built from the extract section and the weights dir)."""

    crop_size: int = 256
    detector_upsample: int = 0
    weights_dir: Path | None = None
    device: str = "cpu"
    detector: str = "scrfd"  # paper backend: "scrfd" (insightface, from weights_dir) or "dlib" (shipped HOG + 68)

    @classmethod
    def recorded(
        cls, meta: Mapping[str, Any], weights_dir: Path | None = None, device: str = "cpu"
    ) -> ExtractorOptions:
        """The options that rebuild the backend a shard sample was written with (its json records the crop size
        and every part), so that generated faces are measured exactly as the training data was."""
        aligner = meta["extractors"]["detector"]["name"]
        if aligner not in DETECTOR_OF_ALIGNER:
            raise ValueError(f"shards were aligned by {aligner!r}, which this version cannot rebuild; re-extract")
        return cls(crop_size=int(meta["crop_size"]), weights_dir=weights_dir, device=device,
                   detector=DETECTOR_OF_ALIGNER[aligner])  # fmt: skip


# the aligner a sample json names -> the ExtractorOptions.detector that builds it (their `name` attributes)
DETECTOR_OF_ALIGNER = {"insightface-scrfd": "scrfd", "dlib-hog-landmarks68": "dlib"}


@dataclass
class Detection:
    """The face kept in one frame: the largest one, with how many were found."""

    crop: np.ndarray  # (S, S, 3) uint8 RGB
    landmarks: np.ndarray  # (68, 2) float32, crop coordinates
    bbox: tuple[int, int, int, int]  # (left, top, right, bottom) in frame pixels
    n_faces: int
    transform: np.ndarray  # (2, 3) float64, frame -> crop similarity
    points5: np.ndarray  # (5, 2) float32 eye centres, nose tip, mouth corners in crop coordinates (the detector's own
    # keypoints where it has them, else taken from the 68 landmarks): what the paper's extractors align to


@dataclass
class AlignedFaces:
    """A batch of aligned face crops and their points in crop coordinates: what the extractors read."""

    crops: np.ndarray  # (B, S, S, 3) uint8 RGB
    landmarks: np.ndarray  # (B, 68, 2) float32 (x, y)
    points5: np.ndarray  # (B, 5, 2) float32

    def __len__(self) -> int:
        return len(self.crops)

    @classmethod
    def of(cls, crops: np.ndarray, landmarks: np.ndarray) -> AlignedFaces:
        """Faces known only by their 68 landmarks (e.g. a generated crop in a known face's frame)."""
        from facex_data.extractors.align import five_points

        landmarks = np.asarray(landmarks, np.float32)
        return cls(np.asarray(crops), landmarks, np.stack([five_points(p) for p in landmarks]).astype(np.float32))

    @classmethod
    def from_detections(cls, detections: Sequence[Detection]) -> AlignedFaces:
        return cls(np.stack([d.crop for d in detections]), np.stack([d.landmarks for d in detections]),
                   np.stack([d.points5 for d in detections]))  # fmt: skip


@dataclass
class Measurements:
    """What a backend's four extractors read off a batch of aligned faces (index i = face i)."""

    parsing: np.ndarray  # (B, S, S) uint8 BiSeNet-19 ids (schema.UNKNOWN where the backend cannot tell)
    identity: np.ndarray  # (B, ID_DIM) float32 embedding
    tdmm: np.ndarray  # (B, TDMM_DIM) float32 coefficients (schema.TDMM_LAYOUTS)
    gaze: np.ndarray  # (B, 2) float32 yaw, pitch in radians
    idmap: np.ndarray | None = None  # (B, *schema.IDMAP_SHAPE) the identity network's feature map, where it has one

    def __len__(self) -> int:
        return len(self.identity)


@dataclass
class FaceFeatures:
    """Everything extracted from one frame's face, ready for the shard writer or the model."""

    detection: Detection
    parsing: np.ndarray
    identity: np.ndarray
    tdmm: np.ndarray
    gaze: np.ndarray
    idmap: np.ndarray | None = None


class Extractor(Protocol):
    """One of the parsing / tdmm / gaze extractors: aligned faces -> one array per face."""

    name: str
    version: str
    weights: dict[str, str]  # file name -> sha256
    num_gpus: float  # > 0 when the backend runs on a GPU (the extraction then asks Ray for GPU actors)

    def __call__(self, faces: AlignedFaces) -> np.ndarray: ...


class IdentityExtractor(Protocol):
    """The identity extractor: aligned faces -> (embeddings, feature maps or None)."""

    name: str
    version: str
    weights: dict[str, str]
    num_gpus: float

    def __call__(self, faces: AlignedFaces) -> tuple[np.ndarray, np.ndarray | None]: ...


class FaceAligner(Protocol):
    name: str
    version: str
    weights: dict[str, str]
    num_gpus: float

    def __call__(self, frames: np.ndarray) -> list[Detection | None]: ...

    def boxes(self, frame: np.ndarray) -> list[tuple[int, int, int, int]]:
        """(left, top, right, bottom) of every face this detector finds in one (H, W, 3) uint8 RGB frame, in the
        order it ranks them: the first is the face `__call__` keeps (so a face index means the same face to both)."""
        ...


@dataclass
class ExtractorSet:
    """A backend: an aligner and four extractors. Every caller uses its two calls, never a part directly:

    - :meth:`features`: frames -> the largest face of each, aligned and measured (extraction, inference, video);
    - :meth:`measure`: already aligned faces -> their measurements (evaluation of generated faces, video frames
      re-aligned along a smoothed track).
    """

    backend: str
    aligner: FaceAligner
    parsing: Extractor
    identity: IdentityExtractor
    tdmm: Extractor
    gaze: Extractor
    parsing_classes: tuple[str, ...]  # classes this backend can produce; every other pixel is UNKNOWN
    options: ExtractorOptions = field(default_factory=ExtractorOptions)
    extra_description: dict = field(default_factory=dict)  # backend-specific facts for the sample json

    @property
    def num_gpus(self) -> float:
        return max(e.num_gpus for e in (self.aligner, self.parsing, self.identity, self.tdmm, self.gaze))

    def describe(self) -> dict:
        """Name, version and weight hashes of every part (recorded in each sample's json)."""
        parts = {"detector": self.aligner, "parsing": self.parsing, "identity": self.identity,
                 "tdmm": self.tdmm, "gaze": self.gaze}
        out = {
            "backend": self.backend,
            **{role: {"name": e.name, "version": e.version, "weights": dict(e.weights)} for role, e in parts.items()},
            "parsing_classes": list(self.parsing_classes),
            "parsing_unknown_value": schema.UNKNOWN,
            "tdmm_layout": {k: list(v) for k, v in schema.TDMM_LAYOUTS[self.backend].items()},
        }
        for key, value in self.extra_description.items():
            out[key] = {**out[key], **value} if isinstance(out.get(key), dict) else value
        return out

    def measure(self, faces: AlignedFaces) -> Measurements:
        """The four extractors on a batch of aligned faces; shapes and dtypes checked against the schema."""
        identity, idmap = self.identity(faces)
        out = Measurements(self.parsing(faces), identity, self.tdmm(faces), self.gaze(faces), idmap)
        for i in range(len(faces)):
            schema.check_sample_arrays(self.backend, out.identity[i], out.tdmm[i], out.gaze[i], faces.landmarks[i],
                                       out.parsing[i], self.options.crop_size, None if idmap is None else idmap[i])
        return out

    def features(self, frames: np.ndarray) -> list[FaceFeatures | None]:
        """Align and measure the largest face of each (B, H, W, 3) uint8 RGB frame; None where none is found."""
        detections = self.aligner(frames)
        found = iter(self.measured([d for d in detections if d is not None]))
        return [None if d is None else next(found) for d in detections]

    def measured(self, detections: Sequence[Detection]) -> list[FaceFeatures]:
        """Faces already aligned (by the aligner, or re-cropped at a kept alignment) -> their features, one each."""
        if not detections:
            return []
        m = self.measure(AlignedFaces.from_detections(detections))
        return [FaceFeatures(d, m.parsing[j], m.identity[j], m.tdmm[j], m.gaze[j],
                             None if m.idmap is None else m.idmap[j]) for j, d in enumerate(detections)]  # fmt: skip


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
    "IdentityExtractor", "Measurements", "available_backends", "build_extractors", "register_backend", "sha256_file",
]
