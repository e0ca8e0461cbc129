"""What the latent cache (`train.latent_cache_mb`) saves a training stage, side by side in one run.

Without latents in the shards, every training step encodes its target crops with the frozen VAE; with the cache each
worker encodes each crop once (facex_train.latent_cache). This runs the params' generalist stage as the demo runs it
(Ray Train, `compute.num_workers` workers, the pretrained backbone, the real shards) for `--steps` steps with the
cache off and on, alternating `--repeats` times, and prints the median step time of each and their ratio; first, the
same comparison for one worker's step alone (in this process, one thread, its micro-batch, no Ray, no gradient sync).

    python benchmarks/latent_cache.py [--steps 60] [--repeats 2] [--params params.yaml]

Needs data/shards and data/backbone (`dvc repro pretrain`). About 6 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the stages' params loader (pipelines/ is not an installed package)
from pipelines.config import load_params  # noqa: E402
from pipelines.train import build_job  # noqa: E402


def one_worker_steps(job, repeats: int, steps: int) -> dict[str, float]:
    """Median seconds of one worker's training step (one thread, the job's micro-batch, real pairs) without and with
    the cache, interleaved repeat by repeat."""
    import torch

    from facex_model import features
    from facex_train.latent_cache import LatentCache
    from facex_train.pairs import POSITION, DataPosition, PairConfig, pair_loader
    from facex_train.train import build_model

    torch.set_num_threads(1)
    model = build_model(job).train()
    train = job.train
    pairs = PairConfig(resolution=train.resolution, min_gap=train.min_gap, max_gap=train.max_gap,
                       pairs_per_clip=train.pairs_per_clip, seed=train.seed)  # fmt: skip
    loader = iter(pair_loader(str(train.shards), pairs, job.micro_batch, set(job.holdout), 0, 1, DataPosition()))
    batches = [{k: v for k, v in next(loader).items() if k != POSITION} for _ in range(4)]
    cache = LatentCache(model.vae, 2**30)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=train.learning_rate)
    generator = torch.Generator().manual_seed(0)

    def step(batch: dict, cached: bool) -> None:
        batch = features.batch_to(batch, "cpu")
        if cached:
            batch["target_latent"] = cache.moments(batch["target_image"])
        model(batch, task=job.task, generator=generator, logit_normal=train.logit_normal).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {"off": [], "on": []}
    for label in times:  # warm-up (and the cache filled with these batches' crops)
        for batch in batches:
            step(batch, label == "on")
    for _ in range(repeats):
        for label in times:
            started = time.perf_counter()
            for i in range(steps):
                step(batches[i % len(batches)], label == "on")
            times[label].append((time.perf_counter() - started) / steps)
    return {label: statistics.median(t) for label, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10, help="first steps of each run left out (start-up, cache)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from facex_train.train import fit, ray_session

    params = load_params(args.params)
    job, _ = build_job(params, "generalist")
    cached_mb = job.train.latent_cache_mb or 256
    alone = one_worker_steps(job, repeats=3, steps=6)
    print(f"one worker's step alone (micro-batch {job.micro_batch}, one thread, 3 x 6 steps each): "
          f"{alone['off']:.3f} s without the cache, {alone['on']:.3f} s with: {alone['on'] / alone['off']:.2f}x",
          flush=True)  # fmt: skip
    steps: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp, ray_session(job.compute.num_workers):
        for repeat in range(args.repeats):
            for label, mb in (("off", 0), ("on", cached_mb)):
                run = dataclasses.replace(
                    job, name=f"bench-latents-{label}-{repeat}", steps=args.steps, tracking_uri=None,
                    train=dataclasses.replace(job.train, latent_cache_mb=mb, checkpoint_every=args.steps,
                                              heldout_batches=0),
                    model_dir=f"{tmp}/{label}-{repeat}", storage_path=f"{tmp}/ray",
                )  # fmt: skip
                steps[label] += [t[0] for t in fit(run)["timings"][args.warmup :]]
    off, on = statistics.median(steps["off"]), statistics.median(steps["on"])
    batch, workers = job.train.batch_size, job.compute.num_workers
    print(f"\ngeneralist stage, batch {batch} on {workers} worker(s), {args.repeats} x {args.steps} steps per setting "
          f"(median after {args.warmup} warm-up steps of each run)")  # fmt: skip
    print(f"{'latent cache':<14} {'step s':>8} {'samples/s':>10}")
    for label, step in (("off", off), (f"on ({cached_mb} MB)", on)):
        print(f"{label:<14} {step:>8.3f} {batch / step:>10.1f}")
    print(f"step time with the cache: {on / off:.2f}x of without")


if __name__ == "__main__":
    main()
