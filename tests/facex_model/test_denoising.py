"""The denoising loop: conditions once, seeded, every scheduler, cached keys/values, masked fusion."""

from __future__ import annotations

import pytest
import torch

from facex_model import denoising
from facex_model.frc import FRCAttnProcessor


@pytest.fixture(scope="module")
def model(tiny_backbone):
    from facex_model.model import FaceXConfig, FaceXModel

    torch.manual_seed(0)
    m = FaceXModel(FaceXConfig.tiny(tiny_backbone)).eval()
    # a non-zero FRC, so the controller (and its cached keys/values) changes the output
    with torch.no_grad():
        for layer in m.frc.layers.values():
            torch.nn.init.normal_(layer.zero_conv.weight, std=0.2)
    return m


def run(model, batch, seed=0, **kwargs):
    kwargs.setdefault("steps", 3)
    return denoising.denoise(model, batch, "swap", generator=torch.Generator().manual_seed(seed), **kwargs)


def test_conditions_encoded_once_for_n_steps(model, make_batch):
    counts = {"sd_adapter": 0, "inpaint_encoder": 0, "unet": 0}
    hooks = [
        getattr(model, name).register_forward_hook(lambda *_, n=name: counts.__setitem__(n, counts[n] + 1))
        for name in counts
    ]
    try:
        run(model, make_batch(batch=1), steps=4)
    finally:
        for h in hooks:
            h.remove()
    assert counts == {"sd_adapter": 1, "inpaint_encoder": 1, "unet": 4}


def test_same_seed_same_images_other_seed_differs(model, make_batch):
    batch = make_batch(batch=1)
    a, _ = run(model, batch, seed=3)
    b, _ = run(model, batch, seed=3)
    c, _ = run(model, batch, seed=4)
    assert a.shape == (1, 3, 64, 64)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("scheduler", sorted(denoising.SCHEDULERS))
def test_every_scheduler_gives_finite_images_in_range(model, make_batch, scheduler):
    images, extras = run(model, make_batch(batch=2), scheduler=scheduler, steps=2)
    assert images.shape == (2, 3, 64, 64)
    assert torch.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
    assert extras["f_sd"].shape[0] == 2


def test_unknown_scheduler_names_the_choices(model, make_batch):
    with pytest.raises(ValueError, match="ddim, euler, dpm"):
        run(model, make_batch(batch=1), scheduler="pndm")


def test_cached_condition_kv_equals_recomputed_and_projects_once(model, make_batch):
    batch = make_batch(batch=1)
    calls = {"n": 0}
    attns = [
        m
        for m in [*model.unet.modules(), *model.frc.modules()]
        if isinstance(m, denoising.Attention) and m.is_cross_attention
    ]
    hooks = [a.to_k.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1)) for a in attns]
    try:
        cached, _ = run(model, batch, steps=4, cache_kv=True)
        cached_calls, calls["n"] = calls["n"], 0
        plain, _ = run(model, batch, steps=4, cache_kv=False)
    finally:
        for h in hooks:
            h.remove()
    assert cached_calls == len(attns)
    assert calls["n"] == 4 * len(attns)
    torch.testing.assert_close(cached, plain, atol=1e-5, rtol=0)
    # the processors are restored after the loop
    restored = [m.processor.base if isinstance(m.processor, FRCAttnProcessor) else m.processor for m in attns]
    assert not any(isinstance(p, denoising.CachedKVProcessor) for p in restored)


def test_classifier_free_guidance_changes_the_output(model, make_batch):
    batch = make_batch(batch=1)
    guided, _ = run(model, batch, cfg_scale=4.0)
    plain, _ = run(model, batch, cfg_scale=1.0)
    assert (guided - plain).abs().max() > 1e-4


def test_region_fusion_keeps_target_latents_outside_the_mask(model, make_batch):
    batch = make_batch(batch=1)
    target = denoising.encode_target_latents(model, batch["target_image"])
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    _, extras = run(model, batch, region_fusion=denoising.RegionFusion(target, mask))
    out = extras["latents"]
    assert torch.equal(out[..., 0, :], target[..., 0, :])
    assert (out[..., 3, 3] - target[..., 3, 3]).abs().max() > 1e-4


def test_fixed_latents_give_fixed_output_whatever_the_generator(model, make_batch):
    batch = make_batch(batch=1)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    a, _ = run(model, batch, seed=1, latents=noise)
    b, _ = run(model, batch, seed=2, latents=noise)
    assert torch.equal(a, b)
