"""The facial region vocabulary and how the BiSeNet-19 (CelebAMask-HQ) classes group into regions.

Class ids are :mod:`facex_data.schema`'s (``CLASS_ID``); a pixel a backend cannot classify
(``schema.UNKNOWN``) belongs to no region.
"""

from __future__ import annotations

import functools

import torch

from facex_data.schema import CLASS_ID

REGION_CLASSES: dict[str, tuple[str, ...]] = {
    "brows": ("l_brow", "r_brow"),
    "eyes": ("l_eye", "r_eye"),
    "nose": ("nose",),
    "lips": ("mouth", "u_lip", "l_lip"),
    "ears": ("l_ear", "r_ear", "earring"),
    "skin": ("skin",),
    "hair": ("hair",),
    "background": ("background",),
    "glasses": ("glasses",),
    "neck": ("neck",),
    "cloth": ("necklace", "cloth"),
    "hat": ("hat",),
}
REGION_CLASS_IDS: dict[str, tuple[int, ...]] = {
    region: tuple(CLASS_ID[c] for c in classes) for region, classes in REGION_CLASSES.items()
}

# The paper's FORD regions (§3.2); the rest of the vocabulary serves region editing and the region assembler.
PAPER_REGIONS: tuple[str, ...] = ("brows", "eyes", "nose", "lips", "ears", "skin", "hair", "background")
ALL_REGIONS: tuple[str, ...] = tuple(REGION_CLASS_IDS)

FACE_REGIONS: tuple[str, ...] = ("brows", "eyes", "nose", "lips", "skin")
HEAD_REGIONS: tuple[str, ...] = (*FACE_REGIONS, "ears", "hair")


def region_masks(parsing: torch.Tensor, regions: tuple[str, ...] | list[str] = PAPER_REGIONS) -> torch.Tensor:
    """(B, H, W) integer parsing map -> (B, R, H, W) float {0, 1} masks, one per region, in `regions` order.

    One lookup in a (R, 256) class-to-region table rather than a membership test per region: a training step
    makes these masks a dozen times, and on the CPU the per-region tests cost 3 % of the step."""
    if parsing.ndim == 4:
        parsing = parsing.squeeze(1)
    table = _region_table(tuple(regions), parsing.device)
    index = parsing.long()
    inside = (index >= 0) & (index < 256)  # a value outside the byte range (none in a shard) is in no region
    masks = table[:, torch.where(inside, index, 255)]  # (R, B, H, W); 255 is UNKNOWN: no region
    return masks.permute(1, 0, 2, 3).contiguous()


@functools.lru_cache(maxsize=32)
def _region_table(regions: tuple[str, ...], device: torch.device) -> torch.Tensor:
    """(R, 256) float {0, 1}: row r marks the class ids of regions[r]; made once per regions and device (read-only)."""
    unknown = [name for name in regions if name not in REGION_CLASS_IDS]
    if unknown:
        raise KeyError(f"unknown region {unknown[0]!r}; known regions: {', '.join(ALL_REGIONS)}")
    with torch.inference_mode(False):  # an ordinary tensor even if first made under inference mode
        table = torch.zeros(len(regions), 256, dtype=torch.float32)
        for row, name in enumerate(regions):
            table[row, list(REGION_CLASS_IDS[name])] = 1.0
        return table.to(device)


def union_mask(parsing: torch.Tensor, regions: tuple[str, ...] | list[str]) -> torch.Tensor:
    """(B, H, W) parsing -> (B, 1, H, W) float mask of the union of `regions` (all zeros for no regions)."""
    if not regions:
        return torch.zeros_like(parsing if parsing.ndim == 4 else parsing.unsqueeze(1), dtype=torch.float32)
    return region_masks(parsing, regions).amax(dim=1, keepdim=True)
