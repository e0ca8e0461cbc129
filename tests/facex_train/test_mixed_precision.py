"""compute.mixed_precision in the training step: fp16 keeps small gradients (loss scaling), skips overflowed steps,
and a checkpoint carries the loss scale; `no` steps exactly as plain fp32."""

from __future__ import annotations

import json

import pytest
import torch

from facex_model.model import FaceXConfig, FaceXModel
from facex_train.pairs import DataPosition
from facex_train.train import STATE_JSON, MixedPrecision, load_checkpoint, save_checkpoint

CPU = torch.device("cpu")


def _linear() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(8, 4)


def _small_loss(layer: torch.nn.Linear, precision: MixedPrecision) -> torch.Tensor:
    """A loss whose gradient at the layer's output (1e-9 per element) is below fp16's smallest subnormal (6e-8)."""
    x = torch.linspace(-1, 1, 16).reshape(2, 8)
    with precision.autocast():
        out = layer(x)
    return out.float().sum() * 1e-9


def test_fp16_loss_scaling_keeps_gradients_that_fp16_flushes_to_zero():
    reference = _linear()
    (reference(torch.linspace(-1, 1, 16).reshape(2, 8)).sum() * 1e-9).backward()
    assert reference.weight.grad.abs().min() > 0

    unscaled = _linear()
    precision = MixedPrecision(CPU, "fp16")
    _small_loss(unscaled, precision).backward()  # fp16 autocast without the scaler: the gradient underflows
    assert torch.count_nonzero(unscaled.weight.grad) == 0

    scaled = _linear()
    optimizer = torch.optim.SGD(scaled.parameters(), lr=1e6)
    precision.backward(_small_loss(scaled, precision))
    grad_norm, stepped = precision.step(optimizer, list(scaled.parameters()), max_norm=1.0)
    assert stepped and grad_norm > 0
    torch.testing.assert_close(scaled.weight.grad, reference.weight.grad, rtol=1e-2, atol=0)  # unscaled again
    assert not torch.equal(scaled.weight, _linear().weight)


def test_an_overflowed_fp16_step_is_skipped_and_the_scale_lowered():
    layer = _linear()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    precision = MixedPrecision(CPU, "fp16")
    before = layer.weight.detach().clone()
    scale = precision.scaler.get_scale()
    with precision.autocast():
        out = layer(torch.full((2, 8), 1e4))
    precision.backward(out.float().sum() * 1e6)  # x the scale: overflows fp16 in backward
    grad_norm, stepped = precision.step(optimizer, list(layer.parameters()), max_norm=1.0)
    assert not stepped and not torch.isfinite(torch.tensor(grad_norm))
    assert torch.equal(layer.weight, before) and precision.scaler.get_scale() == scale / 2

    optimizer.zero_grad()
    with precision.autocast():
        out = layer(torch.ones(2, 8))
    precision.backward(out.float().mean())
    _, stepped = precision.step(optimizer, list(layer.parameters()), max_norm=1.0)
    assert stepped and not torch.equal(layer.weight, before)


@pytest.mark.parametrize("mode", ["no", "bf16"])
def test_modes_without_fp16_step_like_plain_clipping_and_adamw(mode):
    precision = MixedPrecision(CPU, mode)
    assert not precision.scaler.is_enabled()
    plain, ours = _linear(), _linear()
    x = torch.linspace(-1, 1, 16).reshape(2, 8)
    plain_opt, our_opt = torch.optim.AdamW(plain.parameters()), torch.optim.AdamW(ours.parameters())
    with precision.autocast():
        loss = ours(x).float().pow(2).sum()
    with precision.autocast():
        assert ours(x).dtype == (torch.float32 if mode == "no" else torch.bfloat16)
    precision.backward(loss)
    grad_norm, stepped = precision.step(our_opt, list(ours.parameters()), max_norm=0.5)
    if mode == "no":
        plain(x).pow(2).sum().backward()
        expected = float(torch.nn.utils.clip_grad_norm_(list(plain.parameters()), 0.5))
        plain_opt.step()
        assert stepped and grad_norm == expected
        assert torch.equal(ours.weight, plain.weight) and torch.equal(ours.bias, plain.bias)
    else:
        assert stepped and loss.dtype == torch.float32 and grad_norm > 0


def test_a_checkpoint_keeps_the_fp16_loss_scale(tiny_backbone, tmp_path):
    torch.manual_seed(0)
    model = FaceXModel(FaceXConfig.tiny(tiny_backbone, resolution=32))
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    precision = MixedPrecision(CPU, "fp16")
    precision.scaler.scale(torch.ones(()))  # the scale starts at its first use
    precision.scaler.update(1024.0)  # as after overflows lowered it
    state = dict(model=model, optimizer=optimizer, lr_scheduler=scheduler, ema=None)
    save_checkpoint(tmp_path, rank=0, **state, step=7, losses=[0.5] * 7, position=DataPosition(),
                    generator=torch.Generator(), grad_scaler=precision.scaler)  # fmt: skip
    assert json.loads((tmp_path / STATE_JSON).read_text())["grad_scaler"]["scale"] == 1024.0

    resumed = MixedPrecision(CPU, "fp16")
    assert resumed.scaler.get_scale() != 1024.0
    step, *_ = load_checkpoint(tmp_path, rank=0, **state, generator=torch.Generator(), grad_scaler=resumed.scaler)
    assert step == 7 and resumed.scaler.state_dict() == precision.scaler.state_dict()

    fp32 = MixedPrecision(CPU, "no")  # an fp32 run's checkpoint has no scale, and an fp32 resume ignores one
    save_checkpoint(tmp_path / "fp32", rank=0, **state, step=7, losses=[0.5] * 7, position=DataPosition(),
                    generator=torch.Generator(), grad_scaler=fp32.scaler)  # fmt: skip
    assert json.loads((tmp_path / "fp32" / STATE_JSON).read_text())["grad_scaler"] == {}
    load_checkpoint(tmp_path, rank=0, **state, generator=torch.Generator(), grad_scaler=fp32.scaler)
    assert not fp32.scaler.is_enabled()
