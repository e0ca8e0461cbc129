"""The benchmarks' backbone: SD-1.5's U-Net + VAE + scheduler and CLIP ViT-L/14 vision at the published shapes with
random weights (or the tiny stand-ins), built in memory, frozen. No weights are read: the shapes are what is timed."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModel

from facex_model.backbone import (
    Backbone,
    clip_vit_l14_vision_config,
    sd15_scheduler_config,
    sd15_unet_config,
    sd15_vae_config,
    tiny_clip_vision_config,
    tiny_unet_config,
    tiny_vae_config,
)


def random_backbone(tiny: bool, device: torch.device | str = "cpu") -> Backbone:
    """A frozen, eval-mode Backbone with random weights (seed 0): SD-1.5 + CLIP ViT-L/14 shapes, or the tiny ones."""
    if tiny:
        unet_cfg, vae_cfg, clip_cfg = tiny_unet_config(), tiny_vae_config(), tiny_clip_vision_config()
    else:
        unet_cfg, vae_cfg, clip_cfg = sd15_unet_config(), sd15_vae_config(), clip_vit_l14_vision_config()
    torch.manual_seed(0)
    backbone = Backbone(
        unet=UNet2DConditionModel(**unet_cfg),
        vae=AutoencoderKL(**vae_cfg),
        scheduler=DDPMScheduler(**sd15_scheduler_config()),
        image_encoder=CLIPVisionModel(CLIPVisionConfig(**clip_cfg)),
        path="<random>",
        clip_path="<random>",
    )
    for module in (backbone.unet, backbone.vae, backbone.image_encoder):
        module.to(device).requires_grad_(False).eval()
    return backbone
