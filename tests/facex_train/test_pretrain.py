"""The pretrain stage: a backbone folder load_backbone loads, trained on the training clips only, with the VAE's
scaling factor computed from the data; and its random twin for the ablation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facex_data.extraction import ExtractConfig, run_extraction
from facex_data.manifest import FrameSelection
from facex_model.backbone import load_backbone
from facex_train.config import AutoencoderConfig, DenoiserConfig, PretrainConfig
from facex_train.pretrain import METRICS_FILE, pretrain, random_backbone_like, split_crops

TINY = dict(block_out_channels=(16, 16), norm_num_groups=8)


@pytest.fixture(scope="module")
def shards(small_sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain_shards")
    frames = FrameSelection(mode="per_clip", frames_per_clip=4, min_clip_frames=4)
    run_extraction(ExtractConfig(input_dir=small_sample, out_dir=out, frames=frames, clips_per_shard=1,
                                 runner="local", progress=False))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def pretrained(shards, tmp_path_factory):
    torch.set_num_threads(1)
    cfg = PretrainConfig(
        shards=shards, out_dir=tmp_path_factory.mktemp("backbone"), resolution=32,
        vae=AutoencoderConfig(**TINY, steps=6, batch_size=4), unet=DenoiserConfig(**TINY, steps=6, batch_size=4),
    )  # fmt: skip
    return cfg, pretrain(cfg, holdout_every=0, progress=False)


def test_the_stage_writes_a_backbone_that_load_backbone_loads_with_the_datas_scaling_factor(pretrained, shards):
    cfg, metrics = pretrained
    backbone = load_backbone(cfg.out_dir)
    assert backbone.vae.config.scaling_factor == metrics["vae"]["scaling_factor"] != 0.18215
    assert 2 ** (len(backbone.vae.config.block_out_channels) - 1) == 2 and backbone.unet.config.sample_size == 16
    train, _ = split_crops(shards, 0, 32)
    with torch.no_grad():
        latents = backbone.vae.encode(train).latent_dist.sample() * backbone.vae.config.scaling_factor
    assert latents.std() == pytest.approx(1.0, abs=0.1)  # unit variance, as SD's scaled latents have
    stored = json.loads((cfg.out_dir / METRICS_FILE).read_text())
    assert stored["train_crops"] == len(train) and stored["unet"]["final_loss"] > 0


def test_held_out_clips_are_never_pretrained_on(shards):
    train, held = split_crops(shards, 2, 32)
    both, none = split_crops(shards, 0, 32)
    assert len(train) + len(held) == len(both) and len(held) > 0 and len(none) == 0


def test_training_lowers_the_autoencoders_loss(shards):
    from facex_train.pretrain import train_vae

    train, _ = split_crops(shards, 0, 32)
    torch.set_num_threads(1)
    _, losses = train_vae(AutoencoderConfig(**TINY, steps=40, batch_size=4, learning_rate=3e-3), train, 32, 0, False)
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])


def test_the_random_twin_has_the_architecture_and_its_own_scaling_factor(pretrained, shards, tmp_path):
    cfg, _ = pretrained
    train, _ = split_crops(shards, 0, 32)
    twin = load_backbone(random_backbone_like(cfg.out_dir, tmp_path / "twin", train))
    original = load_backbone(cfg.out_dir)
    config = {k: v for k, v in twin.unet.config.items() if k != "_name_or_path"}
    assert config == {k: v for k, v in original.unet.config.items() if k != "_name_or_path"}
    assert twin.vae.config.scaling_factor != original.vae.config.scaling_factor
    a, b = twin.unet.state_dict(), original.unet.state_dict()
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)


def test_a_disabled_stage_writes_a_note_and_trains_nothing(tmp_path):
    out = tmp_path / "backbone"
    assert pretrain(PretrainConfig(enabled=False, out_dir=out), holdout_every=2) == {"enabled": False}
    assert "train.backbone" in (out / "README.md").read_text() and not (out / "unet").exists()
