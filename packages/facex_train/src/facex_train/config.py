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
class AutoencoderConfig:
    """``pretrain.vae``: the small AutoencoderKL (SD's class; 2^(blocks-1) downsampling) and how it is trained."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16
    steps: int = 1200
    batch_size: int = 16
    learning_rate: float = 1.0e-3
    kl_weight: float = 1.0e-6


@dataclass(frozen=True)
class DenoiserConfig:
    """``pretrain.unet``: the small UNet2DConditionModel (SD's class) trained as a latent denoiser whose cross-attention
    reads a coarse description of the image (facex_train.pretrain.CoarseImageTokens), as SD's reads a caption."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    cross_attention_dim: int = 32
    norm_num_groups: int = 16
    steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 1.0e-3
    snr_gamma: float = 5.0  # min-SNR weighting (diffusers.training_utils.compute_snr); 0 = plain MSE
    condition_grid: int = 8  # cross-attention reads the image pooled to this grid of colours (0: unconditional)
    condition_drop: float = 0.2  # share of steps with the empty (zero) context, as SD drops its captions


@dataclass(frozen=True)
class PretrainConfig:
    """The ``pretrain`` section: the embedded profile's backbone, pretrained on the training split's face crops
    (the real profile uses SD-1.5 and sets ``enabled: false``)."""

    enabled: bool = True
    shards: InputPath = InputPath("data/shards")  # the extract stage's output (training clips only are read)
    out_dir: Path = Path("data/backbone")  # SD-1.5's folder layout: unet/ vae/ scheduler/ clip_vision/
    resolution: int = 64
    seed: int = 0
    vae: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    unet: DenoiserConfig = field(default_factory=DenoiserConfig)
    checkpoint_dir: Path = Path(".work/pretrain")  # each phase's state (outside out_dir, which DVC deletes first)
    checkpoint_every: int = 50  # steps between a phase's checkpoints (0: none; a killed run then starts again)

    # settings that change where results go, not the backbone that comes out
    NOT_SHAPING = ("out_dir", "checkpoint_dir", "checkpoint_every")


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
    frc_positional: bool = True  # FRC queries carry a 2-D position code, to read f_Inp's grid at the matching place
    train_vision_encoder: bool = False  # the paper finetunes CLIP's vision tower with FaceX
    use_frc: bool = True  # ablations (paper Table 3): False removes that component
    region_assembler: bool = True
    representation_assembler: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section: every training stage (the generalist and each specialist) reads it."""

    shards: InputPath = InputPath("data/shards")  # the extract stage's output
    backbone: Path = Path("data/backbone")  # the frozen SD-architecture folder (unet/ vae/ scheduler/): the pretrain
    # stage's output in the embedded profile, a Stable Diffusion 1.5 diffusers folder in the real one
    vision_encoder: Path | None = None  # a transformers CLIP vision folder; None: <backbone>/clip_vision
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
    compile_unet: bool = False  # torch.compile the frozen U-Net (GPU runs: minutes of compile for faster steps)
    snr_gamma: float = 0.0  # 0 = plain MSE; 5.0 = min-SNR weighting
    timestep_sampling: Literal["uniform", "logit_normal"] = "uniform"  # logit_normal: t / T = sigmoid(N(mean, std))
    logit_mean: float = 0.0  # > 0 trains the noisy steps (where the conditions decide the picture) more often
    logit_std: float = 1.0
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
    decoded_cache_mb: int = 256  # per reader: and the decoded inputs of those kept frames (0 = decode every time)
    latent_cache_mb: int = 256  # per worker: the frozen VAE's posterior of each target crop, encoded once (0 = every
    # step); shards with precomputed latents need none (facex_train.latent_cache)

    # settings that change where results go or how a run is watched, not the trajectory it follows
    NOT_SHAPING = ("out_dir", "checkpoint_dir", "checkpoint_every", "num_to_keep", "log_every", "image_every",
                   "preview_steps", "max_failures", "prefetch", "cache_mb",
                   "decoded_cache_mb")  # fmt: skip

    @property
    def logit_normal(self) -> tuple[float, float] | None:
        """(mean, std) of the logit-normal timesteps, or None for uniform ones (`FaceXModel.training_loss`)."""
        return (self.logit_mean, self.logit_std) if self.timestep_sampling == "logit_normal" else None

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("train.resolution must be >= 8, train.batch_size and train.grad_accum >= 1")
        if self.logit_std <= 0:
            raise ValueError(f"train.logit_std must be > 0, got {self.logit_std}")


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


@dataclass(frozen=True)
class AblationsConfig:
    """The ``ablations`` section (paper Table 3, Fig 11 in miniature): one generalist per row, every row trained with
    the same ``train`` settings (a smaller budget than the demo's), scored on the same held-out pairs."""

    train: TrainConfig = field(default_factory=TrainConfig)  # out_dir: where each row's model goes
    # row -> what it changes: FaceXConfig ablation switches (use_frc, region_assembler, representation_assembler)
    # or random_backbone (the same architecture as train.backbone, re-initialised: what pretraining buys)
    rows: dict[str, dict[str, bool]] = field(default_factory=lambda: {"full": {}})
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)  # shards, pairs and sampling of the scoring
    out_dir: Path = Path("metrics/ablations")  # <row>.json per row; the table stage writes ablations.json beside it

    SWITCHES = ("use_frc", "region_assembler", "representation_assembler", "random_backbone")

    def __post_init__(self) -> None:
        for row, changes in self.rows.items():
            unknown = sorted(set(changes) - set(self.SWITCHES))
            if unknown:
                known = ", ".join(self.SWITCHES)
                raise ValueError(f"ablations.rows.{row}: unknown {', '.join(unknown)}; known: {known}")


@dataclass(frozen=True)
class BenchmarkRunConfig:
    """One entry of ``benchmark.runs``: a paper protocol (``facex benchmark list``) on one model, with the options
    of ``facex benchmark run``."""

    protocol: str
    roots: dict[str, Path]  # dataset name (the protocol's datasets: ffpp, voxceleb1, ffhq, clips) -> its folder
    model: str  # a model folder (the stage's dependency), or models:/NAME@ALIAS
    max_pairs: int | None = None  # None: the protocol's own count
    seed: int = 0
    steps: int = 20
    cfg_scale: float = 3.0
    scheduler: str = "ddim"
    identity_model: str = "backend"  # backend, dlib, or an iresnet .pth/.onnx under the weights dir
    fid_features: str = "inception"  # a folder under the weights dir, or standin
    watermark: bool = True


@dataclass(frozen=True)
class BenchmarkConfig:
    """The ``benchmark`` section: `dvc repro benchmark@<run>` for each entry of ``runs`` (none by default: they need
    your copies of the datasets), results in ``out_dir/<protocol>/<run>/`` (the run named after its model)."""

    out_dir: Path = Path("benchmarks")
    runs: dict[str, BenchmarkRunConfig] = field(default_factory=dict)
