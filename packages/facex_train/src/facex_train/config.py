"""The typed configs of the training package's stages: each is one params section, with its one set of defaults.

``pipelines/config.py`` parses ``params.yaml`` into these (``train``, ``compute``, ``evaluate``); the stages
hand them to :mod:`facex_train.train` and :mod:`facex_train.evaluation` as they are. This module imports
nothing heavy, so parsing params costs no torch import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from facex_data.paths import InputPath


@dataclass(frozen=True)
class ComputeConfig:
    """The ``compute`` section: how many Ray Train workers a stage uses, and whether each gets a GPU."""

    num_workers: int = 2
    use_gpu: bool = False
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"compute.num_workers must be >= 1, got {self.num_workers}")


@dataclass(frozen=True)
class ModelConfig:
    """``train.model``: the sizes of FaceX's trainable part (the FaceXConfig fields params choose; the backbone,
    the extractor backend and the stage fix the rest). The defaults are the paper's SD-1.5 sizes."""

    rep_dim: int = 768
    hidden_dim: int = 768
    fpn_levels: int = 3
    inp_channels: tuple[int, ...] = (64, 128, 256, 512)
    inp_grid: int = 8  # phi_Inp's token grid: inp_grid^2 f_Inp tokens
    frc_heads: int = 8
    train_vision_encoder: bool = False  # the paper finetunes CLIP's vision tower with FaceX


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section: every training stage (the generalist and each specialist) reads it."""

    shards: InputPath = InputPath("data/shards")  # the extract stage's output
    out_dir: Path = Path("data/models")  # each stage writes <out_dir>/<stage>/ (config.json + safetensors)
    checkpoint_dir: str = ".work/ray_train"  # Ray Train storage: a path (relative to the repo) or s3:// / gs://
    model: ModelConfig = field(default_factory=ModelConfig)
    resolution: int = 64
    batch_size: int = 2  # global batch per optimizer step = num_workers x micro-batch x grad_accum
    learning_rate: float = 1.0e-5
    generalist_steps: int = 20
    specialist_steps: dict[str, int] = field(default_factory=lambda: {"reenact": 10, "swap": 10})
    cond_drop_prob: float = 0.1
    seed: int = 0
    grad_accum: int = 1
    warmup_steps: int = 0
    weight_decay: float = 1.0e-2
    max_grad_norm: float = 1.0
    ema_decay: float = 0.0  # 0 = off; e.g. 0.9999 for long runs
    gradient_checkpointing: bool = False
    snr_gamma: float = 0.0  # 0 = plain MSE; 5.0 = min-SNR weighting
    min_gap: int = 1  # video frames between a pair's source and target, at least
    max_gap: int = 0  # ... and at most (0 = any)
    pairs_per_clip: int = 4
    checkpoint_every: int = 10
    num_to_keep: int = 2
    log_every: int = 1
    image_every: int = 0  # MLflow sample grids every N steps (0 = at the end only)
    preview_steps: int = 4  # denoising steps of those grids
    heldout_batches: int = 2  # batches of held-out pairs for the final held-out denoising loss
    max_failures: int = 2  # worker failures Ray Train retries from the last checkpoint
    prefetch: bool = True  # decode pairs in a DataLoader process ahead of the step (off on a CPU-only box)
    cache_mb: int = 512  # per reader: keep raw shard bytes in memory across epochs when they fit (0 = re-read)

    # settings that change where results go or how a run is watched, not the trajectory it follows
    NOT_SHAPING = ("out_dir", "checkpoint_dir", "checkpoint_every", "num_to_keep", "log_every", "image_every",
                   "preview_steps", "max_failures", "prefetch", "cache_mb")  # fmt: skip

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("train.resolution must be >= 8, train.batch_size and train.grad_accum >= 1")


@dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate`` section: held-out pairs, sampling settings and metrics (``pipelines/evaluate.py``)."""

    shards: InputPath = InputPath("data/shards")  # the extract stage's output (held-out clips only are read)
    models_dir: Path = Path("data/models")  # the training stages' output
    models: tuple[str, ...] = ("generalist", "reenact", "swap")  # folders under models_dir to evaluate
    steps: int = 10
    scheduler: Literal["ddim", "euler", "dpm"] = "ddim"
    cfg_scale: float = 2.0
    max_pairs: int = 8  # per kind: cross-identity pairs (reenact and swap each) and self-reconstruction pairs
    batch_size: int = 4
    fid_features: str = "standin"  # "standin" (embedded only, labelled so) or an Inception folder in weights.dir
    seed: int = 0
    out_dir: Path = Path("metrics")
