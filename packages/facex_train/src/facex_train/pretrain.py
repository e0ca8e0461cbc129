"""Pretraining the embedded profile's small backbone, as Stable Diffusion was trained before FaceX steers it.

FaceX steers a *pretrained* frozen U-Net (paper §3.4); a random frozen one gives its conditions nothing to steer.
The embedded profile cannot ship SD-1.5, so this trains a small backbone of SD-1.5's classes and folder layout
(``AutoencoderKL``, ``UNet2DConditionModel``, ``DDPMScheduler``, ``CLIPVisionModel``; ``unet/ vae/ scheduler/
clip_vision/``, which :func:`facex_model.backbone.load_backbone` loads) on the face crops of the training clips only:

1. the VAE as an autoencoder (MSE reconstruction + a small KL), then its ``scaling_factor`` from the data: one over
   the standard deviation of the training latents, so the U-Net sees unit-variance latents as SD's do;
2. the U-Net as a latent denoiser (epsilon prediction on SD-1.5's DDPM schedule, min-SNR weighting with
   ``diffusers.training_utils.compute_snr``, AdamW with diffusers' cosine schedule) whose cross-attention reads a
   coarse description of the image, as SD's reads a caption: the image pooled to a grid of colours, each with its
   position (:class:`CoarseImageTokens`, the stand-in for SD's text encoder, discarded after), dropped for the
   empty (zero) context on some steps as SD drops captions. A U-Net pretrained on a zero context only would have an
   untrained cross-attention that turns any f_SD into noise; this one has learned to be steered through it;
3. the CLIP vision tower stays random: FaceX finetunes it (``train.model.train_vision_encoder``).

Both use horizontal flips; everything is seeded. ``pretrain_metrics.json`` records the held-out round-trip PSNR of
the VAE and the held-out denoising loss of the U-Net (against 1.0, the loss of predicting no noise), and the shards
by their path relative to the output folder (the same bytes in every checkout); ``run_record.json`` beside it each
phase's wall seconds (.dvcignore'd: a record of the run, not a result).

Each phase saves its state every ``checkpoint_every`` steps under ``checkpoint_dir`` (:class:`PhaseCheckpoint`),
named by a hash of what shapes it (its settings, the training crops, the pretraining code; the U-Net's also by the
VAE's): a killed run resumes the identical trajectory from the last checkpoint, and a run that changes only the
U-Net's settings reuses the trained VAE.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from facex_data.layout import holdout_clips, shards_of_clips, written_clips
from facex_data.paths import relative_path
from facex_data.shards import decode_arrays, iter_samples
from facex_model.backbone import CLIP_SUBFOLDER, sd15_scheduler_config, tiny_clip_vision_config
from facex_model.features import image_tensor
from facex_train.code import closure_digest
from facex_train.config import AutoencoderConfig, DenoiserConfig, PretrainConfig
from facex_train.optim_state import flatten_optimizer, unflatten_optimizer

METRICS_FILE = "pretrain_metrics.json"
RUN_RECORD = "run_record.json"  # the phases' wall seconds; .dvcignore'd, as training's (facex_model.model)


def face_crops(shard_dir: Path, clips: set[str], resolution: int) -> torch.Tensor:
    """(N, 3, R, R) in [-1, 1]: every stored face crop of `clips`, resized as the model's inputs are."""
    images = []
    for url in shards_of_clips(shard_dir, clips):
        for raw in iter_samples(url):
            sample = decode_arrays(raw)
            if sample["meta"]["clip_id"] in clips:
                images.append(image_tensor(sample["image"], resolution))
    if not images:
        raise ValueError(f"{shard_dir}: no face crops of the clips {sorted(clips)[:3]}...")
    return torch.stack(images)


def split_crops(shard_dir: Path, holdout_every: int, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training crops, held-out crops) by the one held-out rule (facex_data.layout.holdout_clips)."""
    clips = written_clips(shard_dir)
    held = holdout_clips(clips, holdout_every)
    train = face_crops(shard_dir, set(clips) - held, resolution)
    return train, (face_crops(shard_dir, held, resolution) if held else train[:0])


def build_vae(cfg: AutoencoderConfig, resolution: int):
    from diffusers import AutoencoderKL

    blocks = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks, block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups, sample_size=resolution, scaling_factor=1.0,
    )  # fmt: skip


def build_unet(cfg: DenoiserConfig, latent_size: int, latent_channels: int):
    from diffusers import UNet2DConditionModel

    blocks = len(cfg.block_out_channels)
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels,
        layers_per_block=cfg.layers_per_block, block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (blocks - 1),
        cross_attention_dim=cfg.cross_attention_dim, attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
    )  # fmt: skip


def _batch(data: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random batch with random horizontal flips (faces are close to symmetric; the flip doubles the set)."""
    index = torch.randint(0, len(data), (size,), generator=generator)
    batch = data[index.to(data.device)]
    flip = (torch.rand(size, generator=generator) < 0.5).to(data.device)
    return torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)


def _steps(steps: int, max_seconds: float | None, progress: bool, desc: str, start: int = 0):
    """range(start, steps) with a progress bar, ending early once `max_seconds` have passed (a time-boxed run)."""
    started = time.monotonic()
    for step in tqdm(range(start, steps), desc=desc, unit="step", disable=not progress, initial=start, total=steps):
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            return
        yield step


def _optimizer(params, lr: float, steps: int):
    from diffusers.optimization import get_scheduler

    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    return optimizer, get_scheduler("cosine", optimizer, num_warmup_steps=min(100, steps // 10),
                                    num_training_steps=steps)  # fmt: skip


@dataclass(frozen=True)
class PhaseCheckpoint:
    """Where one pretraining phase keeps its state every `every` steps: one safetensors file (weights, optimizer
    moments, the RNGs; step, losses and schedule in its metadata), replaced atomically, so a kill never leaves half
    of one. The file's name carries the hash of what shapes the phase: a changed setting never resumes a stale one."""

    path: Path
    every: int

    def due(self, step: int, steps: int) -> bool:
        return self.every > 0 and (step % self.every == 0 or step == steps)

    def save(self, step: int, losses: list[float], modules: dict[str, torch.nn.Module], optimizer, schedule,
             generator: torch.Generator) -> None:  # fmt: skip
        tensors, groups = flatten_optimizer(optimizer.state_dict())
        for name, module in modules.items():
            tensors |= {f"{name}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        tensors |= {"rng.generator": generator.get_state(), "rng.torch": torch.get_rng_state()}
        meta = {"step": step, "losses": losses, "param_groups": groups, "schedule": schedule.state_dict()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        save_file(tensors, partial, metadata={"state": json.dumps(meta)})
        os.replace(partial, self.path)

    def restore(self, modules: dict[str, torch.nn.Module], optimizer, schedule,
                generator: torch.Generator) -> tuple[int, list[float]]:  # fmt: skip
        """Load the saved state into the phase's objects; -> (steps done, loss history). (0, []) if none saved."""
        if not self.path.is_file():
            return 0, []
        try:
            tensors = load_file(self.path)
            with safe_open(self.path, "pt") as f:
                meta = json.loads(f.metadata()["state"])
            for name, module in modules.items():
                prefix = f"{name}."
                module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            optimizer.load_state_dict(unflatten_optimizer(tensors, meta["param_groups"]))
            schedule.load_state_dict(meta["schedule"])
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as err:
            raise ValueError(f"{self.path}: not a pretraining checkpoint this code can resume ({err}); delete the "
                             "file to train this phase from the start") from err  # fmt: skip
        generator.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
        print(f"{self.path.name}: resuming at step {meta['step']}", flush=True)
        return meta["step"], list(meta["losses"])


def phase_checkpoints(cfg: PretrainConfig, train: torch.Tensor) -> tuple[PhaseCheckpoint, PhaseCheckpoint] | None:
    """The VAE's and the U-Net's checkpoint files for this config and these training crops (None: checkpoints off)."""
    if cfg.checkpoint_every <= 0:
        return None
    data = hashlib.sha256(train.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    vae = _digest(closure_digest(["facex_train.pretrain"]), data, cfg.resolution, cfg.seed, asdict(cfg.vae))
    unet = _digest(vae, asdict(cfg.unet))
    folder = Path(cfg.checkpoint_dir)
    return (PhaseCheckpoint(folder / f"vae-{vae[:16]}.safetensors", cfg.checkpoint_every),
            PhaseCheckpoint(folder / f"unet-{unet[:16]}.safetensors", cfg.checkpoint_every))  # fmt: skip


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR (dB) of images in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def train_vae(cfg: AutoencoderConfig, train: torch.Tensor, resolution: int, seed: int, progress: bool,
              max_seconds: float | None = None, checkpoint: PhaseCheckpoint | None = None):  # fmt: skip
    """The autoencoder, trained on `train` (on its device); returns (vae with its data-derived scaling factor, loss
    history). `max_seconds` ends a time-boxed run early; `checkpoint` resumes from and saves to that file."""
    torch.manual_seed(seed)
    vae = build_vae(cfg, resolution).to(train.device).train()
    generator = torch.Generator().manual_seed(seed)
    optimizer, schedule = _optimizer(vae.parameters(), cfg.learning_rate, cfg.steps)
    start, losses = checkpoint.restore({"vae": vae}, optimizer, schedule, generator) if checkpoint else (0, [])
    for step in _steps(cfg.steps, max_seconds, progress, "pretrain vae", start):
        x = _batch(train, cfg.batch_size, generator)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(_on_cpu(generator, x))).sample
        loss = F.mse_loss(recon, x) + cfg.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if checkpoint is not None and checkpoint.due(step + 1, cfg.steps):
            checkpoint.save(step + 1, losses, {"vae": vae}, optimizer, schedule, generator)
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(x).latent_dist.sample(_on_cpu(generator, x)) for x in train.split(64)])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return vae, losses


@torch.no_grad()
def _latent_moments(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image and of its mirror image (the U-Net trains on both)."""
    both = torch.cat([images, images.flip(-1)])
    dists = [vae.encode(x).latent_dist for x in both.split(64)]
    return torch.cat([d.mean for d in dists]), torch.cat([d.std for d in dists])


class CoarseImageTokens(torch.nn.Module):
    """The pretraining's stand-in for SD's text encoder: the image pooled to `grid` x `grid` colours, each joined to
    its 2-D position code and projected to the cross-attention width: a caption that says what colour is where."""

    POSITION_DIM = 16

    def __init__(self, grid: int, dim: int) -> None:
        super().__init__()
        self.grid = grid
        self.proj = torch.nn.Linear(3 + self.POSITION_DIM, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from facex_model.frc import grid_positions

        colours = F.adaptive_avg_pool2d(images, self.grid).flatten(2).transpose(1, 2)
        code = grid_positions(self.grid**2, self.POSITION_DIM, images.device, images.dtype)
        return self.proj(torch.cat([colours, code.expand(len(images), -1, -1)], dim=-1))


def _context(cfg: DenoiserConfig, captions, images: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
    """Cross-attention input: the coarse caption of each image, or the empty (zero) context where `drop`."""
    if captions is None:
        return torch.zeros(len(images), 1, cfg.cross_attention_dim, device=images.device)
    context = captions(images)
    return context if drop is None else torch.where(drop.view(-1, 1, 1), torch.zeros_like(context), context)


def _on_cpu(generator: torch.Generator, x: torch.Tensor) -> torch.Generator | None:
    # diffusers samples on the tensor's device; a CPU generator can drive CPU sampling only
    return generator if x.device.type == "cpu" else None


def train_unet(cfg: DenoiserConfig, vae, train: torch.Tensor, seed: int, progress: bool,
               max_seconds: float | None = None, checkpoint: PhaseCheckpoint | None = None):  # fmt: skip
    """The latent denoiser on the VAE's (scaled) latents of `train` (on its device); returns (unet, captions or
    None, loss history). `max_seconds` ends a time-boxed run early; `checkpoint` resumes from and saves to that
    file."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    mean, std = _latent_moments(vae, train)
    images = torch.cat([train, train.flip(-1)])  # in the order of the latents
    factor = vae.config.scaling_factor
    device = train.device
    torch.manual_seed(seed + 1)
    unet = build_unet(cfg, mean.shape[-1], mean.shape[1]).to(device).train()
    captions = CoarseImageTokens(cfg.condition_grid, cfg.cross_attention_dim).to(device) if cfg.condition_grid > 0 \
        else None
    scheduler = DDPMScheduler(**sd15_scheduler_config())
    generator = torch.Generator().manual_seed(seed + 1)
    params = [*unet.parameters(), *(captions.parameters() if captions is not None else [])]
    optimizer, schedule = _optimizer(params, cfg.learning_rate, cfg.steps)
    modules = {"unet": unet} | ({"captions": captions} if captions is not None else {})
    start, losses = checkpoint.restore(modules, optimizer, schedule, generator) if checkpoint else (0, [])
    for step in _steps(cfg.steps, max_seconds, progress, "pretrain unet", start):
        index = torch.randint(0, len(mean), (cfg.batch_size,), generator=generator).to(device)
        eps = torch.randn(mean[index].shape, generator=generator).to(device)
        latents = (mean[index] + std[index] * eps) * factor
        noise = torch.randn(latents.shape, generator=generator).to(device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=generator)
        timesteps = timesteps.to(device)
        drop = (torch.rand(cfg.batch_size, generator=generator) < cfg.condition_drop).to(device)
        context = _context(cfg, captions, images[index], drop)
        pred = unet(scheduler.add_noise(latents, noise, timesteps), timesteps, encoder_hidden_states=context).sample
        per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        if cfg.snr_gamma > 0:
            snr = compute_snr(scheduler, timesteps)
            per_sample = per_sample * torch.minimum(snr, torch.full_like(snr, cfg.snr_gamma)) / snr
        loss = per_sample.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if checkpoint is not None and checkpoint.due(step + 1, cfg.steps):
            checkpoint.save(step + 1, losses, modules, optimizer, schedule, generator)
    return unet.eval(), captions, losses


@torch.no_grad()
def heldout_denoising_loss(unet, vae, images: torch.Tensor, cfg: DenoiserConfig, captions=None,
                           seed: int = 1234) -> float:  # fmt: skip
    """Plain epsilon MSE on held-out latents at fixed noise and timesteps (1.0 = predicting no noise), with the
    images' coarse captions (or the empty context when `captions` is None)."""
    from diffusers import DDPMScheduler

    if len(images) == 0:
        return float("nan")
    scheduler = DDPMScheduler(**sd15_scheduler_config())
    generator = torch.Generator().manual_seed(seed)
    latents = torch.cat([vae.encode(x).latent_dist.mean for x in images.split(64)]) * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator)
    timesteps = timesteps.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = torch.cat([unet(n, t, encoder_hidden_states=_context(cfg, captions, x, None)).sample
                      for n, t, x in zip(noisy.split(64), timesteps.split(64), images.split(64))])  # fmt: skip
    return float(F.mse_loss(pred, noise))


@torch.no_grad()
def roundtrip_psnr(vae, images: torch.Tensor) -> float:
    if len(images) == 0:
        return float("nan")
    recon = torch.cat([vae.decode(vae.encode(x).latent_dist.mean).sample for x in images.split(64)])
    return psnr(recon, images)


def save_backbone(out_dir: Path, vae, unet, seed: int) -> Path:
    """The folder load_backbone reads: unet/, vae/, scheduler/ (SD-1.5's schedule), clip_vision/ (random)."""
    from diffusers import DDPMScheduler
    from transformers import CLIPVisionConfig, CLIPVisionModel

    out = Path(out_dir)
    vae.save_pretrained(out / "vae")
    unet.save_pretrained(out / "unet")
    DDPMScheduler(**sd15_scheduler_config()).save_pretrained(out / "scheduler")
    torch.manual_seed(seed + 2)
    CLIPVisionModel(CLIPVisionConfig(**tiny_clip_vision_config())).save_pretrained(out / CLIP_SUBFOLDER)
    return out


def pretrain(cfg: PretrainConfig, holdout_every: int, progress: bool = True) -> dict:
    """Train and save the backbone into ``cfg.out_dir``; returns what ``pretrain_metrics.json`` holds."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.enabled:
        (out / "README.md").write_text("Pretraining is off in this profile (pretrain.enabled: false): the training "
                                       "stages use the backbone named by train.backbone.\n")  # fmt: skip
        return {"enabled": False}
    started = time.monotonic()
    train, held = split_crops(cfg.shards, holdout_every, cfg.resolution)
    vae_checkpoint, unet_checkpoint = phase_checkpoints(cfg, train) or (None, None)
    vae, vae_losses = train_vae(cfg.vae, train, cfg.resolution, cfg.seed, progress, checkpoint=vae_checkpoint)
    vae_seconds = time.monotonic() - started
    unet, captions, unet_losses = train_unet(cfg.unet, vae, train, cfg.seed, progress, checkpoint=unet_checkpoint)
    metrics = {
        "enabled": True,
        "train_crops": len(train),
        "heldout_crops": len(held),
        "vae": {"params": sum(p.numel() for p in vae.parameters()), "scaling_factor": vae.config.scaling_factor,
                "heldout_roundtrip_psnr": roundtrip_psnr(vae, held), "train_roundtrip_psnr": roundtrip_psnr(vae, train),
                "final_loss": vae_losses[-1]},
        "unet": {"params": sum(p.numel() for p in unet.parameters()),
                 "heldout_denoising_loss": heldout_denoising_loss(unet, vae, held, cfg.unet),
                 "heldout_denoising_loss_captioned": heldout_denoising_loss(unet, vae, held, cfg.unet, captions),
                 "final_loss": unet_losses[-1]},
        "config": json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k not in cfg.NOT_SHAPING}
                                        | {"shards": relative_path(cfg.shards, out)}, default=str)),
    }  # fmt: skip
    seconds = {"vae_seconds": round(vae_seconds, 1), "unet_seconds": round(time.monotonic() - started - vae_seconds, 1)}
    save_backbone(out, vae, unet, cfg.seed)
    (out / METRICS_FILE).write_text(json.dumps(_finite(metrics), indent=1) + "\n")
    (out / RUN_RECORD).write_text(json.dumps(seconds, indent=1) + "\n")
    return metrics | {"seconds": seconds}


def _finite(tree):
    if isinstance(tree, dict):
        return {k: _finite(v) for k, v in tree.items()}
    return None if isinstance(tree, float) and not math.isfinite(tree) else tree


def random_backbone_like(backbone: Path, out_dir: Path, train: torch.Tensor, seed: int = 0) -> Path:
    """`backbone`'s architecture re-initialised at random (seeded), with the scaling factor its random VAE needs on
    the training crops `train`: what FaceX would have to steer without pretraining (an ablation row)."""
    import shutil

    from diffusers import AutoencoderKL, UNet2DConditionModel

    backbone, out = Path(backbone), Path(out_dir)
    torch.manual_seed(seed)
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(backbone / "vae")).eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(x).latent_dist.sample() for x in train.split(64)])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(backbone / "unet")).eval()
    vae.save_pretrained(out / "vae")
    unet.save_pretrained(out / "unet")
    for sub in ("scheduler", CLIP_SUBFOLDER):  # the schedule, and the same (random) vision tower as the backbone's
        shutil.copytree(backbone / sub, out / sub, dirs_exist_ok=True)
    return out
