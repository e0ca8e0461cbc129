import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock

from facex_model.backbone import load_backbone, sd15_unet_config
from facex_model.frc import FacialRepresentationController


def test_sd15_unet_config_has_the_published_shape():
    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd15_unet_config())
    blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
    assert len(blocks) == 16
    assert 855e6 < sum(p.numel() for p in unet.parameters()) < 865e6
    with torch.device("meta"):
        frc = FacialRepresentationController.for_unet(unet)
    assert len(frc.layers) == 16


def test_tiny_backbone_loads_frozen_with_from_pretrained(tiny_backbone):
    backbone = load_backbone(tiny_backbone)
    for module in (backbone.unet, backbone.vae, backbone.image_encoder):
        assert not any(p.requires_grad for p in module.parameters())
    assert backbone.scheduler.config.num_train_timesteps == 1000
    assert backbone.vae.config.scaling_factor == pytest.approx(0.18215)


def test_missing_backbone_folder_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"unet/.*build_tiny_backbone"):
        load_backbone(tmp_path)
