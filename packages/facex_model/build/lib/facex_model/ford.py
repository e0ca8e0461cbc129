"""FORD — Facial Omni-Representation Decomposing (paper §3.2): identity tokens and per-region features.

Motion (pose f_P, expression f_E, gaze f_G), texture f_T and lighting f_L arrive as coefficient vectors from the
extractors and need no encoder here; the Representation Adapter in fors.py projects each of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionModel

from facex_model.regions import PAPER_REGIONS, region_masks

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class IdentityEncoder(nn.Module):
    """f_ID = Linear(ID tokens): ArcFace layer-4 map as (B, 64, 512) tokens, or the offline 128-d vector (B, 1, 128)."""

    def __init__(self, id_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(id_dim, out_dim)

    def forward(self, id_tokens: torch.Tensor) -> torch.Tensor:
        if id_tokens.ndim == 2:
            id_tokens = id_tokens.unsqueeze(1)
        return self.proj(id_tokens)


def clip_preprocess(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """[-1, 1] images -> CLIP's normalised pixel values at the encoder's input size."""
    x = (images.float() + 1) / 2
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(images.dtype)


class FPNAdapter(nn.Module):
    """Learnable FPN on ViT features: recovers a 2^(L-1)x finer map from the ViT's uniform patch grid.

    Level i (shallow to deep) is upsampled by transposed convs to scale 2^(L-1-i); a top-down pass adds each coarser
    level into the next finer one, so deep semantics reach the fine map and shallow layers supply the detail.
    """

    def __init__(self, in_dim: int, out_dim: int, num_levels: int = 3) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.laterals = nn.ModuleList()
        for i in range(num_levels):
            ups: list[nn.Module] = []
            for _ in range(num_levels - 1 - i):
                ups += [nn.ConvTranspose2d(in_dim, in_dim, kernel_size=2, stride=2), nn.GELU()]
            self.laterals.append(nn.Sequential(*ups, nn.Conv2d(in_dim, out_dim, kernel_size=1)))
        self.smooth = nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1)

    def forward(self, grids: list[torch.Tensor]) -> torch.Tensor:
        """grids: num_levels (B, C, g, g) maps, shallow to deep -> (B, out_dim, g * 2^(L-1), same)."""
        laterals = [lat(g) for lat, g in zip(self.laterals, grids)]
        p = laterals[-1]
        for lat in reversed(laterals[:-1]):
            p = F.interpolate(p, size=lat.shape[-2:], mode="nearest") + lat
        return self.smooth(p)


def mask_pool(features: torch.Tensor, masks: torch.Tensor, absent_tokens: torch.Tensor) -> torch.Tensor:
    """Masked average of a feature map per region; a region with no pixels gets its learned absent token.

    features (B, C, h, w); masks (B, R, H, W) in {0, 1} at any resolution divisible to (h, w); absent (R, C).
    Masks are area-downsampled to the feature grid, so a cell's weight is the fraction of it inside the region and
    cells wholly outside contribute nothing.
    """
    weights = F.interpolate(masks.to(features.dtype), size=features.shape[-2:], mode="area")
    area = weights.sum(dim=(-2, -1))
    pooled = torch.einsum("brhw,bchw->brc", weights, features) / area.clamp_min(1e-6).unsqueeze(-1)
    present = (area > 0).unsqueeze(-1)
    return torch.where(present, pooled, absent_tokens.to(features.dtype).unsqueeze(0))


def default_fpn_layers(num_hidden_layers: int, num_levels: int = 3) -> list[int]:
    """Evenly spaced encoder layers, shallow to deep, ending at the last (e.g. 8, 16, 24 for ViT-L/14)."""
    return [max(1, round(num_hidden_layers * (i + 1) / num_levels)) for i in range(num_levels)]


class RegionEncoder(nn.Module):
    """f_R: CLIP ViT patch features -> FPN adapter -> mask pooling over each parsing region -> (B, R, out_dim)."""

    def __init__(
        self,
        vision_dim: int,
        out_dim: int,
        fpn_layers: list[int],
        regions: tuple[str, ...] = PAPER_REGIONS,
    ) -> None:
        super().__init__()
        self.regions = tuple(regions)
        self.fpn_layers = list(fpn_layers)
        self.fpn = FPNAdapter(vision_dim, out_dim, num_levels=len(fpn_layers))
        self.absent_tokens = nn.Parameter(torch.randn(len(self.regions), out_dim) * 0.02)

    def feature_map(self, image_encoder: CLIPVisionModel, images: torch.Tensor) -> torch.Tensor:
        size = image_encoder.config.image_size
        out = image_encoder(pixel_values=clip_preprocess(images, size), output_hidden_states=True)
        grid = size // image_encoder.config.patch_size
        grids = []
        for layer in self.fpn_layers:
            tokens = out.hidden_states[layer][:, 1:]  # drop CLS: only patch tokens have a place on the grid
            grids.append(tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[-1], grid, grid))
        return self.fpn(grids)

    def forward(self, image_encoder: CLIPVisionModel, images: torch.Tensor, parsing: torch.Tensor) -> torch.Tensor:
        features = self.feature_map(image_encoder, images)
        masks = region_masks(parsing, self.regions)
        return mask_pool(features, masks, self.absent_tokens)
