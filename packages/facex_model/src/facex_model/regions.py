"""The facial region vocabulary and how BiSeNet-19 (CelebAMask-HQ) class ids group into regions."""

from __future__ import annotations

import torch

# BiSeNet-19 ids: 0 bg, 1 skin, 2 l_brow, 3 r_brow, 4 l_eye, 5 r_eye, 6 glasses, 7 l_ear, 8 r_ear, 9 earring,
# 10 nose, 11 mouth, 12 u_lip, 13 l_lip, 14 neck, 15 necklace, 16 cloth, 17 hair, 18 hat.
UNKNOWN_ID = 255  # written by offline backends that cannot classify a pixel: it belongs to no region

REGION_CLASS_IDS: dict[str, tuple[int, ...]] = {
    "brows": (2, 3),
    "eyes": (4, 5),
    "nose": (10,),
    "lips": (11, 12, 13),
    "ears": (7, 8, 9),
    "skin": (1,),
    "hair": (17,),
    "background": (0,),
    "glasses": (6,),
    "neck": (14,),
    "cloth": (15, 16),
    "hat": (18,),
}

# The paper's FORD regions (§3.2); the rest of the vocabulary serves region editing and the region assembler.
PAPER_REGIONS: tuple[str, ...] = ("brows", "eyes", "nose", "lips", "ears", "skin", "hair", "background")
ALL_REGIONS: tuple[str, ...] = tuple(REGION_CLASS_IDS)

FACE_REGIONS: tuple[str, ...] = ("brows", "eyes", "nose", "lips", "skin")
HEAD_REGIONS: tuple[str, ...] = (*FACE_REGIONS, "ears", "hair")


def region_masks(parsing: torch.Tensor, regions: tuple[str, ...] | list[str] = PAPER_REGIONS) -> torch.Tensor:
    """(B, H, W) integer parsing map -> (B, R, H, W) float {0, 1} masks, one per region, in `regions` order."""
    if parsing.ndim == 4:
        parsing = parsing.squeeze(1)
    masks = []
    for name in regions:
        if name not in REGION_CLASS_IDS:
            raise KeyError(f"unknown region {name!r}; known regions: {', '.join(ALL_REGIONS)}")
        ids = torch.tensor(REGION_CLASS_IDS[name], device=parsing.device, dtype=parsing.dtype)
        masks.append(torch.isin(parsing, ids))
    return torch.stack(masks, dim=1).float()


def union_mask(parsing: torch.Tensor, regions: tuple[str, ...] | list[str]) -> torch.Tensor:
    """(B, H, W) parsing -> (B, 1, H, W) float mask of the union of `regions` (all zeros for no regions)."""
    if not regions:
        return torch.zeros_like(parsing if parsing.ndim == 4 else parsing.unsqueeze(1), dtype=torch.float32)
    return region_masks(parsing, regions).amax(dim=1, keepdim=True)
