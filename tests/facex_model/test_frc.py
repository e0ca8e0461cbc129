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


def test_position_code_is_made_once_and_equals_the_fresh_code():
    from facex_model.frc import grid_positions, position_code

    code = position_code(64, 32, torch.device("cpu"), torch.float32)
    assert torch.equal(code, grid_positions(64, 32, torch.device("cpu"), torch.float32))
    assert position_code(64, 32, torch.device("cpu"), torch.float32) is code  # reused, not remade
    assert position_code(64, 32, torch.device("cpu"), torch.bfloat16).dtype == torch.bfloat16
    assert not torch.equal(position_code(16, 32, torch.device("cpu"), torch.float32)[:16], code[:16])


def test_a_position_code_first_made_under_inference_mode_still_trains():
    """Sampling under torch.inference_mode first, then a training step in the same process (evaluation between
    training rounds): the reused code must be an ordinary tensor that autograd can save for backward."""
    from facex_model.frc import FRCCrossAttention

    layer = FRCCrossAttention(dim=24, cross_attention_dim=16, num_heads=2)
    for p in (layer.position, layer.zero_conv):
        torch.nn.init.normal_(p.weight)
    hidden, f_sd = torch.randn(2, 49, 24), torch.randn(2, 5, 16)
    with torch.inference_mode():
        before = layer(hidden, f_sd)
    after = layer(hidden, f_sd)
    after.square().mean().backward()
    assert torch.equal(before, after.detach())
    assert layer.position.weight.grad is not None and layer.position.weight.grad.abs().sum() > 0
