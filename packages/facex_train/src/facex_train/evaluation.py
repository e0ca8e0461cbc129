"""The evaluation protocol (paper §4.1, Tables 1-3) on held-out clips, for one FaceXModel at a time.

- Cross-identity pairs: the source frame from one held-out clip, the target (driving) frame from a held-out clip of
  another person. Each pair is generated as reenactment and as face swap; the output is measured against the source
  (ID similarity) and the target (pose / expression / gaze L2), and FID compares the outputs with the real targets.
- Self-reconstruction pairs: source and target are two frames of one held-out clip, generated with the model's own
  task; the target is the ground truth for SSIM / PSNR / RMSE.

Only clips :func:`facex_data.layout.holdout_clips` holds out are read, so no training clip is ever evaluated; who a
clip shows is :func:`facex_data.layout.person_of`.
"""

from __future__ import annotations

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


@dataclass
class ModelReport:
    metrics: dict[str, Any]
    rows: dict[str, list[dict[str, Any]]]  # per kind: one row per pair (DVC plots)
    grids: dict[str, np.ndarray] = field(default_factory=dict)  # per kind: source | target | output rows, uint8 HWC


def headline(name: str, task: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The one number the register stage compares (see README "Evaluation"), higher is better for all three.

    swap: ``swap.score`` = ID similarity - (1 - face detection rate) of cross-identity swaps; reenact:
    ``reenact.score`` = the same minus pose L2 (copying the source keeps the ID but misses the pose, ignoring it
    loses the ID); the generalist (and any other task): self-reconstruction PSNR. The detection term stops an output
    with no findable face from scoring: its pose would be read off the target's landmarks.
    """
    kind = name if name in CROSS_TASKS else task
    if kind in CROSS_TASKS:
        return {"name": f"{kind}.score", "value": metrics[kind]["score"], "higher_is_better": True}
    return {"name": f"{SELF}.psnr", "value": metrics[SELF]["psnr"], "higher_is_better": True}


def _batches(pairs: list[Pair], size: int):
    for start in range(0, len(pairs), size):
        yield start, pairs[start : start + size]


def generate(
    model: FaceXModel,
    frames: HeldOutFrames,
    pairs: list[Pair],
    task: str,
    settings: EvaluateConfig,
    first_index: int,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Outputs (B, 3, R, R) in [-1, 1] for a batch of pairs; pair i's noise comes from seed + i (same across tasks)."""
    res = model.config.resolution
    items = [
        {"source": sample_inputs(frames.sample(p.source), res), "target": sample_inputs(frames.sample(p.target), res)}
        for p in pairs
    ]
    batch = batch_to(collate_sides(items), device)
    noise = torch.cat(
        [
            initial_noise(model, 1, res, res, torch.Generator().manual_seed(settings.seed + first_index + i))
            for i in range(len(pairs))
        ]
    )
    images, _ = denoise(
        model,
        batch,
        task,
        scheduler=settings.scheduler,
        steps=settings.steps,
        cfg_scale=settings.cfg_scale,
        generator=torch.Generator().manual_seed(settings.seed),
        latents=noise,
    )
    return images.cpu(), {k: v.cpu() for k, v in batch.items()}


def _grid(rows: list[tuple[torch.Tensor, ...]]) -> np.ndarray:
    """Rows of (source, target, output) images in [-1, 1] -> one uint8 HWC image, GRID_TILE px per cell."""
    cells = [
        torch.cat([F.interpolate(im[None].float(), size=(GRID_TILE, GRID_TILE), mode="nearest")[0] for im in row], 2)
        for row in rows
    ]
    return to_uint8(torch.cat(cells, 1))


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


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
    fid_name, fid_metric = fid
    metrics: dict[str, Any] = {}
    rows: dict[str, list[dict[str, Any]]] = {}
    grids: dict[str, np.ndarray] = {}
    for task in CROSS_TASKS:
        fid_metric.reset()
        task_rows: list[dict[str, Any]] = []
        grid_rows: list[tuple[torch.Tensor, ...]] = []
        for start, chunk in _batches(cross_pairs, settings.batch_size):
            outputs, batch = generate(model, frames, chunk, task, settings, start, device)
            targets = [frames.sample(p.target) for p in chunk]
            sources = [frames.sample(p.source) for p in chunk]
            measured = measurer.measure(outputs, [t["lmk"] for t in targets])
            target_parts = [tdmm_parts(t["tdmm"], frames.backend) for t in targets]
            ids = id_similarity(measured.identity, torch.stack([torch.from_numpy(s["id"]) for s in sources]))
            pose = l2_distance(measured.pose, torch.stack([p["angles"] for p in target_parts]))
            expression = l2_distance(measured.expression, torch.stack([p["expression"] for p in target_parts]))
            gaze = l2_distance(measured.gaze, torch.stack([torch.from_numpy(t["gaze"]) for t in targets]))
            fid_metric.update(to_unit(batch["target_image"]), real=True)
            fid_metric.update(to_unit(outputs), real=False)
            for i, pair in enumerate(chunk):
                task_rows.append(
                    {
                        "pair": start + i,
                        "source": pair.source,
                        "target": pair.target,
                        "face_detected": int(measured.detected[i]),
                        "pose_l2": float(pose[i]),
                        "expression_l2": float(expression[i]),
                        "gaze_l2": float(gaze[i]),
                        "id_similarity": float(ids[i]),  # last: DVC plots' default y
                    }
                )
                if len(grid_rows) < GRID_ROWS:
                    grid_rows.append((batch["source_image"][i], batch["target_image"][i], outputs[i]))
            if on_pairs is not None:
                on_pairs(len(chunk))
        section = {
            key: _mean([r[key] for r in task_rows]) for key in ("id_similarity", "pose_l2", "expression_l2", "gaze_l2")
        }
        section["face_detection_rate"] = _mean([r["face_detected"] for r in task_rows])
        section[fid_name] = float(fid_metric.compute())
        # an output the backend cannot find costs a full point: its motion was read off the target's landmarks
        section["score"] = section["id_similarity"] - (1.0 - section["face_detection_rate"])
        if task == "reenact":
            section["score"] -= section["pose_l2"]
        section["pairs"] = len(task_rows)
        metrics[task] = section
        rows[task] = task_rows
        grids[task] = _grid(grid_rows)

    own_task = model.config.task
    self_rows: list[dict[str, Any]] = []
    grid_rows = []
    for start, chunk in _batches(self_pairs, settings.batch_size):
        outputs, batch = generate(model, frames, chunk, own_task, settings, start, device)
        values = reconstruction_metrics(outputs, batch["target_image"])
        values = {key: values[key] for key in ("ssim", "rmse", "psnr")}  # psnr last: DVC plots' default y
        for i, pair in enumerate(chunk):
            self_rows.append(
                {"pair": start + i, "source": pair.source, "target": pair.target}
                | {key: float(v[i]) for key, v in values.items()}
            )
            if len(grid_rows) < GRID_ROWS:
                grid_rows.append((batch["source_image"][i], batch["target_image"][i], outputs[i]))
        if on_pairs is not None:
            on_pairs(len(chunk))
    metrics[SELF] = {key: _mean([r[key] for r in self_rows]) for key in ("ssim", "psnr", "rmse")}
    metrics[SELF] |= {"task": own_task, "pairs": len(self_rows)}
    rows[SELF] = self_rows
    grids[SELF] = _grid(grid_rows)
    metrics["headline"] = headline(name, own_task, metrics)
    return ModelReport(metrics, rows, grids)
