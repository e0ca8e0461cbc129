"""What the latent cache (`train.latent_cache_mb`) saves a training stage, side by side in one run.

Without latents in the shards, every training step encodes its target crops with the frozen VAE; with the cache each
worker encodes each crop once (facex_train.latent_cache). This runs the params' generalist stage as the demo runs it
(Ray Train, `compute.num_workers` workers, the pretrained backbone, the real shards) for `--steps` steps with the
cache off and on, alternating `--repeats` times, and prints the median step time of each and their ratio.

    python benchmarks/latent_cache.py [--steps 60] [--repeats 2] [--params params.yaml]

Needs data/shards and data/backbone (`dvc repro pretrain`). About 5 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the stages' params loader (pipelines/ is not an installed package)
from pipelines.config import load_params  # noqa: E402
from pipelines.train import build_job  # noqa: E402


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
