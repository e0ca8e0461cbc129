"""FaceXModel: FORD -> FORS -> SD Adapter -> FRC on a frozen SD-1.5 U-Net (paper §3), and its training loss.

Batch layout (flat, so a default collate builds it): for each side in ("source", "target", optionally "reference"):
`{side}_image` (B, 3, H, W) in [-1, 1], `{side}_parsing` (B, H, W) BiSeNet-19 ids (255 = unknown),
`{side}_id` (B, N, id_dim) ID tokens, and one `{side}_{name}` (B, dim) per configured vector representation
(pose, expression, gaze, texture, lighting). A side only needs what the task row takes from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_snr
from safetensors.torch import load_file, save_file
from torch import nn

from facex_data.paths import relative_path
from facex_model.backbone import Backbone, load_backbone
from facex_model.ford import IdentityEncoder, RegionEncoder, default_fpn_layers
from facex_model.fors import (
    REPRESENTATIONS,
    VECTOR_REPRESENTATIONS,
    InpaintImageEncoder,
    RegionAssembler,
    RepresentationAdapter,
    RepresentationAssembler,
    TaskSpec,
    get_task,
)
from facex_model.frc import FacialRepresentationController
from facex_model.regions import ALL_REGIONS, PAPER_REGIONS
from facex_model.sd_adapter import SDAdapter

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "facex_trainable.safetensors"
# written beside them by training (facex_train.train.fit): losses, held-out loss, the clips it learned from
TRAIN_METRICS = "train_metrics.json"
# ... and what only that run saw: wall times, its Ray Train run name, where it resumed (.dvcignore'd: not a result)
RUN_RECORD = "run_record.json"
TRAINABLE_MODULES = (
    "identity_encoder",
    "region_encoder",
    "representation_adapter",
    "inpaint_encoder",
    "sd_adapter",
    "frc",
)


@dataclass
class FaceXConfig:
    """Everything that shapes the trainable part; saved as config.json beside its weights."""

    backbone_path: str
    clip_path: str | None = None
    id_dim: int = 512
    id_tokens: int = 64
    # 3DMM sizes (Deep3DFaceRecon); a dim of 0 drops that representation
    vector_dims: dict[str, int] = field(
        default_factory=lambda: {"pose": 3, "expression": 64, "gaze": 2, "texture": 80, "lighting": 27}
    )
    regions: tuple[str, ...] = PAPER_REGIONS
    rep_dim: int = 768
    hidden_dim: int = 768
    fpn_layers: tuple[int, ...] | None = None
    fpn_levels: int = 3
    inp_channels: tuple[int, ...] = (64, 128, 256, 512)
    inp_grid: int = 8
    frc_heads: int = 8
    frc_positional: bool = True  # FRC queries carry a 2-D position code (frc.FRCCrossAttention)
    task: str = "headswap"
    cond_drop_prob: float = 0.1
    train_vision_encoder: bool = False
    extractors: str = "paper"  # the extractor backend whose features the model reads (facex_model.features)
    resolution: int = 256  # image size the model was trained at (aligned crops are resized to it)
    # ablations (paper Table 3, Fig 11): each False removes one component
    use_frc: bool = True  # False: no Facial Representation Controller; f_SD reaches the U-Net through attn2 only
    region_assembler: bool = True  # False: I_R blanked (phi_Inp sees an empty image, all hole)
    representation_assembler: bool = True  # False: every representation from the target, whatever the task

    @classmethod
    def tiny(cls, backbone_path: str | Path, **overrides: Any) -> FaceXConfig:
        """Sizes for the tiny backbone (offline 128-d identity vector, 10-d landmark expression)."""
        values: dict[str, Any] = dict(
            backbone_path=str(backbone_path),
            id_dim=128,
            id_tokens=1,
            vector_dims={"pose": 3, "expression": 10, "gaze": 2, "texture": 0, "lighting": 0},
            rep_dim=32,
            hidden_dim=32,
            inp_channels=(16, 32, 32),
            inp_grid=4,
            frc_heads=4,
            extractors="offline",
            resolution=64,
        )
        values.update(overrides)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaceXConfig:
        data = dict(data)
        for key in ("regions", "fpn_layers", "inp_channels"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


class FaceXModel(nn.Module):
    def __init__(self, config: FaceXConfig, backbone: Backbone | None = None) -> None:
        super().__init__()
        self.config = config
        backbone = backbone or load_backbone(config.backbone_path, config.clip_path)
        self.unet = backbone.unet
        self.vae = backbone.vae
        self.image_encoder = backbone.image_encoder
        self.scheduler = backbone.scheduler
        for module in (self.unet, self.vae, self.image_encoder):
            module.requires_grad_(False)

        vision = self.image_encoder.config
        cross_dim = self.unet.config.cross_attention_dim
        fpn_layers = list(config.fpn_layers or default_fpn_layers(vision.num_hidden_layers, config.fpn_levels))
        self.vector_names = [n for n in VECTOR_REPRESENTATIONS if config.vector_dims.get(n, 0) > 0]

        # FORD
        self.identity_encoder = IdentityEncoder(config.id_dim, config.rep_dim)
        self.region_encoder = RegionEncoder(vision.hidden_size, config.rep_dim, fpn_layers, tuple(config.regions))
        # FORS
        self.representation_assembler = RepresentationAssembler(tuple(config.regions))
        input_dims = {"id": config.rep_dim, "regions": config.rep_dim} | {
            n: config.vector_dims[n] for n in self.vector_names
        }
        token_counts = {"id": config.id_tokens, "regions": len(config.regions)}
        self.representation_adapter = RepresentationAdapter(input_dims, token_counts, config.hidden_dim)
        self.region_assembler = RegionAssembler()
        self.inpaint_encoder = InpaintImageEncoder(tuple(config.inp_channels), config.hidden_dim, config.inp_grid)
        # SD Adapter and FRC
        self.sd_adapter = SDAdapter(config.hidden_dim, cross_dim)
        self.frc: FacialRepresentationController | None = None
        if config.use_frc:
            self.frc = FacialRepresentationController.for_unet(
                self.unet, num_heads=config.frc_heads, positional=config.frc_positional
            )
            self.frc.install(self.unet)
        # classifier-free guidance: a dropped sample sees this learned f_SD instead of its conditions
        num_tokens = self.representation_adapter.num_tokens + config.inp_grid**2
        self.null_f_sd = nn.Parameter(torch.randn(num_tokens, cross_dim) * 0.02)

        self.image_encoder.requires_grad_(config.train_vision_encoder)
        if config.train_vision_encoder:  # only hidden states are read: the pooled output's norm gets no gradient
            encoder = getattr(self.image_encoder, "vision_model", self.image_encoder)  # transformers 4.x nests it
            encoder.post_layernorm.requires_grad_(False)

    # --- parameters -------------------------------------------------------------------------------------------
    def trainable_modules(self) -> dict[str, nn.Module]:
        modules = {name: getattr(self, name) for name in TRAINABLE_MODULES if getattr(self, name) is not None}
        if self.config.train_vision_encoder:
            modules["image_encoder"] = self.image_encoder
        return modules

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Exactly FRC + FORD/FORS adapters (ID projection, FPN, absent tokens, Representation/SD adapters) + phi_Inp +
        the null f_SD (+ the CLIP vision encoder when `train_vision_encoder`)."""
        params = [p for m in self.trainable_modules().values() for p in m.parameters() if p.requires_grad]
        return [*params, self.null_f_sd]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"{name}.{k}": v for name, m in self.trainable_modules().items() for k, v in m.state_dict().items()}
        state["null_f_sd"] = self.null_f_sd.data
        return state

    def train(self, mode: bool = True) -> FaceXModel:
        """Train mode for the trainable part only; the frozen backbone stays in eval (no dropout, fixed statistics)."""
        super().train(mode)
        frozen = [self.unet, self.vae] + ([] if self.config.train_vision_encoder else [self.image_encoder])
        for module in frozen:
            module.eval()
        return self

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    # --- conditions ---------------------------------------------------------------------------------------------
    def encode_representations(
        self, batch: dict[str, torch.Tensor], side: str, names: set[str]
    ) -> dict[str, torch.Tensor]:
        """FORD for one side: only the representations in `names`."""
        reps: dict[str, torch.Tensor] = {}
        if "id" in names:
            reps["id"] = self.identity_encoder(_get(batch, f"{side}_id"))
        if "regions" in names:
            reps["regions"] = self.region_encoder(
                self.image_encoder, _get(batch, f"{side}_image"), _get(batch, f"{side}_parsing")
            )
        for name in self.vector_names:
            if name in names:
                reps[name] = _get(batch, f"{side}_{name}")
        return reps

    def encode_conditions(
        self,
        batch: dict[str, torch.Tensor],
        task: str | TaskSpec | None = None,
        extra_hole: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """f_SD (B, T, cross_dim), computed once per image pair; the U-Net reads it as encoder_hidden_states."""
        spec = get_task(task or self.config.task)
        if not self.config.representation_assembler:  # ablation: no task-specific choice of representations
            spec = dataclasses.replace(spec, representations=dict.fromkeys(REPRESENTATIONS, "target"),
                                       regions=dict.fromkeys(ALL_REGIONS, "target"))  # fmt: skip
        wanted: dict[str, set[str]] = {}
        for name in ("id", *self.vector_names):
            wanted.setdefault(spec.side_of(name), set()).add(name)
        for region in self.config.regions:
            wanted.setdefault(spec.regions.get(region, "source"), set()).add("regions")
        reps = {side: self.encode_representations(batch, side, names) for side, names in wanted.items()}
        f_rep = self.representation_adapter(self.representation_assembler(reps, spec))

        reference, hole = self.assemble_reference(batch, spec, extra_hole)
        f_inp = self.inpaint_encoder(reference, hole)
        return self.sd_adapter(f_rep, f_inp)

    def assemble_reference(
        self,
        batch: dict[str, torch.Tensor],
        task: str | TaskSpec | None = None,
        extra_hole: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The region assembler's I_R (B, 3, H, W) in [-1, 1] and its hole mask (B, 1, H, W) for a task."""
        spec = get_task(task or self.config.task)
        image_sides = (
            {spec.base, spec.paste_side, *spec.hole_sides} if spec.hole_regions or spec.paste_regions else {spec.base}
        )
        images = {s: _get(batch, f"{s}_image") for s in image_sides}
        parsings = {s: batch[f"{s}_parsing"] for s in image_sides if f"{s}_parsing" in batch}
        reference, hole = self.region_assembler(images, parsings, spec, extra_hole)
        if not self.config.region_assembler:  # ablation: an empty inpainting reference
            return torch.zeros_like(reference), torch.ones_like(hole)
        return reference, hole

    def null_conditions(self, batch_size: int) -> torch.Tensor:
        """The learned unconditional f_SD, for classifier-free guidance at inference."""
        return self.null_f_sd.unsqueeze(0).expand(batch_size, -1, -1)

    def predict_noise(self, latents: torch.Tensor, timesteps: torch.Tensor, f_sd: torch.Tensor) -> torch.Tensor:
        """The U-Net with FRC installed: attn2 and FRC both read f_SD from encoder_hidden_states."""
        return self.unet(latents, timesteps, encoder_hidden_states=f_sd.to(self.unet.dtype)).sample

    # --- training -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_latents(self, images: torch.Tensor, generator: torch.Generator | None = None,
                       moments: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Scaled latents sampled from the VAE posterior of `images`, or from its precomputed `moments` (mean ‖
        log-variance, as extraction stores them: the encoder then does not run)."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        if moments is not None:
            dist = DiagonalGaussianDistribution(moments.to(images.device, torch.float32))
        else:
            dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        return dist.sample(generator=generator) * self.vae.config.scaling_factor

    def training_loss(
        self,
        batch: dict[str, torch.Tensor],
        task: str | TaskSpec | None = None,
        generator: torch.Generator | None = None,
        drop_mask: torch.Tensor | None = None,
        snr_gamma: float | None = None,
        logit_normal: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """MSE between the U-Net's prediction and the noise (or v) added to the target's VAE latents.

        Timesteps come from `sample_timesteps` (uniform, or the `logit_normal` = (mean, std) it describes). Each
        sample's conditions are swapped for the learned null with probability
        `cond_drop_prob` (or where `drop_mask` is True). All randomness comes from `generator`.
        `snr_gamma` turns on min-SNR loss weighting (Hang et al. 2023; diffusers' `compute_snr`).
        """
        target = _get(batch, "target_image")
        device, bsz = target.device, target.shape[0]
        latents = self.encode_latents(target, _on(generator, device), batch.get("target_latent"))
        noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype).to(device)
        num_steps = self.scheduler.config.num_train_timesteps
        timesteps = sample_timesteps(bsz, num_steps, generator, logit_normal).to(device)
        if drop_mask is None:
            drop_mask = torch.rand(bsz, generator=generator) < self.config.cond_drop_prob
        noisy = self.scheduler.add_noise(latents, noise, timesteps)

        f_sd = self.encode_conditions(batch, task)
        f_sd = torch.where(drop_mask.to(device).view(-1, 1, 1), self.null_conditions(bsz).to(f_sd.dtype), f_sd)
        pred = self.predict_noise(noisy, timesteps, f_sd)
        if self.scheduler.config.prediction_type == "v_prediction":
            goal = self.scheduler.get_velocity(latents, noise, timesteps)
        else:
            goal = noise
        if not snr_gamma:
            return F.mse_loss(pred.float(), goal.float())
        snr = compute_snr(self.scheduler, timesteps)
        weight = torch.minimum(snr, torch.full_like(snr, snr_gamma))
        weight = weight / (snr + 1) if self.scheduler.config.prediction_type == "v_prediction" else weight / snr
        per_sample = F.mse_loss(pred.float(), goal.float(), reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * weight.float()).mean()

    def forward(self, batch: dict[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        return self.training_loss(batch, **kwargs)

    # --- persistence --------------------------------------------------------------------------------------------
    def save_pretrained(self, save_dir: str | Path, relative_paths: bool = False) -> Path:
        """Only the trainable part: safetensors + config.json; the backbone is referenced by `backbone_path`.

        `relative_paths` writes the backbone's (and CLIP's) path relative to the folder where the two share a
        directory below the filesystem's root, so that a checkout or a copy holding both stays loadable wherever it
        lies (and writes the same bytes wherever it lies: the pipeline's DVC outputs)."""
        out = Path(save_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, self.config, relative_paths)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.trainable_state_dict().items()}, out / WEIGHTS_NAME
        )
        return out

    @staticmethod
    def read_config(load_dir: str | Path) -> FaceXConfig:
        """The config.json of a saved model folder (FileNotFoundError naming what is missing), its relative paths
        resolved against the folder."""
        root = Path(load_dir)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (root / name).is_file():
                raise FileNotFoundError(
                    f"{root / name} is missing: is {root} a folder written by FaceXModel.save_pretrained?"
                )
        data = json.loads((root / CONFIG_NAME).read_text())
        for key in PATH_FIELDS:
            if data.get(key) is not None and not Path(data[key]).is_absolute():
                data[key] = os.path.normpath(Path(os.path.abspath(root)) / data[key])
        return FaceXConfig.from_json(data)

    def load_trainable(self, load_dir: str | Path) -> FaceXModel:
        """Copy a saved trainable part (``facex_trainable.safetensors``) into this model; every key must match."""
        path = Path(load_dir) / WEIGHTS_NAME
        state = load_file(path)
        own = self.trainable_state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"{path} does not match this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        with torch.no_grad():
            for key, value in state.items():
                own[key].copy_(value)
        return self

    @classmethod
    def from_pretrained(
        cls,
        load_dir: str | Path,
        backbone_path: str | Path | None = None,
        clip_path: str | Path | None = None,
        backbone: Backbone | None = None,
        **config_changes: Any,
    ) -> FaceXModel:
        """Restore a saved trainable part onto its backbone, or onto another SD-architecture one (`backbone_path`).

        `config_changes` (e.g. ``task="swap"``) are FaceXConfig fields to change: the config is complete before
        the model is built."""
        config = cls.read_config(load_dir)
        if backbone_path is not None:
            config_changes = {"backbone_path": str(backbone_path),
                              "clip_path": str(clip_path) if clip_path is not None else None, **config_changes}
        elif clip_path is not None:
            config_changes = {"clip_path": str(clip_path), **config_changes}
        return cls(dataclasses.replace(config, **config_changes), backbone=backbone).load_trainable(load_dir)


PATH_FIELDS = ("backbone_path", "clip_path")  # config.json fields naming folders (relative ones: to config.json's)


def write_config(folder: str | Path, config: FaceXConfig, relative_paths: bool = False) -> Path:
    """Write `config` as `folder`/config.json; with `relative_paths`, each path field that shares a directory other
    than the filesystem's root with `folder` is written relative to it (FaceXModel.read_config resolves it back)."""
    data = config.to_json()
    if relative_paths:
        data |= {key: relative_path(data[key], folder) for key in PATH_FIELDS if data.get(key) is not None}
    path = Path(folder) / CONFIG_NAME
    path.write_text(json.dumps(data, indent=2))
    return path


def sample_timesteps(
    n: int, num_steps: int, generator: torch.Generator | None = None, logit_normal: tuple[float, float] | None = None
) -> torch.Tensor:
    """(n,) training timesteps in [0, num_steps), on the CPU: uniform, or with `logit_normal` = (mean, std)
    t / T = sigmoid(N(mean, std)) (diffusers' `compute_density_for_timestep_sampling`; a positive mean trains the
    noisy steps, where the conditions decide the picture, more often)."""
    if logit_normal is None:
        return torch.randint(0, num_steps, (n,), generator=generator)
    u = compute_density_for_timestep_sampling("logit_normal", n, *logit_normal, generator=generator)
    return (u * num_steps).long().clamp(max=num_steps - 1)


def _get(batch: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in batch:
        raise KeyError(f"batch has no {key!r}; it has {sorted(batch)}")
    return batch[key]


def _on(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    # the VAE samples on the latents' device; a CPU generator can only drive CPU sampling
    return generator if generator is None or generator.device == device else None
