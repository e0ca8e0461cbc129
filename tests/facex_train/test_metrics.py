"""Evaluation metrics against known answers; the FID networks torchmetrics is fed."""

from __future__ import annotations

import math

import pytest
import torch

from facex_train.fid_inception import WEIGHTS_FILE, FIDInceptionV3, resize_like_tensorflow1
from facex_train.metrics import (
    PSNR_CAP_DB,
    StandinFeatures,
    build_fid,
    id_similarity,
    l2_distance,
    reconstruction_metrics,
)


def _images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8


def test_identical_images_reconstruct_perfectly_with_psnr_capped():
    x = _images()
    m = reconstruction_metrics(x, x.clone())
    assert torch.allclose(m["ssim"], torch.ones(2))
    assert torch.equal(m["psnr"], torch.full((2,), PSNR_CAP_DB))
    assert torch.equal(m["rmse"], torch.zeros(2))


def test_a_constant_offset_gives_the_known_rmse_and_psnr():
    x = _images()
    m = reconstruction_metrics(x + 0.2, x)  # 0.2 in [-1, 1] is 0.1 in [0, 1]: MSE 0.01 -> 20 dB
    assert torch.allclose(m["rmse"], torch.full((2,), 0.1), atol=1e-5)
    assert torch.allclose(m["psnr"], torch.full((2,), 20.0), atol=1e-3)
    assert (m["ssim"] < 1).all()


def test_id_similarity_is_the_cosine_of_the_embeddings():
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 0.0]])
    b = torch.tensor([[3.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-1.0, -1.0, 0.0]])
    assert torch.allclose(id_similarity(a, b), torch.tensor([1.0, 0.0, -1.0]))
    assert torch.allclose(id_similarity(a, a), torch.ones(3))


def test_a_known_pose_offset_gives_that_l2():
    pose = torch.tensor([[0.1, -0.2, 0.05], [0.0, 0.0, 0.0]])
    shifted = pose + torch.tensor([0.3, 0.4, 0.0])
    assert torch.allclose(l2_distance(shifted, pose), torch.tensor([0.5, 0.5]))
    assert torch.equal(l2_distance(pose, pose), torch.zeros(2))


def test_standin_fid_is_labelled_as_such_zero_on_identical_sets_and_grows_with_a_shift():
    name, fid = build_fid("standin", None)
    assert name == "fid_standin"
    real = (_images(6, seed=1) + 1) / 2
    fid.update(real, real=True)
    fid.update(real, real=False)
    same = float(fid.compute())
    fid.reset()
    fid.update(real, real=True)
    fid.update((real * 0.5).clamp(0, 1), real=False)
    assert abs(same) < 1e-3 < float(fid.compute())


def test_standin_network_is_fixed_whatever_the_global_seed():
    torch.manual_seed(1)
    a = StandinFeatures()
    torch.manual_seed(2)
    b = StandinFeatures()
    x = (_images(2) + 1) / 2
    assert torch.equal(a(x), b(x)) and a(x).shape == (2, StandinFeatures.num_features)


def test_inception_fid_loads_the_upstream_weight_file_layout(tmp_path):
    (tmp_path / "inception").mkdir()
    torch.manual_seed(0)
    torch.save(FIDInceptionV3().state_dict(), tmp_path / "inception" / WEIGHTS_FILE)
    name, fid = build_fid("inception", tmp_path)
    assert name == "fid"
    fid.update((_images(2, seed=1) + 1) / 2, real=True)
    fid.update((_images(2, seed=2) + 1) / 2, real=False)
    assert math.isfinite(float(fid.compute()))


def test_missing_inception_weights_name_the_file_and_the_fallback(tmp_path):
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE) as err:
        build_fid("inception", tmp_path)
    assert str(tmp_path / "inception") in str(err.value) and "standin" in str(err.value)


def test_tensorflow_resize_keeps_a_constant_image_and_samples_without_half_pixel_offset():
    flat = torch.full((1, 3, 5, 7), 42.0)
    assert torch.equal(resize_like_tensorflow1(flat, 11), torch.full((1, 3, 11, 11), 42.0))
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    out = resize_like_tensorflow1(ramp, 8)  # TF1: source x = out x * 4 / 8
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0]))
