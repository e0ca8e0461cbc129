"""The frozen backbone: SD-1.5 U-Net, VAE, noise scheduler and the CLIP vision encoder, loaded from local folders.

Real runs point at an SD-1.5 diffusers folder (unet/, vae/, scheduler/) and clip-vit-large-patch14; tests and the
embedded demo build the same classes from tiny configs with `build_tiny_backbone` and load them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModel

CLIP_SUBFOLDER = "clip_vision"


@dataclass
class Backbone:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler: DDPMScheduler
    image_encoder: CLIPVisionModel
    path: str
    clip_path: str


def sd15_unet_config() -> dict[str, Any]:
    """The published SD-1.5 U-Net shape (~860 M parameters, 16 transformer blocks)."""
    return dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
    )


def sd15_vae_config() -> dict[str, Any]:
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
        scaling_factor=0.18215,
    )


def sd15_scheduler_config() -> dict[str, Any]:
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
    )


def clip_vit_l14_vision_config() -> dict[str, Any]:
    """openai/clip-vit-large-patch14 vision tower: 224 px, 16x16 patches + CLS."""
    return dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        projection_dim=768,
    )


def tiny_unet_config() -> dict[str, Any]:
    return dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def tiny_vae_config() -> dict[str, Any]:
    # four blocks keep SD's 8x pixel-to-latent factor (64 px images -> 8x8 latents)
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
        scaling_factor=0.18215,
    )


def tiny_clip_vision_config() -> dict[str, Any]:
    return dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=64,
        patch_size=8,
        projection_dim=32,
    )


def build_backbone_folder(
    out_dir: str | Path,
    unet_config: dict[str, Any],
    vae_config: dict[str, Any],
    clip_config: dict[str, Any],
    scheduler_config: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Random-weight backbone of the given shapes, saved in the diffusers layout plus `clip_vision/`."""
    out = Path(out_dir)
    torch.manual_seed(seed)
    UNet2DConditionModel(**unet_config).save_pretrained(out / "unet")
    AutoencoderKL(**vae_config).save_pretrained(out / "vae")
    DDPMScheduler(**(scheduler_config or sd15_scheduler_config())).save_pretrained(out / "scheduler")
    CLIPVisionModel(CLIPVisionConfig(**clip_config)).save_pretrained(out / CLIP_SUBFOLDER)
    return out


def build_tiny_backbone(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny SD-architecture backbone (64 px images, 8x8 latents) that every code path can run on a CPU."""
    return build_backbone_folder(out_dir, tiny_unet_config(), tiny_vae_config(), tiny_clip_vision_config(), seed=seed)


def _require(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"{what} not found at {path}. Point the model at a local SD-1.5 diffusers folder (unet/, vae/, scheduler/) "
            f"and a CLIP vision folder (e.g. clip-vit-large-patch14), or build a tiny one with build_tiny_backbone()."
        )


def load_backbone(path: str | Path, clip_path: str | Path | None = None, dtype: torch.dtype | None = None) -> Backbone:
    """Load the frozen backbone with `from_pretrained`; `clip_path` defaults to `<path>/clip_vision`."""
    root = Path(path)
    clip_root = Path(clip_path) if clip_path is not None else root / CLIP_SUBFOLDER
    for sub in ("unet", "vae", "scheduler"):
        _require(root / sub, f"SD backbone folder '{sub}/'")
    _require(clip_root, "CLIP vision model folder")
    kwargs = {"torch_dtype": dtype} if dtype is not None else {}
    unet = UNet2DConditionModel.from_pretrained(root / "unet", **kwargs)
    vae = AutoencoderKL.from_pretrained(root / "vae", **kwargs)
    scheduler = DDPMScheduler.from_pretrained(root / "scheduler")
    image_encoder = CLIPVisionModel.from_pretrained(clip_root, **({"dtype": dtype} if dtype is not None else {}))
    for module in (unet, vae, image_encoder):
        module.requires_grad_(False)
        module.eval()
    return Backbone(unet, vae, scheduler, image_encoder, str(root), str(clip_root))
