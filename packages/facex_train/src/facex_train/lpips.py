"""LPIPS (Zhang et al. 2018, v0.1, AlexNet) as a plain torch module, for the reconstruction benchmark.

torchmetrics' LPIPS builds its AlexNet through torchvision, and no torchvision wheel loads beside the CPU torch this
project pins (the FID Inception has the same problem, see ``facex_train.fid_inception``). This module holds the same
network: torchvision's AlexNet feature stack (same module names, so torchvision's ImageNet checkpoint loads
unchanged), LPIPS' input scaling, unit-normalised activations after each of the five ReLUs, and the five learned
1x1 heads, spatially averaged and summed. The heads are the v0.1 weights torchmetrics ships inside its package
(``torchmetrics/functional/image/lpips_models/alex.pth``, the same file as the ``lpips`` package's); the trunk is
the one file users bring:

    <weights.dir>/lpips/alexnet-owt-7be5be79.pth   (manifest key lpips_alexnet, ``facex weights check``)
    (https://download.pytorch.org/models/alexnet-owt-7be5be79.pth, torchvision's AlexNet_Weights.IMAGENET1K_V1;
     put it there by hand, nothing is downloaded here)

Images go in as (B, 3, H, W) floats in [0, 1]; the result is (B,) distances (0 for identical images).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from torch import nn

from facex_data.weights import BY_KEY

WEIGHTS_KEY = "lpips_alexnet"  # the trunk's facex_data.weights manifest entry
CHANNELS = (64, 192, 384, 256, 256)  # AlexNet's five ReLU outputs LPIPS compares
TAPS = (1, 4, 7, 9, 11)  # their indices in torchvision's `features`
# LPIPS' input scaling, for images in [-1, 1]
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features``: the layers and indices its checkpoint's ``features.*`` keys name."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
    )  # fmt: skip


class LPIPS(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = alexnet_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def activations(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images.float() * 2 - 1 - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features[: TAPS[-1] + 1]):
            x = layer(x)
            if i in TAPS:
                out.append(x / torch.sqrt(1e-8 + (x**2).sum(dim=1, keepdim=True)))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] twice -> (B,) LPIPS distances."""
        total = torch.zeros(a.shape[0], device=a.device)
        for lin, fa, fb in zip(self.lins, self.activations(a), self.activations(b), strict=True):
            total = total + lin((fa - fb) ** 2).mean(dim=(1, 2, 3))
        return total


def heads_file() -> Path:
    """LPIPS v0.1's AlexNet heads as torchmetrics ships them (keys ``lin{k}.model.1.weight``)."""
    return Path(str(resources.files("torchmetrics.functional.image") / "lpips_models" / "alex.pth"))


def load_lpips(trunk: str | Path) -> LPIPS:
    """LPIPS with torchvision's ImageNet AlexNet checkpoint `trunk` and torchmetrics' shipped heads (weights_only
    loads)."""
    path = Path(trunk)
    if not path.is_file():
        entry = BY_KEY[WEIGHTS_KEY]
        raise FileNotFoundError(f"{path} not found ({entry.what}); get it from {entry.source}")
    network = LPIPS()
    trunk = torch.load(path, map_location="cpu", weights_only=True)
    features = {k.removeprefix("features."): v for k, v in trunk.items() if k.startswith("features.")}
    try:
        network.features.load_state_dict(features)
    except RuntimeError as err:
        raise ValueError(f"{path} is not torchvision's AlexNet state dict (features.*): {err}") from err
    heads = torch.load(heads_file(), map_location="cpu", weights_only=True)
    network.lins.load_state_dict({f"{k}.weight": heads[f"lin{k}.model.1.weight"] for k in range(len(CHANNELS))})
    return network.requires_grad_(False).eval()
