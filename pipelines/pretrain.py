"""DVC stage `pretrain`: the embedded profile's small SD-architecture backbone, pretrained on the training clips.

    python pipelines/pretrain.py [--params params.yaml]

Reads `pretrain.shards` (the extract stage's output; held-out clips by `split.holdout_every` are never
read for training) and writes `pretrain.out_dir` in SD-1.5's folder layout (unet/ vae/ scheduler/
clip_vision/) plus pretrain_metrics.json: the VAE as an autoencoder with a data-derived scaling factor,
then the U-Net as a latent denoiser (facex_train.pretrain). The real profile trains on SD-1.5 and sets
`pretrain.enabled: false`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (DVC, ray job submit): make `pipelines` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import ParamsError, load_params  # noqa: E402
from pipelines.stage_clock import timed  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: $FACEX_PARAMS or params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, check_inputs=("pretrain",) if _enabled(args.params) else ())
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import torch

    from facex_train.pretrain import pretrain

    torch.set_num_threads(os.cpu_count() or 1)
    try:
        metrics = pretrain(params.pretrain, params.split.holdout_every, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in metrics.items() if k != "config"}, indent=1))
    print(f"backbone in {params.pretrain.out_dir}")
    return 0


def _enabled(path: str | None) -> bool:
    try:
        return load_params(path).pretrain.enabled
    except ParamsError:
        return True  # the full load below reports the error


if __name__ == "__main__":
    sys.exit(timed(main))
