"""ArcFace's IResNet (insightface arcface_torch ``iresnet100`` for glint360k): key names and shapes of
the public ``backbone.pth``. The layer-4 output (before ``bn2``) is the paper's identity feature map."""

from __future__ import annotations

import torch
from torch import nn

IRESNET100 = [3, 13, 30, 3]
ARCFACE_INPUT = 112  # the embedding head (fc) is built for a 7x7 layer-4 map, i.e. a 112-px crop


class IBasicBlock(nn.Module):
    """Pre-activation block: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, layers: list[int] = IRESNET100, num_features: int = 512) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._stage(64, layers[0])
        self.layer2 = self._stage(128, layers[1])
        self.layer3 = self._stage(256, layers[2])
        self.layer4 = self._stage(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)
        side = ARCFACE_INPUT // 16
        self.fc = nn.Linear(512 * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def _stage(self, planes: int, n: int) -> nn.Sequential:
        downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, 2, bias=False), nn.BatchNorm2d(planes, eps=1e-5))
        blocks = [IBasicBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        blocks += [IBasicBlock(planes, planes) for _ in range(1, n)]
        return nn.Sequential(*blocks)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> layer-4 output (B, 512, S/16, S/16), any S divisible by 16."""
        x = self.prelu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:
        """Layer-4 map of a 112-px crop -> the 512-d embedding (not normalised, as upstream)."""
        return self.features(self.fc(self.dropout(torch.flatten(self.bn2(fmap), 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.feature_map(x))
