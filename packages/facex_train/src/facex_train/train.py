"""Training FaceX with Ray Train: the generalist and its specialists (paper §3.5, §4 "Training details").

:func:`fit` runs :func:`train_loop_per_worker` on ``num_workers`` Ray Train workers (a
``TorchTrainer``). Each worker holds the frozen backbone and the trainable part; DDP averages the
gradients of the trainable parameters only. Per optimizer step: ``grad_accum`` micro-batches,
gradient clipping, AdamW at a constant learning rate (diffusers' ``get_scheduler``, optional
warm-up), optional EMA (diffusers' ``EMAModel``), ``compute.mixed_precision`` autocast (bf16, or fp16 with
PyTorch's gradient scaler; on every device, the default ``no`` keeps fp32).

Checkpoints (every ``checkpoint_every`` steps and at the end, through ``ray.train.report``) are a
folder that is also a loadable FaceX model dir::

    config.json, facex_trainable.safetensors   the trainable part (EMA weights when EMA is on)
    train_state.safetensors                    raw weights, AdamW moments, EMA shadow
    train_state.json                           step, LR scheduler, AdamW param groups, loss history, fp16 loss scale
    rank-<r>.json, rank-<r>.rng.safetensors    per worker: data position and RNG states

Resume: Ray Train hands a restarted worker group (``FailureConfig`` retries) the latest checkpoint,
and a new run with the same ``RunConfig(name, storage_path)`` (a killed job started again) does the
same; the loop restores everything above, so it continues the identical trajectory. The run name is
derived from the job's settings and the package's code, so a changed job never resumes a stale run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
import unittest.mock
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from facex_data.paths import InputPath
from facex_model import features
from facex_model.model import RUN_RECORD, TRAIN_METRICS, WEIGHTS_NAME, FaceXConfig, FaceXModel, write_config
from facex_train.code import closure_digest
from facex_train.config import ComputeConfig, ModelConfig, TrainConfig
from facex_train.latent_cache import LatentCache
from facex_train.optim_state import flatten_optimizer, unflatten_optimizer
from facex_train.pairs import POSITION, DataPosition, PairConfig, pair_loader

STATE_WEIGHTS = "train_state.safetensors"
STATE_JSON = "train_state.json"
DEFAULT_TASK = {"generalist": "headswap", "reenact": "reenact", "swap": "swap", "headswap": "headswap"}


@dataclass
class TrainJob:
    """One training stage: the ``train`` and ``compute`` sections as they are, plus what the stage decides.

    ``model_config`` is the complete FaceXConfig (as json) of the model this stage trains: built by the stage from
    ``train.model``, the backbone and the shards' backend (the generalist), or the generalist's config with this
    stage's task (a specialist, which then starts from ``init_from``'s weights).
    """

    name: str  # generalist | reenact | swap | ... (also the default MLflow run name)
    task: str  # FORS assembly the stage trains with (generalist: headswap)
    steps: int
    model_config: dict[str, Any]
    train: TrainConfig = field(default_factory=TrainConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    init_from: str | None = None  # a trained model dir whose weights start this one (specialists: the generalist)
    holdout: list[str] = field(default_factory=list)  # held-out clips: never trained on
    model_dir: str = ""  # where the trained model goes (FaceXModel.save_pretrained layout)
    storage_path: str = ""  # Ray Train storage: checkpoints + resume state (local path or s3://, gs://)
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None

    @property
    def micro_batch(self) -> int:
        per_step = self.compute.num_workers * self.train.grad_accum
        if self.train.batch_size % per_step:
            raise ValueError(
                f"batch_size {self.train.batch_size} must be a multiple of num_workers x grad_accum = {per_step} "
                "(train.batch_size / compute.num_workers / train.grad_accum in the params file)"
            )
        return self.train.batch_size // per_step

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainJob:
        data = dict(data)
        train, compute = dict(data.pop("train")), data.pop("compute")
        model = dict(train.pop("model"))
        model["inp_channels"] = tuple(model["inp_channels"])
        clip = train["vision_encoder"]
        train.update(shards=InputPath(train["shards"]), backbone=Path(train["backbone"]),
                     vision_encoder=None if clip is None else Path(clip), out_dir=Path(train["out_dir"]),
                     model=ModelConfig(**model))  # fmt: skip
        return cls(**data, train=TrainConfig(**train), compute=ComputeConfig(**compute))

    def run_name(self) -> str:
        """Ray Train run name: stage + a hash of the settings that shape the trajectory, of the code, and of what the
        input folders hold (shards, backbone, vision encoder, the `init_from` model): a job whose paths stay the same
        while the backbone or the generalist under them was retrained gets a new name, instead of resuming (and
        returning) the old run's final checkpoint."""
        shaping = {k: v for k, v in self.to_json().items() if k not in _NOT_SHAPING}
        shaping["train"] = {k: v for k, v in shaping["train"].items() if k not in TrainConfig.NOT_SHAPING}
        digest = hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode())
        digest.update(closure_digest(TRAJECTORY_ROOTS).encode())
        inputs = (self.train.shards, self.train.backbone, self.train.vision_encoder, self.init_from)
        for path in inputs:
            digest.update(content_digest(path).encode())
        return f"{self.name}-{digest.hexdigest()[:12]}"


_NOT_SHAPING = {"model_dir", "storage_path", "tracking_uri", "mlflow_run_id"}
# files inside an input folder that are no part of its content: the runs' own records, which .dvcignore keeps out of
# DVC's hashes for the same reason (wall seconds, run names)
_NOT_CONTENT = frozenset({"runs.jsonl", RUN_RECORD})
_SAMPLE = 1 << 16  # bytes read from each end of each file


def content_digest(path: str | os.PathLike | None) -> str:
    """sha256 over what a file or folder holds: each file's relative path, size, and its first and last 64 KiB (the
    whole of a small file; the last tensors' bytes of a weight file, which any retraining changes): a few hundred MB
    for thousands of CelebV-HQ shards rather than their terabytes. A missing path or none digests as its name."""
    digest = hashlib.sha256(str(path).encode())
    if path is None or "://" in str(path) or not Path(path).exists():
        return digest.hexdigest()
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        if file.name in _NOT_CONTENT:
            continue
        size = file.stat().st_size
        name = file.name if file == root else file.relative_to(root).as_posix()
        digest.update(f"{name}:{size}".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(_SAMPLE))
            if size > _SAMPLE:
                handle.seek(max(_SAMPLE, size - _SAMPLE))
                digest.update(handle.read())
    return digest.hexdigest()


# the modules whose code shapes a training trajectory: everything this module imports, read from the code
# (the same closure the dvc.yaml test checks the training stages' deps against)
TRAJECTORY_ROOTS = ("facex_train.train",)


# --- the model -------------------------------------------------------------------------------------------------
def build_model(job: TrainJob) -> FaceXModel:
    """The job's model, built complete from its config (seeded), then the `init_from` weights (specialists)."""
    torch.manual_seed(job.train.seed)
    model = FaceXModel(FaceXConfig.from_json(job.model_config))
    if job.init_from:
        model.load_trainable(job.init_from)
    return model


# --- checkpoint files -------------------------------------------------------------------------------------------
def save_checkpoint(
    folder: Path,
    *,
    rank: int,
    model: FaceXModel,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    ema: Any,
    step: int,
    losses: list[float],
    position: DataPosition,
    generator: torch.Generator,
    resumes: list[int] | None = None,
    timings: list[list[float]] | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Write this worker's part of a checkpoint (rank 0: the shared state; every rank: its RNG + data position)."""
    folder.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        raw = {f"param.{i}": p.detach().cpu().contiguous() for i, p in enumerate(model.trainable_parameters())}
        tensors, groups = flatten_optimizer(optimizer.state_dict())
        raw.update(tensors)
        if ema is not None:
            raw.update({f"ema.{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)})
        save_file(raw, folder / STATE_WEIGHTS)
        meta = {
            "step": step,
            "losses": losses,
            "resumes": resumes or [],  # the steps this run was resumed at (killed job, retried worker)
            "timings": timings or [],  # rank 0, this attempt: [step seconds, data-loading seconds] per step
            "param_groups": groups,
            "lr_scheduler": lr_scheduler.state_dict(),
            "ema": {k: v for k, v in ema.state_dict().items() if k != "shadow_params"} if ema is not None else None,
            "grad_scaler": grad_scaler.state_dict() if grad_scaler is not None else {},  # {} unless fp16
        }
        (folder / STATE_JSON).write_text(json.dumps(meta, default=_json_default))
        # the checkpoint folder is also a model dir: EMA weights when EMA is on
        with _ema_weights(model, ema):
            model.save_pretrained(folder)
    rng = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, folder / f"rank-{rank}.rng.safetensors")
    state = {"position": position.to_json(), "python": _py_random_state(), "numpy": _np_random_state()}
    (folder / f"rank-{rank}.json").write_text(json.dumps(state))


def load_checkpoint(
    folder: Path,
    *,
    rank: int,
    model: FaceXModel,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    ema: Any,
    generator: torch.Generator,
    grad_scaler: torch.amp.GradScaler | None = None,
) -> tuple[int, list[float], DataPosition, list[int]]:
    """Restore what :func:`save_checkpoint` wrote: (step, loss history, this rank's data position, resume steps)."""
    meta = json.loads((folder / STATE_JSON).read_text())
    raw = load_file(folder / STATE_WEIGHTS)
    params = model.trainable_parameters()
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(raw[f"param.{i}"].to(p.device, p.dtype))
    optimizer.load_state_dict(unflatten_optimizer(raw, meta["param_groups"]))
    lr_scheduler.load_state_dict(meta["lr_scheduler"])
    if ema is not None:
        ema.load_state_dict({**meta["ema"], "shadow_params": [raw[f"ema.{i}"] for i in range(len(params))]})
    if grad_scaler is not None and meta.get("grad_scaler"):
        grad_scaler.load_state_dict(meta["grad_scaler"])
    rank_file = folder / f"rank-{rank}.json"
    if not rank_file.is_file():
        raise FileNotFoundError(
            f"{rank_file} is missing: the checkpoint was written by fewer workers than this run has "
            "(resume with the same compute.num_workers, or start a new run)"
        )
    state = json.loads(rank_file.read_text())
    rng = load_file(folder / f"rank-{rank}.rng.safetensors")
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["generator"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    random.setstate(_to_py_state(state["python"]))
    np.random.set_state(_to_np_state(state["numpy"]))
    return meta["step"], list(meta["losses"]), DataPosition(**state["position"]), list(meta.get("resumes", []))


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's json")


def _py_random_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _to_py_state(value: list) -> tuple:
    return (value[0], tuple(value[1]), value[2])


def _np_random_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _to_np_state(value: list) -> tuple:
    return (value[0], np.asarray(value[1], dtype=np.uint32), value[2], value[3], value[4])


@contextlib.contextmanager
def _ema_weights(model: FaceXModel, ema: Any):
    if ema is None:
        yield
        return
    params = model.trainable_parameters()
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


# --- the loop ---------------------------------------------------------------------------------------------------
def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function (also runs in-process with world size 1 when Ray is absent)."""
    import ray.train
    import ray.train.torch

    job = TrainJob.from_json(config)
    train = job.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(_cpus_per_worker())))

    model = build_model(job)
    if train.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.to(device)
    if device.type == "cuda":  # the GPU-side speed settings that change no result beyond float rounding
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        model.unet.to(memory_format=torch.channels_last)
    if train.compile_unet:
        model.unet.compile()
    model.train()
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=train.learning_rate, weight_decay=train.weight_decay,
                                  fused=device.type == "cuda")  # fmt: skip
    lr_scheduler = _constant_schedule(optimizer, train.warmup_steps)
    ema = _make_ema(params, train.ema_decay)
    precision = MixedPrecision(device, job.compute.mixed_precision)
    generator = torch.Generator().manual_seed(train.seed * 1009 + rank)

    step, losses, position, resumes, timings = 0, [], DataPosition(), [], []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            step, losses, position, resumes = load_checkpoint(
                Path(folder), rank=rank, model=model, optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema,
                generator=generator, grad_scaler=precision.scaler,
            )  # fmt: skip
        resumes.append(step)
        if rank == 0:
            print(
                f"{job.name}: resuming from checkpoint at step {step} (epoch {position.epoch}, pair {position.index})",
                flush=True,
            )

    # every trainable parameter takes part in every step (tests/facex_train), so DDP needs no unused-parameter search
    ddp = ray.train.torch.prepare_model(model)
    pairs = PairConfig(
        resolution=train.resolution, min_gap=train.min_gap, max_gap=train.max_gap, pairs_per_clip=train.pairs_per_clip,
        seed=train.seed, cache_mb=train.cache_mb, decoded_cache_mb=train.decoded_cache_mb,
    )  # fmt: skip
    loader = pair_loader(
        str(train.shards), pairs, job.micro_batch, set(job.holdout), rank, world, position, train.prefetch
    )
    batches = iter(loader)
    latents = LatentCache(model.vae, train.latent_cache_mb * 2**20) if train.latent_cache_mb > 0 else None
    tracker = _Tracker(job) if rank == 0 else None

    while step < job.steps:
        started = time.perf_counter()
        data_seconds = 0.0
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for micro in range(train.grad_accum):
            fetch = time.perf_counter()
            batch = next(batches)
            position = batch.pop(POSITION)
            if latents is not None and "target_latent" not in batch:  # keyed on the loader's CPU crops: no device sync
                batch["target_latent"] = latents.moments(batch["target_image"])
            batch = features.batch_to(batch, device)
            data_seconds += time.perf_counter() - fetch
            sync = contextlib.nullcontext() if micro == train.grad_accum - 1 or world == 1 else ddp.no_sync()
            with sync:
                with precision.autocast():
                    loss = ddp(batch, task=job.task, generator=generator, snr_gamma=train.snr_gamma or None,
                               logit_normal=train.logit_normal)
                precision.backward(loss / train.grad_accum)
            total += loss.detach() / train.grad_accum
        grad_norm, stepped = precision.step(optimizer, params, train.max_grad_norm)
        if stepped:  # an fp16 step with overflowed gradients is skipped (and the loss scale lowered)
            lr_scheduler.step()
            if ema is not None:
                ema.step(params)
        step += 1
        mean_loss = _mean_over_workers(total, world)
        losses.append(mean_loss)
        seconds = time.perf_counter() - started
        timings.append([seconds, data_seconds])
        metrics = {
            "loss": mean_loss,
            "grad_norm": grad_norm,
            "lr": lr_scheduler.get_last_lr()[0],
            "samples_per_s": train.batch_size / seconds,
            "data_share": data_seconds / seconds,
            "step": step,
        }
        if precision.scaler.is_enabled():
            metrics["loss_scale"] = precision.scaler.get_scale()
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"loss became {mean_loss} at step {step}: lower train.learning_rate")
        if tracker is not None and step % train.log_every == 0:
            tracker.log(metrics, step)
        if tracker is not None and train.image_every and step % train.image_every == 0:
            tracker.log_grid(model, batch, step)
        if step % train.checkpoint_every == 0 or step == job.steps:
            final = step == job.steps
            if final:
                metrics["heldout_loss"] = _heldout_loss(model, job, rank, world, device)
                if tracker is not None:
                    tracker.log({"heldout_loss": metrics["heldout_loss"]}, step)
                    tracker.log_grid(model, batch, step)
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(
                    Path(tmp), rank=rank, model=model, optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema,
                    step=step, losses=losses, position=position, generator=generator, resumes=resumes,
                    timings=timings, grad_scaler=precision.scaler,
                )  # fmt: skip
                ray.train.report(
                    metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                    checkpoint_dir_name=f"step-{step:08d}",
                )  # fmt: skip
        # no ray.train.report between checkpoints: Ray Train v2 blocks each report until its controller polls (about
        # once a second), which capped training at one step per poll; per-step metrics go to MLflow directly


def _cpus_per_worker() -> float:
    return float(os.environ.get("OMP_NUM_THREADS", "1") or 1)


def _constant_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int):
    from diffusers.optimization import get_scheduler

    name = "constant_with_warmup" if warmup_steps > 0 else "constant"
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps)


def _make_ema(params: list[torch.nn.Parameter], decay: float):
    if decay <= 0:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(params, decay=decay)


class MixedPrecision:
    """``compute.mixed_precision`` on one device: the forward passes' autocast, and for fp16 PyTorch's gradient
    scaler. fp16 gradients below ~6e-8 flush to zero (bf16 has fp32's range and needs none): the scaler multiplies
    the loss before backward, divides the gradients before clipping, skips a step whose gradients overflowed and
    lowers the scale, raising it again after a run of good steps. Autocast applies on every device; on a CPU without
    bf16/fp16 arithmetic it is several times slower than fp32 (the default, ``no``)."""

    def __init__(self, device: torch.device, mode: str) -> None:
        self.device_type = device.type
        self.dtype = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
        self.scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], max_norm: float):
        """Unscale, clip and step: (the gradients' norm before clipping, whether the optimizer stepped)."""
        self.scaler.unscale_(optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not self.scaler.is_enabled():
            optimizer.step()
            return grad_norm, True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)  # skipped where the unscaled gradients hold inf/nan
        self.scaler.update()
        return grad_norm, self.scaler.get_scale() >= scale


def _mean_over_workers(value: torch.Tensor, world: int) -> float:
    if world > 1 and torch.distributed.is_initialized():
        value = value.clone()
        torch.distributed.all_reduce(value)
        value /= world
    return float(value)


@torch.no_grad()
def _heldout_loss(model: FaceXModel, job: TrainJob, rank: int, world: int, device: torch.device) -> float:
    """Denoising loss on held-out clips with fixed noise and uniform timesteps (whatever `timestep_sampling` trained
    on): comparable across runs and models (lower is better)."""
    if not job.holdout or job.train.heldout_batches <= 0:
        return float("nan")
    from facex_train.pairs import PairStream

    model.eval()
    train = job.train
    stream = PairStream(
        str(train.shards), PairConfig(resolution=train.resolution, min_gap=train.min_gap, max_gap=train.max_gap,
                                      pairs_per_clip=train.pairs_per_clip, seed=1234),
        holdout=frozenset(), include=frozenset(job.holdout),
    )  # fmt: skip
    generator = torch.Generator().manual_seed(1234)
    total, count = 0.0, 0
    items = iter(stream)
    for _ in range(train.heldout_batches):
        batch = features.collate_sides([{k: v for k, v in next(items).items() if k != POSITION} for _ in range(2)])
        drop = torch.zeros(2, dtype=torch.bool)
        loss = model.training_loss(features.batch_to(batch, device), job.task, generator=generator, drop_mask=drop)
        total += float(loss)
        count += 1
    model.train()
    return total / count


class _Tracker:
    """Rank 0's MLflow logging: metrics per step and sample grids (source | target | I_R | output)."""

    def __init__(self, job: TrainJob) -> None:
        self.job = job
        self.client = None
        if job.tracking_uri and job.mlflow_run_id:
            import mlflow

            self.client = mlflow.MlflowClient(tracking_uri=job.tracking_uri)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.client is None:
            return
        import mlflow.entities

        now = int(time.time() * 1000)
        entries = [mlflow.entities.Metric(k, float(v), now, step) for k, v in metrics.items() if k != "step"]
        self.client.log_batch(self.job.mlflow_run_id, metrics=entries)

    def log_grid(self, model: FaceXModel, batch: dict[str, torch.Tensor], step: int) -> None:
        if self.client is None:
            return
        grid = sample_grid(model, batch, self.job.task, steps=self.job.train.preview_steps, seed=self.job.train.seed)
        self.client.log_image(self.job.mlflow_run_id, grid, artifact_file=f"samples/step-{step:06d}.png")


@torch.no_grad()
def sample_grid(model: FaceXModel, batch: dict[str, torch.Tensor], task: str, steps: int = 4, seed: int = 0):
    """A PIL grid, one row per sample: source | target | I_R | generated output (seeded DDIM, `steps` steps)."""
    from PIL import Image

    from facex_model.denoising import denoise

    was_training = model.training
    model.eval()
    rows = min(4, batch["target_image"].shape[0])
    small = {k: v[:rows] for k, v in batch.items()}
    reference, _hole = model.assemble_reference(small, task)
    output, _ = denoise(model, small, task, steps=steps, cfg_scale=1.0, generator=torch.Generator().manual_seed(seed))
    model.train(was_training)
    columns = [small["source_image"], small["target_image"], reference, output]
    tiles = torch.cat([torch.cat(list(c.float().cpu()), dim=1) for c in columns], dim=2)  # (3, rows*H, 4*W)
    return Image.fromarray(features.to_uint8(tiles))


# --- the driver -------------------------------------------------------------------------------------------------
POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
# seconds between Ray Train's polls of its workers in a local session: a 2-worker run whose loop only reports took
# 13.3-15.2 s against 17.4-18.6 s at Ray's 2 s (three alternating pairs on 2 cores; README "Where a training stage's
# time goes")
LOCAL_POLL_INTERVAL_S = "0.5"


@contextlib.contextmanager
def ray_session(num_workers: int):
    """Ray for a training stage. ``ray job submit`` sets ``RAY_ADDRESS``: connect to that cluster. Otherwise start a
    new local Ray with a CPU per worker at least (every core of the machine), even where a ``ray start`` cluster
    runs on the same machine (a plain ``ray.init()`` would join that one, and refuse ``num_cpus``), and shut it down
    afterwards; inside a session that is already running (a test, a notebook), use it as it is.

    The local Ray tells its own processes its address (``RAY_ADDRESS`` in the job's environment, on a GCS port
    picked here) and runs its dashboard on 127.0.0.1 only. Ray Train's placement-group cleaner asks the state API
    every second whether the run's controller lives, and finds the cluster to ask the way ``ray.init()`` does:
    without the address it asked the machine's latest ``ray start`` cluster, did not find the controller there and
    removed this run's placement group (its workers died mid-training), and without the dashboard it logged a
    warning each second.

    In a local session Ray Train's controller polls its workers every :data:`LOCAL_POLL_INTERVAL_S` (Ray's
    ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 2 s by default; a value already in the environment wins): the worker group's
    start, each checkpoint's report and the run's end each wait for the next poll. Yields ray.init's context, or None
    inside a running session."""
    import socket

    import ray

    if ray.is_initialized():
        yield None
        return
    local = not os.environ.get("RAY_ADDRESS")
    if not local:
        context = ray.init(log_to_driver=True)
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with unittest.mock.patch.dict(os.environ, RAY_GCS_SERVER_PORT=str(port)):
            context = ray.init(
                address="local", num_cpus=max(num_workers, os.cpu_count() or 1), include_dashboard=True,
                dashboard_host="127.0.0.1", runtime_env={"env_vars": {"RAY_ADDRESS": f"127.0.0.1:{port}"}},
            )  # fmt: skip
    # Ray Train hands this variable from the driver's environment to its controller and workers when a run starts
    poll = {POLL_INTERVAL_ENV: os.environ.get(POLL_INTERVAL_ENV, LOCAL_POLL_INTERVAL_S)} if local else {}
    try:
        with unittest.mock.patch.dict(os.environ, poll):
            yield context
    finally:
        ray.shutdown()


def training_clips(job: TrainJob) -> dict[str, Any]:
    """Which clips the model learned from, for the model folder: the shards' written clips less the held-out ones,
    plus whatever the `init_from` model (a specialist's generalist) recorded. `facex benchmark` reads it to tell a
    held-out score from one on training clips."""
    from facex_data.layout import written_clips

    trained = set(written_clips(Path(job.train.shards))) - set(job.holdout)
    if job.init_from and (Path(job.init_from) / TRAIN_METRICS).is_file():
        parent = json.loads((Path(job.init_from) / TRAIN_METRICS).read_text()).get("clips", {})
        trained |= set(parent.get("trained_on", []))
    held_out = sorted(set(job.holdout) - trained)
    return {"trained_on": sorted(trained), "held_out": held_out}


def fit(job: TrainJob) -> dict[str, Any]:
    """Train with Ray Train (``ray.init`` must have run: a local cluster, or ``RAY_ADDRESS`` for a running one).

    Returns the last reported metrics; writes the final model to ``job.model_dir``.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    job.micro_batch  # noqa: B018 - validates batch_size against workers x accumulation before any work
    run_name = job.run_name()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=job.to_json(),
        scaling_config=ScalingConfig(num_workers=job.compute.num_workers, use_gpu=job.compute.use_gpu),
        run_config=RunConfig(
            name=run_name,
            storage_path=job.storage_path,
            failure_config=FailureConfig(max_failures=job.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=job.train.num_to_keep),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training {job.name} finished without a checkpoint (see the Ray logs above)")
    out = Path(job.model_dir)
    with result.checkpoint.as_directory() as folder:
        folder = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / WEIGHTS_NAME, out / WEIGHTS_NAME)
        # the backbone named relative to the model folder: the same bytes in every checkout (DVC's hashes)
        write_config(out, FaceXModel.read_config(folder), relative_paths=True)
        state = json.loads((folder / STATE_JSON).read_text())
    metrics = dict(result.metrics or {})
    results = {
        "name": job.name,
        "task": job.task,
        "steps": state["step"],
        "losses": state["losses"],
        "heldout_loss": metrics.get("heldout_loss"),
        "clips": training_clips(job),
    }
    record = {  # this run's own: wall times and identity, apart from the results (RUN_RECORD is .dvcignore'd)
        "run_name": run_name,
        "resumed_at": state.get("resumes", []),
        "timings": state.get("timings", []),  # rank 0, the last attempt: [step seconds, data seconds] per step
    }
    (out / TRAIN_METRICS).write_text(json.dumps(results, indent=1) + "\n")
    (out / RUN_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    summary = {**results, **record}
    return summary
