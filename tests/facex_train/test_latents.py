"""Precomputed VAE latents: the extract stage stores the posterior of each crop at the training resolution, and a
model trained on them follows the trajectory of one that runs the encoder on the same crops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facex_data import schema
from facex_data.extraction import ExtractConfig, run_extraction
from facex_data.layout import complete_shards
from facex_data.manifest import FrameSelection
from facex_data.shards import decode_npy, iter_samples
from facex_model.model import FaceXConfig, FaceXModel
from facex_train.pairs import POSITION, PairConfig, pair_loader

RES = 32


@pytest.fixture(scope="module")
def shard_sets(small_sample, tiny_backbone, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name, vae in (("plain", None), ("latents", tiny_backbone / "vae")):
        folder = tmp_path_factory.mktemp(f"shards_{name}")
        frames = FrameSelection(mode="per_clip", frames_per_clip=4, min_clip_frames=4)
        run_extraction(ExtractConfig(input_dir=small_sample, out_dir=folder, frames=frames, clips_per_shard=1,
                                     runner="local", progress=False, latents_vae=vae, latents_resolution=RES))
        out[name] = folder
    return out


def _samples(folder: Path) -> list[dict]:
    return [s for url in complete_shards(folder) for s in iter_samples(url)]


def test_latents_are_an_extra_member_and_change_nothing_else(shard_sets):
    plain, with_latents = _samples(shard_sets["plain"]), _samples(shard_sets["latents"])
    assert [s["__key__"] for s in plain] == [s["__key__"] for s in with_latents]
    for a, b in zip(plain, with_latents):
        assert set(b) - set(a) == {schema.LATENT}
        assert all(a[k] == b[k] for k in schema.SAMPLE_KEYS if k != schema.META)
        latent = decode_npy(b[schema.LATENT])
        assert latent.dtype == schema.LATENT_DTYPE and latent.shape == (8, RES // 8, RES // 8)
        assert json.loads(b[schema.META])["latents"]["resolution"] == RES


def _losses(shards: Path, backbone: Path, steps: int = 4) -> list[float]:
    torch.manual_seed(0)
    model = FaceXModel(FaceXConfig.tiny(backbone, resolution=RES)).train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    batches = iter(pair_loader(shards, PairConfig(resolution=RES, seed=1), batch_size=2))
    generator = torch.Generator().manual_seed(2)
    losses = []
    for _ in range(steps):
        batch = next(batches)
        batch.pop(POSITION)
        loss = model.training_loss(batch, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses


def test_training_on_stored_latents_follows_the_on_the_fly_trajectory(shard_sets, tiny_backbone):
    batch = next(iter(pair_loader(shard_sets["latents"], PairConfig(resolution=RES), batch_size=2)))
    assert batch["target_latent"].shape == (2, 8, RES // 8, RES // 8)  # what lets training skip the encoder
    plain = _losses(shard_sets["plain"], tiny_backbone)  # a shard without latents still trains
    stored = _losses(shard_sets["latents"], tiny_backbone)
    assert stored == pytest.approx(plain, rel=2e-2) and stored != plain  # float16 moments: close, not identical


def test_latents_at_another_resolution_are_ignored(shard_sets):
    batch = next(iter(pair_loader(shard_sets["latents"], PairConfig(resolution=2 * RES), batch_size=2)))
    assert "target_latent" not in batch
