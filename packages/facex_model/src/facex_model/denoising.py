"""The denoising loop: conditions encoded once, a diffusers scheduler, classifier-free guidance, optional masked fusion.

    f_SD = SDAdapter(f_Rep, f_Inp)                          computed once per call (paper §3.3)
    eps  = eps(x_t, f_null) + s * (eps(x_t, f_SD) - eps(x_t, f_null))   classifier-free guidance
    x_t  = m * x_t + (1 - m) * q(x_target | t)              controllable swap: only the region m is generated

The keys and values every cross-attention (the U-Net's attn2 and the FRC's CrossAttn_ft) projects from f_SD are the
same at every step, so `cached_condition_kv` computes them on the first step and reuses them after.

:func:`denoise` is the whole thing; :func:`encode`, :func:`denoise_latents` and :func:`decode` are its three parts, so
a benchmark can time the loop alone with the conditions already encoded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.models.attention_processor import Attention
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from facex_model.fors import TaskSpec
from facex_model.frc import FRCAttnProcessor
from facex_model.model import FaceXModel

SCHEDULERS: dict[str, type[SchedulerMixin]] = {
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "dpm": DPMSolverMultistepScheduler,
}

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]  # (step index, timestep, latents)


def make_scheduler(model: FaceXModel, name: str) -> SchedulerMixin:
    """A fresh inference scheduler of kind `name` with the training scheduler's noise schedule."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name].from_config(model.scheduler.config)


@dataclass
class RegionFusion:
    """Controllable swap: outside `mask` the latents follow the target's, re-noised to each step's level.

    latents: the target's clean VAE latents (B, 4, h, w); mask: (B, 1, h, w) in [0, 1], 1 = generate here.
    """

    latents: torch.Tensor
    mask: torch.Tensor

    def apply(
        self, scheduler: SchedulerMixin, x: torch.Tensor, noise: torch.Tensor, next_t: torch.Tensor | None
    ) -> torch.Tensor:
        keep = self.latents if next_t is None else scheduler.add_noise(self.latents, noise, next_t.reshape(1))
        mask = self.mask.to(x.dtype)
        return mask * x + (1 - mask) * keep.to(x.dtype)


def latent_mask(mask: torch.Tensor, model: FaceXModel) -> torch.Tensor:
    """(B, 1, H, W) pixel mask -> latent resolution (max-pooled, so a region never loses its border latents)."""
    factor = vae_scale_factor(model)
    return F.max_pool2d(mask.float(), kernel_size=factor, stride=factor)


def vae_scale_factor(model: FaceXModel) -> int:
    return 2 ** (len(model.vae.config.block_out_channels) - 1)


@torch.no_grad()
def encode(
    model: FaceXModel,
    batch: dict[str, torch.Tensor],
    task: str | TaskSpec,
    extra_hole: torch.Tensor | None = None,
) -> torch.Tensor:
    """f_SD (B, T, cross_dim): the only call to the condition encoder in a sampling run."""
    return model.encode_conditions(batch, task, extra_hole)


@torch.no_grad()
def encode_target_latents(model: FaceXModel, images: torch.Tensor) -> torch.Tensor:
    """Deterministic latents of images in [-1, 1] (the posterior mean, for masked fusion)."""
    dist = model.vae.encode(images.to(model.vae.device, model.vae.dtype)).latent_dist
    return dist.mean * model.vae.config.scaling_factor


def initial_noise(
    model: FaceXModel, batch_size: int, height: int, width: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Seeded Gaussian latents, drawn on the CPU so one seed gives the same noise on every device."""
    factor = vae_scale_factor(model)
    shape = (batch_size, model.unet.config.in_channels, height // factor, width // factor)
    return torch.randn(shape, generator=generator, dtype=torch.float32)


@torch.no_grad()
def denoise_latents(
    model: FaceXModel,
    f_sd: torch.Tensor,
    noise: torch.Tensor,
    *,
    scheduler: str | SchedulerMixin = "ddim",
    steps: int = 20,
    cfg_scale: float = 3.0,
    generator: torch.Generator | None = None,
    region_fusion: RegionFusion | None = None,
    callback: StepCallback | None = None,
    cache_kv: bool = True,
) -> torch.Tensor:
    """The loop: `noise` (B, 4, h, w) at the scheduler's initial sigma -> clean latents, conditioned on `f_sd`."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    sched = make_scheduler(model, scheduler) if isinstance(scheduler, str) else scheduler
    device, dtype = model.unet.device, model.unet.dtype
    sched.set_timesteps(steps, device=device)
    noise = noise.to(device, dtype)
    latents = noise * sched.init_noise_sigma
    f_sd = f_sd.to(device, dtype)
    guided = cfg_scale != 1.0
    # one U-Net call per step on [null; conditions], so the cached keys/values cover both halves
    conditions = torch.cat([model.null_conditions(f_sd.shape[0]).to(device, dtype), f_sd]) if guided else f_sd
    timesteps = sched.timesteps
    with cached_condition_kv(model) if cache_kv else contextlib.nullcontext():
        for i, t in enumerate(timesteps):
            x = torch.cat([latents, latents]) if guided else latents
            x = sched.scale_model_input(x, t)
            eps = model.predict_noise(x, t.expand(x.shape[0]), conditions)
            if guided:
                uncond, cond = eps.chunk(2)
                eps = uncond + cfg_scale * (cond - uncond)
            latents = sched.step(eps, t, latents, generator=generator).prev_sample
            if region_fusion is not None:
                next_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
                latents = region_fusion.apply(sched, latents, noise, next_t)
            if callback is not None:
                callback(i, t, latents)
    return latents


@torch.no_grad()
def decode(model: FaceXModel, latents: torch.Tensor) -> torch.Tensor:
    """VAE decode -> images in [-1, 1]."""
    images = model.vae.decode(latents.to(model.vae.dtype) / model.vae.config.scaling_factor).sample
    return images.float().clamp(-1, 1)


@torch.no_grad()
def denoise(
    model: FaceXModel,
    batch: dict[str, torch.Tensor],
    task: str | TaskSpec,
    *,
    scheduler: str = "ddim",
    steps: int = 20,
    cfg_scale: float = 3.0,
    generator: torch.Generator | None = None,
    latents: torch.Tensor | None = None,
    extra_hole: torch.Tensor | None = None,
    region_fusion: RegionFusion | None = None,
    callback: StepCallback | None = None,
    cache_kv: bool = True,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Generate the task's output crops for a batch: -> (images (B, 3, H, W) in [-1, 1], extras).

    `latents` fixes the initial noise (video: the same noise for every frame); otherwise it is drawn from `generator`.
    extras: "f_sd" (the encoded conditions), "noise", "latents" (final), "timesteps".
    """
    f_sd = encode(model, batch, task, extra_hole)
    reference = batch.get("target_image", batch.get("source_image"))
    if reference is None:
        raise KeyError(f"batch has neither target_image nor source_image; it has {sorted(batch)}")
    height, width = reference.shape[-2:]
    noise = latents if latents is not None else initial_noise(model, f_sd.shape[0], height, width, generator)
    if noise.shape[0] != f_sd.shape[0]:
        noise = noise.expand(f_sd.shape[0], *noise.shape[1:])
    out = denoise_latents(
        model, f_sd, noise, scheduler=scheduler, steps=steps, cfg_scale=cfg_scale, generator=generator,
        region_fusion=region_fusion, callback=callback, cache_kv=cache_kv,
    )  # fmt: skip
    images = decode(model, out)
    return images, {"f_sd": f_sd, "noise": noise, "latents": out, "timesteps": steps}


class CachedKVProcessor:
    """Wraps an attention processor: keys/values projected from encoder_hidden_states are computed once per tensor.

    Only plain cross-attention (no group/spatial/cross norm, no mask) is cached; anything else goes to `base`.
    """

    def __init__(self, base: Any) -> None:
        self.base = base
        self._source: torch.Tensor | None = None
        self._kv: tuple[torch.Tensor, torch.Tensor] | None = None

    def _key_value(self, attn: Attention, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._source is not context or self._kv is None:
            self._source, self._kv = context, (attn.to_k(context), attn.to_v(context))
        return self._kv

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        plain = (
            encoder_hidden_states is not None
            and attention_mask is None
            and hidden_states.ndim == 3
            and attn.spatial_norm is None
            and attn.group_norm is None
            and not attn.norm_cross
            and attn.norm_q is None
            and attn.norm_k is None
            and not attn.residual_connection
        )
        if not plain:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        batch, _, _ = hidden_states.shape
        key, value = self._key_value(attn, encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = attn.to_q(hidden_states).view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


@contextlib.contextmanager
def cached_condition_kv(model: FaceXModel) -> Iterator[None]:
    """Within the block, every cross-attention on f_SD (U-Net attn2 and FRC) projects its keys/values once."""
    restore: list[Callable[[], None]] = []
    try:
        frc = [*model.frc.modules()] if model.frc is not None else []
        for module in [*model.unet.modules(), *frc]:
            if not isinstance(module, Attention) or not module.is_cross_attention:
                continue
            processor = module.processor
            if isinstance(processor, FRCAttnProcessor):
                base = processor.base
                processor.base = CachedKVProcessor(base)
                restore.append(lambda p=processor, b=base: setattr(p, "base", b))
            elif not isinstance(processor, CachedKVProcessor):
                module.set_processor(CachedKVProcessor(processor))
                restore.append(lambda m=module, p=processor: m.set_processor(p))
        yield
    finally:
        for undo in reversed(restore):
            undo()
