import pytest
import torch
from diffusers.models.attention import BasicTransformerBlock

from facex_model.backbone import load_backbone
from facex_model.frc import FacialRepresentationController


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 700]), torch.randn(2, 9, 32, generator=g)


def test_zero_conv_start_equals_base_unet(tiny_backbone):
    unet = load_backbone(tiny_backbone).unet
    latents, t, f_sd = _inputs()
    with torch.no_grad():
        base = unet(latents, t, encoder_hidden_states=f_sd).sample
        frc = FacialRepresentationController.for_unet(unet, num_heads=4)
        frc.install(unet)
        with_frc = unet(latents, t, encoder_hidden_states=f_sd).sample
    assert torch.equal(with_frc, base)

    with torch.no_grad():
        for layer in frc.layers.values():
            layer.zero_conv.weight.normal_()
        assert not torch.allclose(unet(latents, t, encoder_hidden_states=f_sd).sample, base, atol=1e-3)
        frc.remove()
        assert torch.equal(unet(latents, t, encoder_hidden_states=f_sd).sample, base)


def test_frc_covers_every_transformer_block_and_leaves_unet_state_dict_unchanged(tiny_backbone):
    unet = load_backbone(tiny_backbone).unet
    keys = set(unet.state_dict())
    frc = FacialRepresentationController.for_unet(unet, num_heads=4)
    frc.install(unet)
    blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
    assert len(frc.layers) == len(blocks) == 4
    assert set(unet.state_dict()) == keys  # a community SD-1.5 checkpoint still loads into this U-Net


def test_frc_runs_after_the_frozen_cross_attention(tiny_backbone):
    """v = v + attn2(norm2(v), f_SD); v = v + ZeroConv(CrossAttn_ft(v, f_SD)); then the feed-forward."""
    unet = load_backbone(tiny_backbone).unet
    frc = FacialRepresentationController.for_unet(unet, num_heads=4)
    frc.install(unet)
    name, block = next((n, m) for n, m in unet.named_modules() if isinstance(m, BasicTransformerBlock))
    layer = frc.layers[name.replace(".", "__")]
    torch.manual_seed(0)
    with torch.no_grad():
        layer.zero_conv.weight.normal_()
        x = torch.randn(2, 16, block.norm1.normalized_shape[0])
        f_sd = torch.randn(2, 5, 32)
        v = x + block.attn1(block.norm1(x))
        v = v + block.attn2.processor.base(block.attn2, block.norm2(v), f_sd)
        v = v + layer(v, f_sd)
        expected = v + block.ff(block.norm3(v))
        assert torch.allclose(block(x, encoder_hidden_states=f_sd), expected, atol=1e-5)


def test_frc_refuses_a_unet_with_other_blocks(tiny_backbone):
    unet = load_backbone(tiny_backbone).unet
    frc = FacialRepresentationController(block_names=["nope"], block_dims=[32], cross_attention_dim=32, num_heads=4)
    with pytest.raises(ValueError, match="different transformer blocks"):
        frc.install(unet)
