"""Training throughput with Ray Train on CPU workers: 1 vs 2 workers, side by side in one run.

Prints samples/s (global batch / step time, median over the steps after warm-up) for 1 and 2 Ray Train
workers on the tiny backbone with the same micro-batch per worker, the scaling ratio (goal >= 1.6 on
2 cores), and the data loader's share of step time (goal < 10 %). (The GPU figure the training issue
asks for, SD-1.5 at 256 px, batch 8, bf16, is `make bench-model` on a CUDA machine.)

    make bench-train        # = python benchmarks/train.py [--steps 30] [--shards data/shards]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

import ray

from facex_data.layout import written_clips
from facex_data.paths import InputPath
from facex_model.backbone import build_tiny_backbone
from facex_model.model import FaceXConfig
from facex_train.config import ComputeConfig, TrainConfig
from facex_train.train import TrainJob, fit


def shards_for(path: Path | None, tmp: Path) -> Path:
    if path is not None:
        return path.resolve()  # Ray Train workers run in their own working directory
    from facex_data.demo_clips import DemoClipsConfig, make_demo_clips
    from facex_data.extraction import ExtractConfig, run_extraction
    from facex_data.manifest import FrameSelection

    clips = tmp / "demo_clips"
    make_demo_clips(DemoClipsConfig(out_dir=clips, seed=3, clips_per_person=1, size=256, max_seconds=2.0),
                    progress=False)  # fmt: skip
    out = tmp / "shards"
    frames = FrameSelection(mode="per_clip", frames_per_clip=8, min_clip_frames=4)
    run_extraction(ExtractConfig(input_dir=clips, out_dir=out, runner="local", progress=False, clips_per_shard=1,
                                 frames=frames))  # fmt: skip
    return out


def run(job: TrainJob, warmup: int) -> dict[str, float]:
    summary = fit(job)
    timings = summary["timings"][warmup:]
    step = statistics.median(t[0] for t in timings)
    data = sum(t[1] for t in timings) / sum(t[0] for t in timings)
    return {"samples_per_s": job.train.batch_size / step, "step_s": step, "data_share": data}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--prefetch", action="store_true", help="decode in a DataLoader worker process")
    parser.add_argument("--shards", type=Path, help="a shard folder (default: fresh small demo clips are extracted)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        shards = shards_for(args.shards, tmp)
        clips = len(written_clips(shards))
        backbone = build_tiny_backbone(tmp / "backbone", seed=0)
        train = TrainConfig(shards=InputPath(shards), resolution=args.resolution, checkpoint_every=args.steps,
                            heldout_batches=0, learning_rate=1e-4, prefetch=args.prefetch)  # fmt: skip
        base = TrainJob(
            name="bench", task="headswap", steps=args.steps, train=train, model_dir=str(tmp / "out"),
            model_config=FaceXConfig.tiny(backbone, resolution=args.resolution).to_json(),
            storage_path=str(tmp / "ray"),
        )  # fmt: skip
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            results = {}
            for workers in (1, 2):
                job = dataclasses.replace(
                    base, name=f"bench-{workers}w", compute=ComputeConfig(num_workers=workers),
                    train=dataclasses.replace(train, batch_size=args.micro_batch * workers),
                    model_dir=str(tmp / f"out{workers}"),
                )
                results[workers] = run(job, args.warmup)
        finally:
            ray.shutdown()

    print(f"\ntiny backbone, {args.resolution} px, micro-batch {args.micro_batch} per worker, {args.steps} steps "
          f"(median after {args.warmup} warm-up steps), prefetch {args.prefetch}, clips: {clips}")  # fmt: skip
    print(f"{'workers':>8} {'samples/s':>10} {'step s':>8} {'data share':>11}")
    for workers, r in results.items():
        print(f"{workers:>8} {r['samples_per_s']:>10.2f} {r['step_s']:>8.3f} {r['data_share']:>10.1%}")
    ratio = results[2]["samples_per_s"] / results[1]["samples_per_s"]
    worst_data = max(r["data_share"] for r in results.values())
    print(f"scaling 2 vs 1 workers: {ratio:.2f}x (goal >= 1.6); data loader share: {worst_data:.1%} (goal < 10 %)")


if __name__ == "__main__":
    main()
