"""FORS — Facial Omni-Representation Steering (paper §3.3): task table, Representation Assembler + Adapter, Region
Assembler and the inpainting image encoder phi_Inp.

Which representation and region comes from which image is data (TASK_TABLE, paper Fig 4), not code branches; region
editing is the same mechanism with a user-given row (`edit_row`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from facex_model.frc import grid_positions
from facex_model.regions import ALL_REGIONS, FACE_REGIONS, HEAD_REGIONS, PAPER_REGIONS, union_mask

SIDES = ("source", "target", "reference")
REPRESENTATIONS = ("id", "regions", "pose", "expression", "gaze", "texture", "lighting")
VECTOR_REPRESENTATIONS = ("pose", "expression", "gaze", "texture", "lighting")


@dataclass(frozen=True)
class TaskSpec:
    """One row of the task table.

    representations / regions: name -> side ("source", "target" or "reference").
    Region Assembler rule for I_R: `base` image everywhere except the hole; the hole is the union of `hole_regions`
    over `hole_sides`, dilated by `hole_dilate` (fraction of image height) and left blank (0 = mid-grey); inside it the
    `paste_side` image's `paste_regions` are pasted, eroded by `paste_erode` (edges cut) and optionally grayscale.
    """

    representations: Mapping[str, str]
    regions: Mapping[str, str]
    base: str = "source"
    hole_regions: tuple[str, ...] = ()
    hole_sides: tuple[str, ...] = ("source", "target")
    hole_dilate: float = 0.0
    paste_regions: tuple[str, ...] = ()
    paste_side: str = "source"
    paste_erode: float = 0.0
    paste_grayscale: bool = False
    name: str = field(default="custom", compare=False)

    def side_of(self, representation: str) -> str:
        return self.representations.get(representation, "source")

    def sides_used(self) -> set[str]:
        used = {self.side_of(r) for r in REPRESENTATIONS if r != "regions"} | set(self.regions.values()) | {self.base}
        if self.hole_regions:
            used |= set(self.hole_sides)
        if self.paste_regions:
            used.add(self.paste_side)
        return used


def _regions(source: tuple[str, ...], rest: str = "target", other: str = "source") -> dict[str, str]:
    # rows cover the whole vocabulary, so a model configured with extra regions (glasses, hat) still has a side for each
    return {r: (other if r in source else rest) for r in ALL_REGIONS}


_MOTION_FROM_TARGET = {"id": "source", "pose": "target", "expression": "target", "gaze": "target", "texture": "source"}
_ALL_SOURCE = dict.fromkeys(("id", "pose", "expression", "gaze", "texture", "lighting"), "source")

# Paper Fig 4: ID always from the source, motion always from the target; regions and I_R per task.
TASK_TABLE: dict[str, TaskSpec] = {
    "reenact": TaskSpec(
        name="reenact",
        representations={**_MOTION_FROM_TARGET, "lighting": "source"},
        regions=_regions(ALL_REGIONS),
        base="source",
    ),
    "swap": TaskSpec(
        name="swap",
        representations={**_MOTION_FROM_TARGET, "lighting": "target"},
        regions=_regions(FACE_REGIONS),
        base="target",
        hole_regions=FACE_REGIONS,
        hole_dilate=0.03,
        paste_regions=FACE_REGIONS,
    ),
    "headswap": TaskSpec(
        name="headswap",
        representations={**_MOTION_FROM_TARGET, "lighting": "target"},
        regions=_regions(HEAD_REGIONS),
        base="target",
        hole_regions=HEAD_REGIONS,
        hole_dilate=0.03,
        paste_regions=HEAD_REGIONS,
        paste_erode=0.03,
        paste_grayscale=True,
    ),
    "edit": TaskSpec(name="edit", representations=_ALL_SOURCE, regions=_regions(ALL_REGIONS), base="source"),
    "inpaint": TaskSpec(name="inpaint", representations=_ALL_SOURCE, regions=_regions(ALL_REGIONS), base="source"),
}


def edit_row(regions_from_reference: tuple[str, ...], dilate: float = 0.03) -> TaskSpec:
    """Region editing: keep the source, take `regions_from_reference` (e.g. ("hair",), ("glasses",)) from a third image.

    Those regions are cut out of the source (union over source and reference, dilated) so the model repaints them.
    """
    base = TASK_TABLE["edit"]
    regions = {r: ("reference" if r in regions_from_reference else "source") for r in ALL_REGIONS}
    return replace(
        base,
        name="edit",
        regions=regions,
        hole_regions=tuple(regions_from_reference),
        hole_sides=("source", "reference"),
        hole_dilate=dilate,
    )


def get_task(task: str | TaskSpec) -> TaskSpec:
    if isinstance(task, TaskSpec):
        return task
    if task not in TASK_TABLE:
        raise KeyError(f"unknown task {task!r}; known tasks: {', '.join(TASK_TABLE)} (or pass a TaskSpec row)")
    return TASK_TABLE[task]


class RepresentationAssembler(nn.Module):
    """Task-specific Representation Assembler: picks every representation, and every region token, per the task row."""

    def __init__(self, regions: tuple[str, ...] = PAPER_REGIONS) -> None:
        super().__init__()
        self.regions = tuple(regions)

    def forward(self, reps: Mapping[str, Mapping[str, torch.Tensor]], task: str | TaskSpec) -> dict[str, torch.Tensor]:
        spec = get_task(task)
        out: dict[str, torch.Tensor] = {}
        names = {n for side in reps.values() for n in side}
        for name in names:
            if name == "regions":
                continue
            side = spec.side_of(name)
            if name not in reps.get(side, {}):
                raise KeyError(f"task {spec.name!r} takes {name!r} from the {side}, but the {side} has no {name!r}")
            out[name] = reps[side][name]
        if "regions" in names:
            picked = []
            for i, region in enumerate(self.regions):
                side = spec.regions.get(region, "source")
                if "regions" not in reps.get(side, {}):
                    raise KeyError(f"task {spec.name!r} takes region {region!r} from the {side}, which was not given")
                picked.append(reps[side]["regions"][:, i])
            out["regions"] = torch.stack(picked, dim=1)
        return out


class RepresentationAdapter(nn.Module):
    """A linear layer per representation plus a learned per-token embedding, so tokens stay distinguishable -> f_Rep."""

    def __init__(self, input_dims: Mapping[str, int], token_counts: Mapping[str, int], out_dim: int) -> None:
        super().__init__()
        self.order = [n for n in REPRESENTATIONS if input_dims.get(n, 0) > 0]
        self.proj = nn.ModuleDict({n: nn.Linear(input_dims[n], out_dim) for n in self.order})
        self.token_embed = nn.ParameterDict(
            {n: nn.Parameter(torch.randn(token_counts.get(n, 1), out_dim) * 0.02) for n in self.order}
        )

    @property
    def num_tokens(self) -> int:
        return sum(p.shape[0] for p in self.token_embed.values())

    def forward(self, reps: Mapping[str, torch.Tensor]) -> torch.Tensor:
        tokens = []
        for name in self.order:
            x = reps[name]
            if x.ndim == 2:
                x = x.unsqueeze(1)  # a coefficient vector is one token
            tokens.append(self.proj[name](x.to(self.proj[name].weight.dtype)) + self.token_embed[name])
        return torch.cat(tokens, dim=1)


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of (B, 1, H, W) masks by a (2r+1)^2 square."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask, kernel_size=2 * radius + 1, stride=1, padding=radius)


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return 1 - dilate(1 - mask, radius)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, repeated to 3 channels."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True).expand_as(images)


def pixels(fraction: float, height: int) -> int:
    return round(fraction * height)


class RegionAssembler(nn.Module):
    """Task-specific Region Assembler: builds the inpainting reference image I_R at pixel level (no parameters)."""

    def forward(
        self,
        images: Mapping[str, torch.Tensor],
        parsings: Mapping[str, torch.Tensor],
        task: str | TaskSpec,
        extra_hole: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (I_R (B, 3, H, W), hole mask (B, 1, H, W)); `extra_hole` adds a user mask (inpainting)."""
        spec = get_task(task)
        base = images[spec.base]
        height = base.shape[-2]
        hole = torch.zeros_like(base[:, :1])
        if spec.hole_regions:
            for side in spec.hole_sides:
                hole = torch.maximum(hole, union_mask(parsings[side], spec.hole_regions).to(base.dtype))
            hole = dilate(hole, pixels(spec.hole_dilate, height))
        if extra_hole is not None:
            hole = torch.maximum(hole, extra_hole.to(base.dtype).view_as(hole))
        ref = base * (1 - hole)
        if spec.paste_regions:
            paste_img = images[spec.paste_side]
            paste = erode(
                union_mask(parsings[spec.paste_side], spec.paste_regions).to(base.dtype),
                pixels(spec.paste_erode, height),
            )
            if spec.paste_grayscale:
                paste_img = grayscale(paste_img)
            ref = torch.where(paste.bool(), paste_img, ref)
        return ref, hole


class InpaintImageEncoder(nn.Module):
    """phi_Inp: a small conv encoder, I_R (and its hole mask) -> a grid of f_Inp tokens."""

    def __init__(self, channels: tuple[int, ...], out_dim: int, grid: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 4  # RGB + hole mask, so the encoder knows which grey pixels are holes
        for ch in channels:
            layers += [nn.Conv2d(in_ch, ch, 3, stride=2, padding=1), nn.GroupNorm(min(8, ch), ch), nn.SiLU()]
            in_ch = ch
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.proj = nn.Linear(in_ch, out_dim)
        # each token's place in I_R, starting from the same 2-D code the FRC's queries carry (then learned)
        self.pos_embed = nn.Parameter(grid_positions(grid * grid, out_dim, torch.device("cpu"), torch.float32))

    def forward(self, reference: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        x = torch.cat([reference, hole], dim=1).to(self.proj.weight.dtype)
        x = self.pool(self.body(x)).flatten(2).transpose(1, 2)
        return self.proj(x) + self.pos_embed
