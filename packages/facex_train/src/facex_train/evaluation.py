"""The evaluation protocol (paper §4.1, Tables 1-3) on held-out clips, for one FaceXModel at a time.

- Cross-identity pairs: the source frame from one held-out clip, the target (driving) frame from a held-out clip of
  another person. Each pair is generated as reenactment and as face swap; the output is re-detected and measured:
  identity against the source *and* the target (and how often it is closer to the source), pose / expression /
  gaze L2 against the target, FID against the real targets. An output without a detectable face is a miss: it
  counts in the detection rate and adds no motion error (nothing can be read off it).
- Self-reconstruction pairs: source and target are two frames of one held-out clip, generated under each task's
  assembly (headswap, reenact, swap); the target is the ground truth for SSIM / PSNR / RMSE.
- Conditional denoising gain: on the self-reconstruction pairs, the U-Net's noise-prediction MSE with the pair's
  true f_SD against the learned null f_SD and against another pair's f_SD, at the same fixed noises and
  timesteps. It tells whether the conditions carry information while samples are still blobs.
- :func:`evaluate_reference` scores the region assembler's inpainting reference I_R as if it were the output: the
  baseline row a model must beat.

Only clips :func:`facex_data.layout.holdout_clips` holds out are read, so no training clip is ever evaluated; who a
clip shows is :func:`facex_data.layout.person_of`.
"""

from __future__ import annotations

import functools
import json
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from facex_data.layout import holdout_clips, person_of, shard_backend, shards_of_clips, written_clips
from facex_data.shards import decode_arrays, iter_samples
from facex_model.denoising import denoise, initial_noise
from facex_model.features import batch_to, collate_sides, sample_inputs, tdmm_parts, to_uint8
from facex_model.model import FaceXModel
from facex_train.config import EvaluateConfig
from facex_train.metrics import FaceMeasurer, id_similarity, l2_distance, reconstruction_metrics, to_unit

CROSS_TASKS = ("reenact", "swap")
SELF = "self_reconstruction"
GRID_ROWS = 8
GRID_TILE = 128  # px per grid cell (tiny-model outputs are 64 px)
DECODED_CACHE = 256  # decoded frames kept in memory (the rest stay JPEG/npy bytes)
FRAMES_PER_CLIP = 16  # held-out frames kept per clip (evenly spread) to draw pairs from


@dataclass(frozen=True)
class Pair:
    source: str  # shard sample keys, <clip_id>/<frame:06d>
    target: str


class HeldOutFrames:
    """The frames of the held-out clips in a shard folder, kept as raw bytes and decoded when a pair needs them."""

    def __init__(self, shard_dir: Path, holdout_every: int) -> None:
        self.shard_dir = Path(shard_dir)
        self.backend = shard_backend(self.shard_dir)
        clips = written_clips(self.shard_dir)
        self.held_out = holdout_clips(clips, holdout_every)
        if not self.held_out:
            raise ValueError(
                f"split.holdout_every = {holdout_every} holds out none of the {len(clips)} clips in {self.shard_dir}: "
                "evaluation needs held-out clips (set split.holdout_every >= 2 and retrain)"
            )
        self.training_clips = set(clips) - self.held_out
        self._raw: dict[str, dict] = {}
        self._decoded: OrderedDict[str, dict] = OrderedDict()
        self.frames: dict[str, list[str]] = {}
        self.person: dict[str, str] = {}
        for url in shards_of_clips(self.shard_dir, self.held_out):
            for raw in iter_samples(url):
                meta = json.loads(raw["json"])
                clip = meta.get("clip_id")
                if clip not in self.held_out:
                    continue
                self._raw[raw["__key__"]] = raw
                self.frames.setdefault(clip, []).append(raw["__key__"])
                self.person[clip] = person_of(clip, meta)
            self._keep_spread_frames()

    def _keep_spread_frames(self) -> None:
        """At most FRAMES_PER_CLIP frames per clip, evenly spread, so memory stays bounded on long clips."""
        for clip, keys in self.frames.items():
            keys.sort()
            if len(keys) > FRAMES_PER_CLIP:
                kept = [keys[i] for i in np.linspace(0, len(keys) - 1, FRAMES_PER_CLIP).round().astype(int)]
                for key in set(keys) - set(kept):
                    del self._raw[key]
                self.frames[clip] = kept

    def sample(self, key: str) -> dict:
        """The decoded sample (``facex_data.shards.decode_arrays``); the most recent DECODED_CACHE are kept."""
        if key not in self._decoded:
            if len(self._decoded) >= DECODED_CACHE:
                self._decoded.popitem(last=False)
            self._decoded[key] = decode_arrays(self._raw[key])
        self._decoded.move_to_end(key)
        return self._decoded[key]

    def first_meta(self) -> dict:
        """The json of a held-out sample: the crop size and the extractor parts (detector, ...) the shards were made
        with, so outputs are measured the same way."""
        return json.loads(self._raw[next(iter(self._raw))]["json"])

    def cross_identity_pairs(self, max_pairs: int, seed: int) -> list[Pair]:
        """Up to `max_pairs` (source, target) frames from clips of different people, seeded."""
        rng = random.Random(seed)
        clips = sorted(self.frames)
        candidates = [(a, b) for a in clips for b in clips if self.person[a] != self.person[b]]
        if not candidates:
            people = sorted(set(self.person.values()))
            raise ValueError(
                f"the held-out clips of {self.shard_dir} show {len(people)} person(s) ({', '.join(people)}): "
                "cross-identity pairs need two; lower split.holdout_every or add clips of more people"
            )
        return _draw_pairs(rng, candidates, self.frames, max_pairs, same_clip=False)

    def self_pairs(self, max_pairs: int, seed: int) -> list[Pair]:
        """Up to `max_pairs` (source, target) = two different frames of one held-out clip, seeded."""
        rng = random.Random(seed + 1)
        clips = [c for c in sorted(self.frames) if len(self.frames[c]) >= 2]
        if not clips:
            raise ValueError(
                f"no held-out clip in {self.shard_dir} has two frames: self-reconstruction needs them "
                "(raise extract.sampling.frames_per_clip)"
            )
        return _draw_pairs(rng, [(c, c) for c in clips], self.frames, max_pairs, same_clip=True)


def _draw_pairs(
    rng: random.Random,
    clip_pairs: list[tuple[str, str]],
    frames: Mapping[str, list[str]],
    max_pairs: int,
    same_clip: bool,
) -> list[Pair]:
    """Distinct frame pairs, cycling over the shuffled clip pairs so every clip pair is used before any repeats."""
    pairs: list[Pair] = []
    seen: set[Pair] = set()
    order = list(clip_pairs)
    for attempt in range(max_pairs * 20):
        if attempt % len(order) == 0:
            rng.shuffle(order)
        a, b = order[attempt % len(order)]
        pair = Pair(*rng.sample(frames[a], 2)) if same_clip else Pair(rng.choice(frames[a]), rng.choice(frames[b]))
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
            if len(pairs) == max_pairs:
                break
    return pairs


SELF_TASKS = ("headswap", "reenact", "swap")  # self-reconstruction under each assembly: each specialist's own measure
GAIN_TIMESTEPS = (100, 300, 500, 700, 900)  # the noise levels each pair is scored at for the conditional gain


@dataclass
class ModelReport:
    metrics: dict[str, Any]
    rows: dict[str, list[dict[str, Any]]]  # per kind: one row per pair (DVC plots)
    grids: dict[str, np.ndarray] = field(default_factory=dict)  # per kind: source | target | I_R | output rows


def headline(task: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The one number the register stage compares across versions of a model (higher is better): held-out
    self-reconstruction PSNR under the model's own task's assembly. It moves at the embedded profile's scale, where
    too few 64-px outputs hold a detectable face for the cross-identity scores to separate models."""
    return {"name": f"{SELF}.{task}.psnr", "value": metrics[SELF][task]["psnr"], "higher_is_better": True}


def _batches(pairs: list[Pair], size: int):
    for start in range(0, len(pairs), size):
        yield start, pairs[start : start + size]


def pair_batch(frames: HeldOutFrames, pairs: list[Pair], resolution: int, device: torch.device):
    items = [
        {"source": sample_inputs(frames.sample(p.source), resolution),
         "target": sample_inputs(frames.sample(p.target), resolution)}
        for p in pairs
    ]  # fmt: skip
    return batch_to(collate_sides(items), device)


def generate(
    model: FaceXModel,
    batch: dict[str, torch.Tensor],
    task: str,
    settings: EvaluateConfig,
    first_index: int,
) -> torch.Tensor:
    """Outputs (B, 3, R, R) in [-1, 1] for a batch of pairs; pair i's noise comes from seed + i (same across tasks)."""
    res = batch["target_image"].shape[-1]
    noise = torch.cat([initial_noise(model, 1, res, res, torch.Generator().manual_seed(settings.seed + first_index + i))
                       for i in range(batch["target_image"].shape[0])])  # fmt: skip
    images, _ = denoise(
        model, batch, task, scheduler=settings.scheduler, steps=settings.steps, cfg_scale=settings.cfg_scale,
        generator=torch.Generator().manual_seed(settings.seed), latents=noise,
    )  # fmt: skip
    return images.cpu()


def inpainting_reference(batch: dict[str, torch.Tensor], task: str) -> torch.Tensor:
    """I_R of the task's region assembler (no parameters: the same for every model)."""
    from facex_model.fors import RegionAssembler, get_task

    spec = get_task(task)
    images = {s: batch[f"{s}_image"] for s in ("source", "target")}
    parsings = {s: batch[f"{s}_parsing"] for s in ("source", "target")}
    return RegionAssembler()(images, parsings, spec)[0].cpu()


def _grid(rows: list[tuple[torch.Tensor, ...]]) -> np.ndarray:
    """Rows of images in [-1, 1] (source, target, I_R, output) -> one uint8 HWC image, GRID_TILE px per cell."""
    cells = [
        torch.cat([F.interpolate(im[None].float(), size=(GRID_TILE, GRID_TILE), mode="nearest")[0] for im in row], 2)
        for row in rows
    ]
    return to_uint8(torch.cat(cells, 1))


def _mean(values: list[float | None]) -> float | None:
    """Mean of the values that exist (None where there are none)."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def cross_identity(
    frames: HeldOutFrames,
    pairs: list[Pair],
    task: str,
    produce: Callable[[dict[str, torch.Tensor], int], torch.Tensor],
    measurer: FaceMeasurer,
    fid: tuple[str, Any],
    settings: EvaluateConfig,
    resolution: int,
    device: torch.device,
    on_pairs: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], np.ndarray]:
    """One task on the cross-identity pairs: (section of metrics.json, one row per pair, grid)."""
    fid_name, fid_metric = fid
    fid_metric.reset()
    rows: list[dict[str, Any]] = []
    grid_rows: list[tuple[torch.Tensor, ...]] = []
    for start, chunk in _batches(pairs, settings.batch_size):
        batch = pair_batch(frames, chunk, resolution, device)
        outputs = produce(batch, start)
        targets = [frames.sample(p.target) for p in chunk]
        sources = [frames.sample(p.source) for p in chunk]
        measured = measurer.measure(outputs, [t["lmk"] for t in targets])
        target_parts = [tdmm_parts(t["tdmm"], frames.backend) for t in targets]
        to_source = id_similarity(measured.identity, torch.stack([torch.from_numpy(s["id"]) for s in sources]))
        to_target = id_similarity(measured.identity, torch.stack([torch.from_numpy(t["id"]) for t in targets]))
        pose = l2_distance(measured.pose, torch.stack([p["angles"] for p in target_parts]))
        expression = l2_distance(measured.expression, torch.stack([p["expression"] for p in target_parts]))
        gaze = l2_distance(measured.gaze, torch.stack([torch.from_numpy(t["gaze"]) for t in targets]))
        fid_metric.update(to_unit(batch["target_image"].cpu()), real=True)
        fid_metric.update(to_unit(outputs), real=False)
        reference = inpainting_reference(batch, task)
        for i, pair in enumerate(chunk):
            found = bool(measured.detected[i])
            rows.append({
                "pair": start + i, "source": pair.source, "target": pair.target, "face_detected": int(found),
                # a miss has no pose, expression or gaze to compare: they stay empty instead of being read elsewhere
                "pose_l2": float(pose[i]) if found else None,
                "expression_l2": float(expression[i]) if found else None,
                "gaze_l2": float(gaze[i]) if found else None,
                "id_to_target": float(to_target[i]),
                "source_closer": int(to_source[i] > to_target[i]),
                "id_similarity": float(to_source[i]),  # last: DVC plots' default y
            })  # fmt: skip
            if len(grid_rows) < GRID_ROWS:
                grid_rows.append((batch["source_image"][i].cpu(), batch["target_image"][i].cpu(), reference[i],
                                  outputs[i]))  # fmt: skip
        if on_pairs is not None:
            on_pairs(len(chunk))
    section: dict[str, Any] = {
        key: _mean([r[key] for r in rows])
        for key in ("id_similarity", "id_to_target", "source_closer", "pose_l2", "expression_l2", "gaze_l2")
    }
    section["source_closer_rate"] = section.pop("source_closer")
    section["face_detection_rate"] = _mean([r["face_detected"] for r in rows])
    section[fid_name] = float(fid_metric.compute())
    section["score"] = cross_score(task, section)
    section["pairs"] = len(rows)
    return section, rows, _grid(grid_rows)


def cross_score(task: str, section: Mapping[str, Any]) -> float:
    """detection rate x the rate at which the output is closer to the source than to the target (x exp(-pose L2)
    for reenactment): an output with no findable face, a copy of the target and noise all score 0."""
    score = section["face_detection_rate"] * section["source_closer_rate"]
    if task == "reenact":
        score *= float(np.exp(-section["pose_l2"])) if section["pose_l2"] is not None else 0.0
    return float(score)


def self_reconstruction(
    frames: HeldOutFrames,
    pairs: list[Pair],
    task: str,
    produce: Callable[[dict[str, torch.Tensor], int], torch.Tensor],
    settings: EvaluateConfig,
    resolution: int,
    device: torch.device,
    on_pairs: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], np.ndarray]:
    """Two frames of one clip under a task's assembly; the target is the ground truth (SSIM, PSNR, RMSE)."""
    rows: list[dict[str, Any]] = []
    grid_rows: list[tuple[torch.Tensor, ...]] = []
    for start, chunk in _batches(pairs, settings.batch_size):
        batch = pair_batch(frames, chunk, resolution, device)
        outputs = produce(batch, start)
        values = reconstruction_metrics(outputs, batch["target_image"].cpu())
        values = {key: values[key] for key in ("ssim", "rmse", "psnr")}  # psnr last: DVC plots' default y
        reference = inpainting_reference(batch, task)
        for i, pair in enumerate(chunk):
            rows.append({"pair": start + i, "source": pair.source, "target": pair.target}
                        | {key: float(v[i]) for key, v in values.items()})  # fmt: skip
            if len(grid_rows) < GRID_ROWS:
                grid_rows.append((batch["source_image"][i].cpu(), batch["target_image"][i].cpu(), reference[i],
                                  outputs[i]))  # fmt: skip
        if on_pairs is not None:
            on_pairs(len(chunk))
    section = {key: _mean([r[key] for r in rows]) for key in ("ssim", "psnr", "rmse")} | {"pairs": len(rows)}
    return section, rows, _grid(grid_rows)


@torch.no_grad()
def conditional_gain(
    model: FaceXModel, batch: dict[str, torch.Tensor], task: str, seed: int = 0
) -> dict[str, Any]:
    """Noise-prediction MSE on held-out pairs with the pair's own f_SD, the learned null f_SD and the next pair's
    f_SD, at the same latents, noises and timesteps (each pair at every GAIN_TIMESTEPS).

    At each noise level t: gain(t) = (MSE_null - MSE_own) / MSE_null, how much the conditions help the denoiser, and
    mismatch_gain(t) = (MSE_mismatched - MSE_own) / MSE_mismatched, how much of that is specific to the pair.
    `gain` and `mismatch_gain` average them over the levels, each level counting alike (the epsilon MSE of low
    noise levels is hundreds of times that of high ones, where the conditions decide the picture); `gain_pooled` is
    the ratio of the MSEs summed over all levels. `gain_se` is the standard error of `gain` over the pairs."""
    n = batch["target_image"].shape[0]
    if n < 2:
        raise ValueError("the conditional gain needs at least two pairs (one's conditions stand in for another's)")
    generator = torch.Generator().manual_seed(seed)
    latents = model.encode_latents(batch["target_image"], generator if batch["target_image"].is_cpu else None)
    f_sd = model.encode_conditions(batch, task)
    conditions = {"own": f_sd, "null": model.null_conditions(n).to(f_sd.dtype), "mismatched": f_sd.roll(1, dims=0)}
    mse = {name: torch.zeros(len(GAIN_TIMESTEPS), n) for name in conditions}  # (level, pair)
    for k, t in enumerate(GAIN_TIMESTEPS):
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        timesteps = torch.full((n,), t, dtype=torch.long, device=latents.device)
        noisy = model.scheduler.add_noise(latents, noise, timesteps)
        for name, cond in conditions.items():
            pred = model.predict_noise(noisy, timesteps, cond)
            mse[name][k] = F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3)).cpu()
    level = {name: v.mean(1) for name, v in mse.items()}  # (level,)
    gain_t = (level["null"] - level["own"]) / level["null"]
    mismatch_t = (level["mismatched"] - level["own"]) / level["mismatched"]
    per_pair = ((mse["null"] - mse["own"]) / level["null"].unsqueeze(1)).mean(0)  # (pair,): its mean gain over levels
    pooled = {name: float(v.sum()) for name, v in level.items()}
    return {
        "gain": float(gain_t.mean()), "gain_se": float(per_pair.std() / np.sqrt(n)),
        "mismatch_gain": float(mismatch_t.mean()), "gain_pooled": (pooled["null"] - pooled["own"]) / pooled["null"],
        "by_timestep": {str(t): {"gain": float(g), "mismatch_gain": float(m)}
                        for t, g, m in zip(GAIN_TIMESTEPS, gain_t, mismatch_t)},
        "mse_own": float(level["own"].mean()), "mse_null": float(level["null"].mean()),
        "mse_mismatched": float(level["mismatched"].mean()), "pairs": n,
    }  # fmt: skip


def score_outputs(
    frames: HeldOutFrames,
    cross_pairs: list[Pair],
    self_pairs: list[Pair],
    produce_for: Callable[[str], Callable[[dict[str, torch.Tensor], int], torch.Tensor]],
    measurer: FaceMeasurer,
    fid: tuple[str, Any],
    settings: EvaluateConfig,
    resolution: int,
    device: torch.device,
    on_pairs: Callable[[int], None] | None = None,
) -> ModelReport:
    """Every task's cross-identity and self-reconstruction scores of the outputs `produce_for(task)` makes."""
    report = ModelReport({SELF: {}}, {}, {})
    for task in CROSS_TASKS:
        report.metrics[task], report.rows[task], report.grids[task] = cross_identity(
            frames, cross_pairs, task, produce_for(task), measurer, fid, settings, resolution, device, on_pairs
        )
    for task in SELF_TASKS:
        kind = f"{SELF}_{task}"
        report.metrics[SELF][task], report.rows[kind], report.grids[kind] = self_reconstruction(
            frames, self_pairs, task, produce_for(task), settings, resolution, device, on_pairs
        )
    return report


def evaluate_model(
    model: FaceXModel,
    name: str,
    frames: HeldOutFrames,
    cross_pairs: list[Pair],
    self_pairs: list[Pair],
    measurer: FaceMeasurer,
    fid: tuple[str, Any],
    settings: EvaluateConfig,
    device: torch.device | str = "cpu",
    on_pairs: Callable[[int], None] | None = None,
) -> ModelReport:
    """Every metric of one model; `fid` = (metric name, a torchmetrics FID, reset here per task)."""
    device = torch.device(device)
    model.to(device).eval()
    res = model.config.resolution

    def produce_for(task: str):
        return functools.partial(_model_outputs, model, task, settings)

    report = score_outputs(frames, cross_pairs, self_pairs, produce_for, measurer, fid, settings, res, device,
                           on_pairs)  # fmt: skip
    report.metrics[SELF]["task"] = model.config.task
    batch = pair_batch(frames, self_pairs, res, device)
    report.metrics["denoising"] = {task: conditional_gain(model, batch, task, settings.seed) for task in SELF_TASKS}
    report.metrics["headline"] = headline(model.config.task, report.metrics)
    return report


def _model_outputs(model: FaceXModel, task: str, settings: EvaluateConfig, batch: dict, first_index: int):
    return generate(model, batch, task, settings, first_index)


def evaluate_reference(
    frames: HeldOutFrames,
    cross_pairs: list[Pair],
    self_pairs: list[Pair],
    measurer: FaceMeasurer,
    fid: tuple[str, Any],
    settings: EvaluateConfig,
    resolution: int,
    device: torch.device | str = "cpu",
) -> ModelReport:
    """The baseline row: each task's inpainting reference I_R scored as if it were the output."""
    return score_outputs(frames, cross_pairs, self_pairs, lambda task: functools.partial(_reference_outputs, task),
                         measurer, fid, settings, resolution, torch.device(device))  # fmt: skip


def _reference_outputs(task: str, batch: dict, first_index: int) -> torch.Tensor:
    return inpainting_reference(batch, task)
