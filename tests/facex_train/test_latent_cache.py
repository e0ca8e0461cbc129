"""facex_train.latent_cache: the frozen VAE's posterior per target crop, encoded once."""

from __future__ import annotations

import pytest
import torch

from facex_model.model import FaceXConfig, FaceXModel
from facex_train.latent_cache import LatentCache

RES = 32


@pytest.fixture(scope="module")
def model(tiny_backbone) -> FaceXModel:
    torch.manual_seed(0)
    return FaceXModel(FaceXConfig.tiny(tiny_backbone, resolution=RES)).train()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, RES, RES, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_cached_posterior_is_each_crops_own_vae_posterior_whatever_its_batch(model):
    images = _images(4, 0)
    cache = LatentCache(model.vae, 2**20)
    first = cache.moments(images)
    with torch.no_grad():
        alone = torch.cat([model.vae.encode(x[None]).latent_dist.parameters for x in images])
    assert torch.equal(first, alone)
    # the same crops in another batch, alongside new ones: bit-identical moments, and only the new ones encoded
    again = cache.moments(torch.cat([images[[2, 0]], _images(1, 1)]))
    assert torch.equal(again[:2], first[[2, 0]]) and cache.encoded == 5 and len(cache) == 5


def test_a_full_cache_still_answers_and_encodes_what_it_could_not_keep(model):
    images = _images(3, 2)
    one = LatentCache(model.vae, 2**20).moments(images[:1])
    cache = LatentCache(model.vae, one[0].numel() * 4)  # room for one crop's moments
    out = cache.moments(images)
    assert len(cache) == 1 and cache.stored_bytes == one[0].numel() * 4
    assert torch.equal(cache.moments(images), out) and cache.encoded == 3 + 2  # crops 2 and 3 are encoded again


def test_training_loss_on_cached_moments_draws_the_encoders_latents(model):
    batch = {f"{side}_{k}": v for side in ("source", "target") for k, v in _batch(model, 3).items()}
    moments = LatentCache(model.vae, 2**20).moments(batch["target_image"])
    losses = []
    for extra in ({}, {"target_latent": moments}, {"target_latent": moments + 0.5}):
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            losses.append(float(model.training_loss(batch | extra, "headswap", generator=generator)))
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)  # same noise, timesteps and latent draw; float rounding
    assert losses[2] != pytest.approx(losses[0], rel=1e-3)  # the loss does read the moments it is given


def _batch(model: FaceXModel, n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    dims = model.config.vector_dims
    return {
        "image": _images(n, 3),
        "parsing": torch.randint(0, 19, (n, RES, RES), generator=g),
        "id": torch.randn(n, model.config.id_tokens, model.config.id_dim, generator=g),
        **{k: torch.randn(n, d, generator=g) for k, d in dims.items() if d},
    }
