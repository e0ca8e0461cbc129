"""LPIPS without torchvision: torchvision's AlexNet checkpoint layout loads unchanged, the distance equals
torchmetrics' own LPIPS on the same AlexNet, and it answers the known cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facex_train.lpips import LPIPS, alexnet_features, load_lpips

# torchvision's classifier head in alexnet-owt-7be5be79.pth: names only matter (the loader drops it), so small shapes
CLASSIFIER = {"classifier.1.weight": (8, 9216), "classifier.1.bias": (8,), "classifier.4.weight": (8, 8),
              "classifier.4.bias": (8,), "classifier.6.weight": (1000, 8), "classifier.6.bias": (1000,)}  # fmt: skip


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
    """A random-weight AlexNet saved as torchvision's ImageNet checkpoint is (features.* and classifier.* keys)."""
    torch.manual_seed(0)
    features = alexnet_features()
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state |= {k: torch.randn(shape) for k, shape in CLASSIFIER.items()}
    path = tmp_path_factory.mktemp("weights") / "lpips" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir()
    torch.save(state, path)
    return path, features


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [64, 112, 224])
def test_equals_torchmetrics_lpips_on_the_same_alexnet(trunk, size, monkeypatch):
    """torchmetrics' _LPIPS (its scaling, normalisation, shipped v0.1 heads and averaging) with its torchvision
    AlexNet swapped for the same weights: the same distances."""
    from torchmetrics.functional.image import lpips as tm

    path, features = trunk
    monkeypatch.setattr(tm, "_get_tv_model_features", lambda net, pretrained=False: features)
    reference = tm._LPIPS(pretrained=True, net="alex").eval()
    ours = load_lpips(path)
    a, b = _images(4, size, 1), _images(4, size, 2)
    with torch.inference_mode():
        expected = reference(a, b, normalize=True).flatten()
        got = ours(a, b)
    assert got.shape == (4,) and expected.abs().min() > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_known_answers(trunk):
    network = load_lpips(trunk[0])
    image = _images(1, 112, 3)
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        same = float(network(image, image)[0])
        slight, strong = (float(network((image + s * noise).clamp(0, 1), image)[0]) for s in (0.02, 0.3))
        blank = float(network(torch.zeros_like(image), image)[0])
        swapped = float(network(image, torch.zeros_like(image))[0])
    assert same == 0.0
    assert 0 < slight < strong
    assert blank > slight and blank == pytest.approx(swapped, rel=1e-6)  # a distance: symmetric


def test_a_missing_or_foreign_checkpoint_names_the_file(trunk, tmp_path):
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth"):
        load_lpips(tmp_path / "lpips" / "alexnet-owt-7be5be79.pth")
    other = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}, other)
    with pytest.raises(ValueError, match="vgg.pth is not torchvision's AlexNet"):
        load_lpips(other)


def test_the_heads_are_the_shipped_v0_1_weights(trunk):
    """Non-negative 1x1 heads (LPIPS clamps them while training), one per AlexNet ReLU tap, not a fresh init."""
    network = load_lpips(trunk[0])
    weights = [lin.weight.detach().numpy() for lin in network.lins]
    assert [w.shape[1] for w in weights] == [64, 192, 384, 256, 256]
    assert all((w >= 0).all() for w in weights)
    fresh = LPIPS()
    assert not np.allclose(weights[0], fresh.lins[0].weight.detach().numpy())
