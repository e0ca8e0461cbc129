"""How far conditions can steer the embedded backbone: the pretrained small U-Net's conditional gain with its *own*
coarse captions, at the noise levels the evaluation scores FaceX at, side by side for several caption grids.

The evaluation's conditional gain (README "Evaluation") asks how much FaceX's f_SD lowers the frozen U-Net's
noise-prediction MSE against the null f_SD. This asks the same of the backbone with the very conditions it was
pretrained on — the colours of the whole target image on a grid, position by position — so it is the gain a
condition of that kind can buy on this backbone. It pretrains the VAE once and one U-Net per `--grids` entry with
the project's pretraining code and params (`pretrain` section; the U-Net's `condition_grid` replaced), then scores
the held-out crops (split.holdout_every) at the evaluation's timesteps with the same definitions: gain(t) =
(MSE_empty - MSE_own) / MSE_empty, mismatch(t) = (MSE_another clip's caption - MSE_own) / MSE_another, `gain` their
mean over levels. FaceX's gain from metrics/metrics.json, where the demo has run, is printed beside them.

    make bench-caption      # = python benchmarks/caption_gain.py [--grids 8,16] [--unet-steps N] [--vae-steps N]

Needs data/shards (`dvc repro extract`). About 4 minutes for the VAE and 7-8 per U-Net on 2 idle cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from facex_model.backbone import sd15_scheduler_config
from facex_train.evaluation import GAIN_TIMESTEPS
from facex_train.pretrain import split_crops, train_unet, train_vae

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the stages' params loader (pipelines/ is not an installed package)
from pipelines.config import load_params  # noqa: E402


@torch.no_grad()
def caption_gain(unet, captions, vae, images: torch.Tensor, seed: int = 0) -> dict[int, dict[str, float]]:
    """gain(t), mismatch(t) and the own-caption MSE at each of GAIN_TIMESTEPS, over `images` (held-out crops)."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(**sd15_scheduler_config())
    generator = torch.Generator().manual_seed(seed)
    latents = torch.cat([vae.encode(x).latent_dist.mean for x in images.split(64)]) * vae.config.scaling_factor
    own = captions(images)  # the pretraining's context; its dropped captions are the empty (zero) context
    # crops come clip by clip: half a turn gives each image the caption of another clip's crop
    contexts = {"own": own, "empty": torch.zeros_like(own), "other": own.roll(len(own) // 2, dims=0)}
    result = {}
    for t in GAIN_TIMESTEPS:
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.full((len(latents),), t, dtype=torch.long)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        mse = {}
        for name, context in contexts.items():
            pred = torch.cat([unet(x, s, encoder_hidden_states=c).sample
                              for x, s, c in zip(noisy.split(64), timesteps.split(64), context.split(64))])  # fmt: skip
            mse[name] = float(F.mse_loss(pred, noise))
        result[t] = {"gain": (mse["empty"] - mse["own"]) / mse["empty"],
                     "mismatch": (mse["other"] - mse["own"]) / mse["other"], "mse_own": mse["own"]}  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: $FACEX_PARAMS or params.yaml)")
    parser.add_argument("--grids", default="8,16", help="caption grids to compare (the params' is 8)")
    parser.add_argument("--vae-steps", type=int, help="default: pretrain.vae.steps")
    parser.add_argument("--unet-steps", type=int, help="default: pretrain.unet.steps")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/metrics.json"), help="FaceX's gain, if present")
    args = parser.parse_args(argv)

    params = load_params(args.params, check_inputs=("pretrain",))
    cfg = params.pretrain
    vae_cfg = dataclasses.replace(cfg.vae, steps=args.vae_steps or cfg.vae.steps)
    unet_cfg = dataclasses.replace(cfg.unet, steps=args.unet_steps or cfg.unet.steps)
    train, held = split_crops(cfg.shards, params.split.holdout_every, cfg.resolution)
    if len(held) < 2:
        raise SystemExit(f"{cfg.shards}: fewer than two held-out crops (split.holdout_every)")
    print(f"{len(train)} training crops, {len(held)} held-out; VAE {vae_cfg.steps} steps, U-Net {unet_cfg.steps}")
    started = time.monotonic()
    vae, _ = train_vae(vae_cfg, train, cfg.resolution, cfg.seed, progress=True)
    print(f"VAE {time.monotonic() - started:.0f} s")

    grids = [int(g) for g in args.grids.split(",")]
    if min(grids) < 1:
        raise SystemExit(f"--grids {args.grids}: every caption grid must be >= 1 (0 is the unconditional U-Net)")
    rows = {}
    for grid in grids:
        started = time.monotonic()
        grid_cfg = dataclasses.replace(unet_cfg, condition_grid=grid)
        unet, captions, _ = train_unet(grid_cfg, vae, train, cfg.seed, progress=True)
        rows[f"backbone, own {grid}x{grid} caption"] = caption_gain(unet, captions, vae, held)
        print(f"U-Net (caption grid {grid}) {time.monotonic() - started:.0f} s")

    header = " | ".join(f"t={t}" for t in GAIN_TIMESTEPS)
    print(f"\n| conditions | gain | {header} | mismatch |\n|---|---|{'---|' * len(GAIN_TIMESTEPS)}---|")
    for name, levels in rows.items():
        gain = sum(v["gain"] for v in levels.values()) / len(levels)
        mismatch = sum(v["mismatch"] for v in levels.values()) / len(levels)
        cells = " | ".join(f"{100 * v['gain']:.1f} %" for v in levels.values())
        print(f"| {name} | {100 * gain:.1f} % | {cells} | {100 * mismatch:.1f} % |")
    if args.metrics.is_file():
        for model, section in json.loads(args.metrics.read_text()).items():
            gain = section.get("denoising", {}).get("headswap") if isinstance(section, dict) else None
            if gain:
                cells = " | ".join(f"{100 * gain['by_timestep'][str(t)]['gain']:.1f} %" for t in GAIN_TIMESTEPS)
                print(f"| FaceX {model} f_SD (headswap, {args.metrics}) | {100 * gain['gain']:.1f} % | {cells} | "
                      f"{100 * gain['mismatch_gain']:.1f} % |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
