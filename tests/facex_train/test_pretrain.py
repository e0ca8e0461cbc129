"""The pretrain stage: a backbone folder load_backbone loads, trained on the training clips only, with the VAE's
scaling factor computed from the data; and its random twin for the ablation."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from facex_data.extraction import ExtractConfig, run_extraction
from facex_data.manifest import FrameSelection
from facex_model.backbone import load_backbone
from facex_train import pretrain as pretrain_module
from facex_train.config import AutoencoderConfig, DenoiserConfig, PretrainConfig
from facex_train.pretrain import METRICS_FILE, phase_checkpoints, pretrain, random_backbone_like, split_crops

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
    cfg = tiny_config(shards, tmp_path_factory.mktemp("backbone"), tmp_path_factory.mktemp("checkpoints"))
    return cfg, pretrain(cfg, holdout_every=0, progress=False)


def tiny_config(shards: Path, out_dir: Path, checkpoint_dir: Path, unet_steps: int = 6) -> PretrainConfig:
    return PretrainConfig(
        shards=shards, out_dir=out_dir, resolution=32, checkpoint_dir=checkpoint_dir, checkpoint_every=2,
        vae=AutoencoderConfig(**TINY, steps=6, batch_size=4),
        unet=DenoiserConfig(**TINY, steps=unet_steps, batch_size=4),
    )  # fmt: skip


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
    # results only, the same bytes in every checkout: the shards by their path from the backbone folder, and the
    # wall seconds in the run record, which .dvcignore keeps out of DVC's hash
    assert stored["config"]["shards"] == Path(os.path.relpath(shards, cfg.out_dir)).as_posix()
    assert "seconds" not in json.dumps(stored) and str(shards) not in json.dumps(stored)
    record = json.loads((cfg.out_dir / pretrain_module.RUN_RECORD).read_text())
    assert record["vae_seconds"] > 0 and record["unet_seconds"] > 0 and metrics["seconds"] == record
    assert pretrain_module.RUN_RECORD in (Path(__file__).parents[2] / ".dvcignore").read_text().split()
    from facex_model import model

    assert pretrain_module.RUN_RECORD == model.RUN_RECORD  # one name for every stage's run record


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


def _weights(backbone: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = {sub: next((backbone / sub).glob("*.safetensors")) for sub in ("vae", "unet")}
    return {f"{sub}/{k}": v for sub, file in files.items() for k, v in load_file(file).items()}


@pytest.fixture
def phases(monkeypatch):
    """Record each phase's (name, first step) and optionally kill the run at one step of one phase."""
    started, original = [], pretrain_module._steps
    kill: dict[str, int] = {}

    def steps(total, max_seconds, progress, desc, start=0):
        started.append((desc, start))
        for step in original(total, max_seconds, progress, desc, start):
            if kill.get(desc) == step:
                raise KeyboardInterrupt
            yield step

    monkeypatch.setattr(pretrain_module, "_steps", steps)
    return started, kill


def test_a_killed_pretraining_resumes_the_identical_trajectory_from_its_last_checkpoint(pretrained, shards, tmp_path,
                                                                                     phases):  # fmt: skip
    cfg, metrics = pretrained
    started, kill = phases
    resumed = tiny_config(shards, tmp_path / "backbone", tmp_path / "checkpoints")
    kill["pretrain unet"] = 3  # the U-Net's steps 0-2 ran, the checkpoint holds 2 of them
    with pytest.raises(KeyboardInterrupt):
        pretrain(resumed, holdout_every=0, progress=False)
    kill.clear()
    started.clear()
    again = pretrain(resumed, holdout_every=0, progress=False)
    assert started == [("pretrain vae", 6), ("pretrain unet", 2)]  # the VAE is not trained again
    a, b = _weights(cfg.out_dir), _weights(resumed.out_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again["vae"]["scaling_factor"] == metrics["vae"]["scaling_factor"]
    assert again["unet"]["final_loss"] == metrics["unet"]["final_loss"]
    assert again["config"] | {"shards": None} == metrics["config"] | {"shards": None}  # shards: from each out_dir
    assert "checkpoint_dir" not in again["config"]


def test_changing_only_the_unets_settings_reuses_the_trained_vae(pretrained, shards, tmp_path, phases):
    cfg, _ = pretrained
    started, _ = phases
    longer = tiny_config(shards, tmp_path / "backbone", cfg.checkpoint_dir, unet_steps=8)
    pretrain(longer, holdout_every=0, progress=False)
    assert started == [("pretrain vae", 6), ("pretrain unet", 0)]


def test_checkpoints_are_named_by_the_settings_and_the_crops_they_were_trained_on(shards, tmp_path):
    train, _ = split_crops(shards, 0, 32)
    cfg = tiny_config(shards, tmp_path / "b", tmp_path / "c")
    vae, unet = phase_checkpoints(cfg, train)
    vae_longer, unet_longer = phase_checkpoints(tiny_config(shards, tmp_path / "b", tmp_path / "c", 8), train)
    assert vae_longer.path == vae.path and unet_longer.path != unet.path
    other = train.clone()
    other[0, 0, 0, 0] += 0.01
    assert all(x.path != y.path for x, y in zip(phase_checkpoints(cfg, other), (vae, unet)))
    assert phase_checkpoints(dataclasses.replace(cfg, checkpoint_every=0), train) is None


def test_an_unreadable_checkpoint_names_the_file_and_the_fix(shards, tmp_path):
    cfg = tiny_config(shards, tmp_path / "backbone", tmp_path / "checkpoints")
    vae, _ = phase_checkpoints(cfg, split_crops(shards, 0, 32)[0])
    vae.path.parent.mkdir(parents=True)
    vae.path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=rf"{vae.path.name}.*delete the file"):
        pretrain(cfg, holdout_every=0, progress=False)
