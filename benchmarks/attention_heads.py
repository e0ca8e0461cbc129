"""How the embedded backbone's attention head count sets the speed of the two steps the demo spends its time on,
side by side in one run: the pretrain stage's U-Net step and a FaceX training step (one Ray Train worker's share).

`pretrain.unet.attention_head_dim` is diffusers' name for the number of heads per attention layer. SD-1.5 has 8,
each 40-160 channels wide; the embedded U-Net's blocks are 32 and 64 wide, so 8 heads are 4 and 8 channels wide,
and on a CPU the attention kernels' cost grows with heads x tokens², not with the width. This times both steps at
each `--heads` (default 8 and 2), interleaved repeat by repeat, with the params' sizes and random weights (the head
count changes no weight's shape, so the FaceX rows load the pretrained backbone at each count), and prints step
times and their ratio to the first entry.

    python benchmarks/attention_heads.py [--heads 8,2] [--repeats 3] [--steps 6]

Needs data/shards and data/backbone (`dvc repro pretrain`). About 3 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the stages' params loader (pipelines/ is not an installed package)
from pipelines.config import load_params  # noqa: E402


def pretrain_step(params, heads: int, threads: int):
    """A closure running one pretrain-stage U-Net step (batch, caption grid and sizes from the params)."""
    from facex_train.pretrain import CoarseImageTokens, build_unet

    cfg = replace(params.pretrain.unet, attention_head_dim=heads)
    latent = params.pretrain.resolution // 4
    torch.manual_seed(0)
    unet = build_unet(cfg, latent, 4).train()
    captions = CoarseImageTokens(cfg.condition_grid, cfg.cross_attention_dim)
    opt = torch.optim.AdamW([*unet.parameters(), *captions.parameters()], lr=cfg.learning_rate)
    x = torch.randn(cfg.batch_size, 4, latent, latent)
    images = torch.rand(cfg.batch_size, 3, params.pretrain.resolution, params.pretrain.resolution)
    t = torch.randint(0, 1000, (cfg.batch_size,))

    def step() -> None:
        torch.set_num_threads(threads)
        loss = (unet(x, t, encoder_hidden_states=captions(images)).sample - x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def facex_step(params, backbone: Path, micro_batch: int, threads: int):
    """A closure running one FaceX training step on `backbone` with the train section's settings and real pairs."""
    from facex_model import features
    from facex_model.model import FaceXConfig, FaceXModel
    from facex_train.pairs import PairConfig, pair_loader
    from facex_train.train import DataPosition
    from pipelines.train import model_config

    config, _ = model_config(params, "generalist", "headswap")
    config["backbone_path"] = str(backbone)
    torch.manual_seed(0)
    model = FaceXModel(FaceXConfig.from_json(config)).train()
    train = params.train
    pairs = PairConfig(resolution=train.resolution, min_gap=train.min_gap, max_gap=train.max_gap,
                       pairs_per_clip=train.pairs_per_clip, seed=train.seed, cache_mb=train.cache_mb)  # fmt: skip
    loader = iter(pair_loader(str(train.shards), pairs, micro_batch, set(), 0, 1, DataPosition(), False))
    batches = []
    for _ in range(4):
        batch = next(loader)
        batch.pop("__position__", None)
        batches.append(features.batch_to(batch, torch.device("cpu")))
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=train.learning_rate)
    generator = torch.Generator().manual_seed(0)
    calls = [0]

    def step() -> None:
        torch.set_num_threads(threads)
        loss = model(batches[calls[0] % len(batches)], task="headswap", generator=generator,
                     logit_normal=train.logit_normal)  # fmt: skip
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        calls[0] += 1

    return step


def with_heads(backbone: Path, heads: int, tmp: Path) -> Path:
    """A copy of the backbone folder whose U-Net config asks for `heads` heads (same weights)."""
    out = tmp / f"backbone-{heads}"
    if not out.exists():
        shutil.copytree(backbone, out)
        path = out / "unet" / "config.json"
        config = json.loads(path.read_text())
        config["attention_head_dim"], config["num_attention_heads"] = heads, None
        path.write_text(json.dumps(config))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--heads", default="8,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per repeat, after one warm-up step")
    args = parser.parse_args()
    params = load_params(args.params)
    heads = [int(h) for h in args.heads.split(",")]
    backbone = Path(params.train.backbone)
    if not (backbone / "unet").is_dir():
        sys.exit(f"{backbone}/unet not found: run `dvc repro pretrain` first")
    workers = params.compute.num_workers
    cores = torch.get_num_threads()
    facex_threads = max(1, cores // workers)
    micro = params.train.batch_size // workers
    with tempfile.TemporaryDirectory() as tmp:
        steps = {}
        for h in heads:
            steps[("pretrain U-Net step", h)] = pretrain_step(params, h, cores)
            steps[(f"FaceX step, micro-batch {micro}, {facex_threads} thread(s)", h)] = facex_step(
                params, with_heads(backbone, h, Path(tmp)), micro, facex_threads
            )
        times: dict[tuple[str, int], list[float]] = {key: [] for key in steps}
        for step in steps.values():
            step()  # warm-up
        for _ in range(args.repeats):
            for key, step in steps.items():
                started = time.perf_counter()
                for _ in range(args.steps):
                    step()
                times[key].append((time.perf_counter() - started) / args.steps)
    print(f"{'step':<44} {'heads':>5} {'median s':>9} {'ratio':>6}")
    for name in dict.fromkeys(key[0] for key in steps):
        base = statistics.median(times[(name, heads[0])])
        for h in heads:
            median = statistics.median(times[(name, h)])
            print(f"{name:<44} {h:>5} {median:>9.3f} {median / base:>6.2f}")


if __name__ == "__main__":
    main()
