"""Do the specialists lead the generalist on their own task's held-out denoising loss? Side by side, paired.

The evaluate stage scores each model's conditional gain on `evaluate.max_pairs` self-reconstruction pairs with one
noise draw. The specialists' lead on their own task is ~0.1 % of that loss, which such a draw cannot resolve; this
scores every model on the same many pairs, latents, noises and timesteps (the evaluation's GAIN_TIMESTEPS) under
each task's assembly, and prints each specialist minus the generalist with its standard error over pairs
(each pair's MSE averaged over the noise draws and levels first), and the relative difference.

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

from facex_model.model import FaceXModel
from facex_train.evaluation import GAIN_TIMESTEPS, HeldOutFrames, pair_batch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the stages' params loader (pipelines/ is not an installed package)
from pipelines.config import load_params  # noqa: E402

TASKS = {"reenact": "reenact", "swap": "swap"}  # specialist folder -> its own task


@torch.no_grad()
def own_mse(model: FaceXModel, batch: dict, task: str, seeds: int, chunk: int = 32) -> np.ndarray:
    """(pairs,) noise-prediction MSE with the pair's own f_SD, averaged over `seeds` noise draws and the levels."""
    n = batch["target_image"].shape[0]
    out = np.zeros(n)
    for start in range(0, n, chunk):
        part = {k: v[start : start + chunk] for k, v in batch.items()}
        f_sd = model.encode_conditions(part, task)
        for seed in range(seeds):
            generator = torch.Generator().manual_seed(seed)
            latents = model.encode_latents(part["target_image"], generator)
            for t in GAIN_TIMESTEPS:
                noise = torch.randn(latents.shape, generator=generator)
                timesteps = torch.full((latents.shape[0],), t, dtype=torch.long)
                pred = model.predict_noise(model.scheduler.add_noise(latents, noise, timesteps), timesteps, f_sd)
                mse = F.mse_loss(pred.float(), noise, reduction="none").mean(dim=(1, 2, 3))
                out[start : start + len(mse)] += mse.numpy() / (seeds * len(GAIN_TIMESTEPS))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=4, help="noise draws per pair and level")
    parser.add_argument("--models-dir", type=Path, help="default: evaluate.models_dir")
    parser.add_argument("--params", help="params file (default: params.yaml)")
    args = parser.parse_args()
    params = load_params(args.params)
    models_dir = args.models_dir or params.evaluate.models_dir
    frames = HeldOutFrames(params.evaluate.shards, params.split.holdout_every)
    pairs = frames.self_pairs(args.pairs, params.evaluate.seed)
    models = {name: FaceXModel.from_pretrained(models_dir / name).eval() for name in ("generalist", *TASKS)}
    batch = pair_batch(frames, pairs, models["generalist"].config.resolution, torch.device("cpu"))
    print(f"{len(pairs)} held-out self pairs x {args.seeds} noise draws x levels {GAIN_TIMESTEPS}")
    print("| task | specialist | its MSE | generalist's MSE | difference ± SE | relative |")
    print("|---|---|---|---|---|---|")
    for specialist, task in TASKS.items():
        own = own_mse(models[specialist], batch, task, args.seeds)
        base = own_mse(models["generalist"], batch, task, args.seeds)
        diff = own - base
        se = diff.std(ddof=1) / np.sqrt(len(diff))
        print(f"| {task} | {specialist} | {own.mean():.5f} | {base.mean():.5f} | {diff.mean():+.5f} ± {se:.5f} | "
              f"{diff.mean() / base.mean():+.2%} |")  # fmt: skip


if __name__ == "__main__":
    main()
