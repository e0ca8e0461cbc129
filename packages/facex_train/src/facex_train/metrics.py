"""Evaluation metrics (paper §4, Tables 1-3), all computed with torchmetrics or the extractor backend.

- ID similarity: cosine between the identity embedding of the output and of the source (higher is better).
- Pose / expression / gaze L2: Euclidean distance between the output's and the target's coefficients, measured by
  the same extractor backend that wrote the shards (lower is better).
- FID between generated outputs and real held-out frames: torchmetrics' FrechetInceptionDistance fed by either the
  TensorFlow-FID InceptionV3 (``facex_train.fid_inception``, weights from the weights dir) -> reported as ``fid``, or a
  fixed random-conv stand-in network (:class:`StandinFeatures`) -> reported as ``fid_standin``. Stand-in values only
  compare models evaluated with the same stand-in; they are not comparable to any published FID.
- SSIM / PSNR / RMSE on self-reconstruction (source and target from the same clip), images scaled to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.functional.regression import cosine_similarity, mean_squared_error
from torchmetrics.image.fid import FrechetInceptionDistance

from facex_data.extractors import AlignedFaces, ExtractorSet
from facex_model.features import tdmm_parts, to_uint8

PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; capped so metrics.json stays finite (and valid JSON)
STANDIN = "standin"


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Model images in [-1, 1] -> [0, 1] float."""
    return images.float().add(1.0).div(2.0).clamp(0.0, 1.0)


def id_similarity(output_identity: torch.Tensor, source_identity: torch.Tensor) -> torch.Tensor:
    """(B,) cosine similarity of identity embeddings (paper Table 1/2 "ID")."""
    return cosine_similarity(output_identity.float(), source_identity.float(), reduction="none")


def l2_distance(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) Euclidean distance between coefficient vectors (paper Table 1/2 "Pose", "Exp", "Gaze")."""
    return torch.linalg.vector_norm(output.float() - target.float(), dim=-1)


def id_retrieval(
    queries: torch.Tensor,
    query_labels: Sequence[str],
    gallery: torch.Tensor,
    gallery_labels: Sequence[str],
    ks: Sequence[int] = (1, 5),
    found: torch.Tensor | None = None,
) -> dict[int, float]:
    """{k: top-k ID retrieval rate}: how often a query's own label is among the k gallery entries most like it
    (cosine). `found` (B,) bool marks queries that exist: a missing one (no face in the output) is a failure."""
    index = {label: i for i, label in enumerate(gallery_labels)}
    if len(index) != len(gallery_labels):
        raise ValueError("gallery labels must be distinct (one embedding per identity)")
    sims = F.normalize(queries.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T  # (B, G)
    ranks = sims.argsort(dim=1, descending=True)
    own = torch.tensor([index[label] for label in query_labels])
    position = (ranks == own[:, None]).float().argmax(dim=1)  # 0 = the nearest
    ok = torch.ones(len(own), dtype=torch.bool) if found is None else found.bool()
    return {k: float(((position < k) & ok).float().mean()) for k in ks}


def reconstruction_metrics(output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image SSIM, PSNR (dB, capped at PSNR_CAP_DB) and RMSE of (B, 3, H, W) images in [-1, 1] (paper Table 3)."""
    preds, goal = to_unit(output), to_unit(target)
    ssim = structural_similarity_index_measure(preds, goal, data_range=1.0, reduction="none")
    psnr = peak_signal_noise_ratio(preds, goal, data_range=1.0, reduction="none", dim=(1, 2, 3))
    rmse = torch.stack([mean_squared_error(p.reshape(-1), g.reshape(-1), squared=False) for p, g in zip(preds, goal)])
    return {"ssim": ssim, "psnr": psnr.clamp(max=PSNR_CAP_DB), "rmse": rmse}


class StandinFeatures(nn.Module):
    """FID stand-in feature network for the embedded profile: three fixed random conv layers, mean+std pooled.

    Seeded independently of the global RNG, so every model in every run is measured by the same network. It has
    no notion of image statistics Inception learned: its FID only ranks models evaluated with it, and is reported
    as ``fid_standin``, never as ``fid``.
    """

    num_features = 128
    input_size = 64

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList(
            [nn.Conv2d(3, 16, 3, stride=2), nn.Conv2d(16, 32, 3, stride=2), nn.Conv2d(32, 64, 3, stride=2)]
        )
        with torch.no_grad():
            for conv in self.convs:
                fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                conv.bias.zero_()
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> (B, 128)."""
        x = F.interpolate(images.float(), size=(self.input_size,) * 2, mode="bilinear", antialias=True)
        x = x * 2.0 - 1.0
        for conv in self.convs:
            x = F.relu(conv(x))
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def build_fid(fid_features: str, weights_dir: Path | None) -> tuple[str, FrechetInceptionDistance]:
    """(metric name, torchmetrics FID) for ``evaluate.fid_features``: "standin", or a folder under the weights dir
    holding the FID Inception weights (``facex_train.fid_inception.WEIGHTS_FILE``). Images go in as [0, 1] floats."""
    if fid_features == STANDIN:
        return "fid_standin", FrechetInceptionDistance(feature=StandinFeatures(), normalize=True)
    from facex_train.fid_inception import load_fid_inception

    if weights_dir is None:
        raise FileNotFoundError(f"evaluate.fid_features = {fid_features!r} needs weights.dir (the weights folder)")
    network = load_fid_inception(Path(weights_dir) / fid_features)
    return "fid", FrechetInceptionDistance(feature=network, normalize=True)


@dataclass
class FaceMeasurement:
    """What the extractor backend reads off a batch of generated faces."""

    identity: torch.Tensor  # (B, D) identity embedding
    pose: torch.Tensor  # (B, 3)
    expression: torch.Tensor  # (B, E)
    gaze: torch.Tensor  # (B, 2)
    detected: torch.Tensor  # (B,) bool: the aligner found a face in the output (else the target's landmarks were used)


class FaceMeasurer:
    """Measures generated faces with an extractor backend (``facex_data.extractors.ExtractorSet``).

    An output is generated in the target's aligned-crop frame. It is resized to the backend's crop size and
    re-detected; where the aligner finds no face (common for an untrained model) the target's landmarks stand in
    for the crop, and ``detected`` says so. With the offline backend, pose and expression are read from landmarks
    only, so an undetected output's pose and expression are the target's: read them together with the detection rate.
    """

    def __init__(self, extractors: ExtractorSet) -> None:
        self.extractors = extractors
        self.backend = extractors.backend
        self.crop_size = extractors.options.crop_size

    def measure(self, images: torch.Tensor, fallback_landmarks: Sequence[np.ndarray] | np.ndarray) -> FaceMeasurement:
        """images (B, 3, H, W) in [-1, 1], in the target's crop frame; fallback_landmarks (B, 68, 2) in crop_size px."""
        size = self.crop_size
        if images.shape[-1] != size or images.shape[-2] != size:
            images = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
        frames = to_uint8(images)
        found = self.extractors.features(frames)
        missed = [i for i, f in enumerate(found) if f is None]
        rows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
            i: (f.identity, f.tdmm, f.gaze) for i, f in enumerate(found) if f is not None
        }
        if missed:
            fallback = AlignedFaces.of(frames[missed], np.stack([np.asarray(fallback_landmarks[i]) for i in missed]))
            m = self.extractors.measure(fallback)
            rows.update({i: (m.identity[k], m.tdmm[k], m.gaze[k]) for k, i in enumerate(missed)})
        identity, tdmm, gaze = (np.stack([rows[i][j] for i in range(len(frames))]) for j in range(3))
        parts = tdmm_parts(tdmm.astype(np.float32), self.backend)
        detected = torch.tensor([f is not None for f in found])
        return FaceMeasurement(torch.from_numpy(identity.astype(np.float32)), parts["angles"], parts["expression"],
                               torch.from_numpy(gaze.astype(np.float32)), detected)  # fmt: skip
