"""Deep3DFaceRecon's ReconNet (ResNet-50 + 1x1 coefficient heads) and L2CS-Net (ResNet-50 + binned
yaw/pitch classifiers), with their checkpoints' key names."""

from __future__ import annotations

import torch
from torch import nn

from facex_data.extractors.nets.resnet import RESNET50, Bottleneck, ResNet

# Deep3DFaceRecon's heads, in output order: identity, expression, texture, angles, SH lighting, (tx, ty), tz
RECON_HEADS = (80, 64, 80, 3, 27, 2, 1)
PUPIL_HEAD = 4  # Face-Adapter's variant appends one more 1x1 head: pupil / gaze coefficients


class ReconNet(nn.Module):
    """(B, 3, 224, 224) RGB in [0, 1] -> (B, 257) coefficients (+4 when the pupil head is present)."""

    def __init__(self, layers: list[int] = RESNET50, pupil: bool = False) -> None:
        super().__init__()
        self.backbone = ResNet(Bottleneck, layers)
        dims = RECON_HEADS + ((PUPIL_HEAD,) if pupil else ())
        self.final_layers = nn.ModuleList(nn.Conv2d(self.backbone.out_channels, d, 1, bias=True) for d in dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = torch.nn.functional.adaptive_avg_pool2d(self.backbone.features(x)[-1], 1)
        return torch.cat([head(feat) for head in self.final_layers], dim=1).flatten(1)


class L2CS(ResNet):
    """(B, 3, 448, 448) ImageNet-normalised RGB -> yaw and pitch logits over ``num_bins`` angle bins."""

    def __init__(self, layers: list[int] = RESNET50, num_bins: int = 90) -> None:
        super().__init__(Bottleneck, layers)
        self.fc_yaw_gaze = nn.Linear(self.out_channels, num_bins)
        self.fc_pitch_gaze = nn.Linear(self.out_channels, num_bins)
        self.fc_finetune = nn.Linear(self.out_channels + 3, 3)  # unused upstream too; in the checkpoint

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(self.features(x)[-1], 1), 1)
        return self.fc_yaw_gaze(feat), self.fc_pitch_gaze(feat)
