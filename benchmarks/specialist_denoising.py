"""Do the specialists lead the generalist on their own task's held-out denoising loss? Side by side, paired.

The evaluate stage scores each model's conditional gain on `evaluate.max_pairs` self-reconstruction pairs with one
noise draw. The specialists' lead on their own task is ~0.1-3 % of that loss, which such a draw cannot resolve; this
scores every model on the same many pairs, latents, noises and timesteps under each task's assembly, and prints each
specialist minus the generalist, with its standard error over pairs (each pair's MSE averaged over the noise draws
first) and the relative difference, three ways:
- `levels pooled`: the MSE summed over the evaluation's GAIN_TIMESTEPS. The epsilon MSE of low noise levels is far
  larger than that of high ones, so this is mostly the low-noise end;
- `t = ...`: each level alone;
- `training t`: timesteps drawn per pair from the training stages' own distribution (`train.timestep_sampling`:
  uniform, or the logit-normal of `train.logit_mean` / `logit_std`), the held-out loss of the objective they train.

    make bench-specialists   # = python benchmarks/specialist_denoising.py [--pairs 128] [--seeds 4] [--models-dir DIR]

Needs the trained demo models (`dvc repro register`). About 2 minutes at the defaults on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facex_model.model import FaceXModel, sample_timesteps
from facex_train.evaluation import GAIN_TIMESTEPS, HeldOutFrames, pair_batch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the stages' params loader (pipelines/ is not an installed package)
from pipelines.config import load_params  # noqa: E402

TASKS = {"reenact": "reenact", "swap": "swap"}  # specialist folder -> its own task


@torch.no_grad()
def own_mse(model: FaceXModel, batch: dict, task: str, train, seeds: int, chunk: int = 32) -> np.ndarray:
    """(levels + 1, pairs) noise-prediction MSE with the pair's own f_SD, averaged over `seeds` noise draws: one row
    per GAIN_TIMESTEPS level, the last at timesteps drawn from the training distribution. Every model gets the same
    latents, noises and timesteps (they follow from the seeds alone)."""
    n = batch["target_image"].shape[0]
    out = np.zeros((len(GAIN_TIMESTEPS) + 1, n))
    for start in range(0, n, chunk):
        part = {k: v[start : start + chunk] for k, v in batch.items()}
        f_sd = model.encode_conditions(part, task)
        for seed in range(seeds):
            generator = torch.Generator().manual_seed(seed)
            latents = model.encode_latents(part["target_image"], generator)
            m = latents.shape[0]
            drawn = sample_timesteps(m, model.scheduler.config.num_train_timesteps, generator, train.logit_normal)
            for row, timesteps in enumerate([*(torch.full((m,), t, dtype=torch.long) for t in GAIN_TIMESTEPS), drawn]):
                noise = torch.randn(latents.shape, generator=generator)
                pred = model.predict_noise(model.scheduler.add_noise(latents, noise, timesteps), timesteps, f_sd)
                mse = F.mse_loss(pred.float(), noise, reduction="none").mean(dim=(1, 2, 3))
                out[row, start : start + m] += mse.numpy() / seeds
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=4, help="noise draws per pair and level")
    parser.add_argument("--models-dir", type=Path, help="default: evaluate.models_dir")
    parser.add_argument("--params", help="params file (default: params.yaml)")
    args = parser.parse_args()
    params = load_params(args.params)
    train = params.train
    models_dir = args.models_dir or params.evaluate.models_dir
    frames = HeldOutFrames(params.evaluate.shards, params.split.holdout_every)
    pairs = frames.self_pairs(args.pairs, params.evaluate.seed)
    models = {name: FaceXModel.from_pretrained(models_dir / name).eval() for name in ("generalist", *TASKS)}
    batch = pair_batch(frames, pairs, models["generalist"].config.resolution, torch.device("cpu"))
    sampling = "logit-normal {:g}, {:g}".format(*train.logit_normal) if train.logit_normal else "uniform"
    print(f"{len(pairs)} held-out self pairs x {args.seeds} noise draws; levels {GAIN_TIMESTEPS}; "
          f"training t: {sampling}")  # fmt: skip
    mse = {(name, task): own_mse(models[name], batch, task, train, args.seeds)
           for name in models for task in TASKS.values()}  # fmt: skip
    levels = len(GAIN_TIMESTEPS)
    print("| task | specialist | measure | its MSE | generalist's MSE | difference ± SE | relative |")
    print("|---|---|---|---|---|---|---|")
    for specialist, task in TASKS.items():
        own, base = mse[specialist, task], mse["generalist", task]
        measures = {"levels pooled": (own[:levels].mean(0), base[:levels].mean(0))}
        measures |= {f"t = {t}": (own[k], base[k]) for k, t in enumerate(GAIN_TIMESTEPS)}
        measures["training t"] = (own[levels], base[levels])
        for measure, (a, b) in measures.items():
            print(f"| {task} | {specialist} | {measure} | {a.mean():.5f} | {b.mean():.5f} | {_difference(a, b)} |")
    print("\nEach specialist on each task's assembly, training t (a specialist's lead should be its own task's):")
    print("| specialist | " + " | ".join(f"{task}: difference ± SE | relative" for task in TASKS.values()) + " |")
    print("|---|" + "---|---|" * len(TASKS))
    for specialist in TASKS:
        cells = [_difference(mse[specialist, task][levels], mse["generalist", task][levels]) for task in TASKS.values()]
        print(f"| {specialist} | " + " | ".join(cells) + " |")


def _difference(a: np.ndarray, b: np.ndarray) -> str:
    """`mean(a - b) ± its SE over pairs | relative to mean(b)`, a table's last two cells."""
    diff = a - b
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    return f"{diff.mean():+.5f} ± {se:.5f} | {diff.mean() / b.mean():+.2%}"


if __name__ == "__main__":
    main()
