"""SD Adapter (paper §3.3): concat(f_Rep, f_Inp) -> f_SD at the U-Net's cross-attention width."""

from __future__ import annotations

import torch
from torch import nn


class SDAdapter(nn.Module):
    def __init__(self, in_dim: int, cross_attention_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, cross_attention_dim),
            nn.GELU(),
            nn.Linear(cross_attention_dim, cross_attention_dim),
        )
        # the frozen attn2 was trained on layer-normed CLIP text states: hand it tokens of the same scale
        self.out_norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, f_rep: torch.Tensor, f_inp: torch.Tensor) -> torch.Tensor:
        return self.out_norm(self.net(torch.cat([f_rep, f_inp], dim=1)))
