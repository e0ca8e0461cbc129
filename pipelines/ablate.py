"""DVC stages `ablate@<row>` and `ablations`: paper Table 3 / Fig 11 in miniature, one generalist per row.

    python pipelines/ablate.py ROW [--params params.yaml]     # train and score one row of `ablations.rows`
    python pipelines/ablate.py --table [--params params.yaml]  # collect the rows into one table

Every row trains a generalist (head-swap assembly) with the same `ablations.train` settings, a smaller budget
than the demo's, and is scored on the same held-out pairs: self-reconstruction SSIM / PSNR / RMSE and the
conditional denoising gain (facex_train.evaluation). Rows switch one thing off: the Facial Representation
Controller (`use_frc`), the Region Assembler (`region_assembler`: I_R blanked), the Representation Assembler
(`representation_assembler`: every representation from the target), or the pretraining (`random_backbone`: the
same architecture as `ablations.train.backbone`, re-initialised). The table stage adds the inpainting reference
I_R scored as an output, and writes ablations.json, ablations.csv (a DVC plot) and ablations.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (DVC, ray job submit): make `pipelines` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import REPO_ROOT, Params, ParamsError, load_params  # noqa: E402
from pipelines.stage_clock import timed  # noqa: E402

TASK = "headswap"  # the generalist's assembly (paper §3.5)
COLUMNS = ("psnr", "ssim", "rmse", "gain", "gain_se", "mismatch_gain", "heldout_loss")


def model_config(params: Params, row: str, backbone: Path) -> dict:
    """The complete FaceXConfig of a row: the ablations' train.model sizes with the row's switches."""
    from facex_data.layout import shard_backend
    from facex_model.features import backend_config
    from facex_model.model import FaceXConfig

    train = params.ablations.train
    switches = {k: v for k, v in params.ablations.rows[row].items() if k != "random_backbone"}
    clip = train.vision_encoder
    sizes = dataclasses.asdict(train.model) | switches
    return FaceXConfig(
        **sizes, **backend_config(shard_backend(train.shards)), backbone_path=str(backbone),
        clip_path=str(clip) if clip else None, task=TASK, cond_drop_prob=train.cond_drop_prob,
        resolution=train.resolution,
    ).to_json()  # fmt: skip


def train_row(params: Params, row: str) -> tuple[Path, dict]:
    """Train one row's generalist with Ray Train; -> (model dir, training summary)."""
    from facex_data.layout import holdout_clips, written_clips
    from facex_train.train import TrainJob, fit, ray_session

    cfg = params.ablations
    train = cfg.train
    backbone = train.backbone
    if cfg.rows[row].get("random_backbone"):
        from facex_train.pretrain import random_backbone_like, split_crops

        crops, _ = split_crops(train.shards, params.split.holdout_every, train.resolution)
        backbone = random_backbone_like(train.backbone, train.out_dir / row / "backbone", crops, train.seed)
    clips = written_clips(train.shards)
    job = TrainJob(
        name=f"ablation-{row}", task=TASK, steps=train.generalist_steps,
        model_config=model_config(params, row, backbone),
        train=train, compute=params.compute, holdout=sorted(holdout_clips(clips, params.split.holdout_every)),
        model_dir=str(train.out_dir / row), storage_path=_storage(train.checkpoint_dir),
    )  # fmt: skip
    with ray_session(params.compute.num_workers):
        return Path(job.model_dir), fit(job)


def _storage(where: str) -> str:
    return where if "://" in where or Path(where).is_absolute() else str(REPO_ROOT / where)


def score(params: Params, model_dir: Path | None) -> dict:
    """Held-out self-reconstruction (head-swap assembly) and the conditional gain of a row's model, or of the
    inpainting reference I_R when `model_dir` is None."""
    import torch

    from facex_model.model import FaceXModel
    from facex_train.evaluation import (
        HeldOutFrames,
        conditional_gain,
        generate,
        inpainting_reference,
        pair_batch,
        self_reconstruction,
    )

    cfg = params.ablations.evaluate
    frames = HeldOutFrames(cfg.shards, params.split.holdout_every)
    pairs = frames.self_pairs(cfg.max_pairs, cfg.seed)
    device = torch.device("cpu")
    if model_dir is None:
        res = params.ablations.train.resolution
        section, _, grid = self_reconstruction(frames, pairs, TASK, lambda b, i: inpainting_reference(b, TASK), cfg,
                                               res, device)  # fmt: skip
        return section, grid
    model = FaceXModel.from_pretrained(model_dir).eval()
    res = model.config.resolution
    section, _, grid = self_reconstruction(frames, pairs, TASK, lambda b, i: generate(model, b, TASK, cfg, i), cfg,
                                           res, device)  # fmt: skip
    section |= conditional_gain(model, pair_batch(frames, pairs, res, device), TASK, cfg.seed)
    return section, grid


def run_row(params: Params, row: str) -> dict:
    from PIL import Image

    from facex_model.model import RUN_RECORD

    started = time.monotonic()
    model_dir, summary = train_row(params, row)
    section, grid = score(params, model_dir)
    result = {"row": row, "changes": params.ablations.rows[row], "steps": summary["steps"],
              "heldout_loss": summary.get("heldout_loss"),
              **{k: v for k, v in section.items() if k != "pairs"}, "pairs": section["pairs"]}  # fmt: skip
    # the row's wall time goes with its training run's record (.dvcignore'd), not into the results DVC hashes
    record = model_dir / RUN_RECORD
    record.write_text(json.dumps(json.loads(record.read_text()) | {"row_seconds": round(time.monotonic() - started, 1)},
                                 indent=1) + "\n")  # fmt: skip
    out = params.ablations.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{row}.json").write_text(json.dumps(result, indent=1) + "\n")
    Image.fromarray(grid).save(out / f"{row}.png")
    return result


def table(params: Params) -> dict:
    """Collect every row (and the I_R baseline) into ablations.json / .csv / .md beside the rows' files."""
    cfg = params.ablations
    missing = [r for r in cfg.rows if not (cfg.out_dir / f"{r}.json").is_file()]
    if missing:
        raise FileNotFoundError(f"no results for ablation rows {missing} in {cfg.out_dir}: run dvc repro ablations")
    rows = {r: json.loads((cfg.out_dir / f"{r}.json").read_text()) for r in cfg.rows}
    reference, _ = score(params, None)
    rows["inpainting_reference"] = {"row": "inpainting_reference", **reference}
    out = cfg.out_dir.parent
    summary = {"task": TASK, "steps": cfg.train.generalist_steps, "rows": rows}
    (out / "ablations.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    with (out / "ablations.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", *COLUMNS])
        for name, r in rows.items():
            writer.writerow([name, *(r.get(c) for c in COLUMNS)])
    lines = ["| row | PSNR (dB) | SSIM | RMSE | conditional gain | held-out loss |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        gain = f"{r['gain']:.3f} ± {r['gain_se']:.3f}" if r.get("gain") is not None else "-"
        loss = f"{r['heldout_loss']:.4f}" if r.get("heldout_loss") is not None else "-"
        lines.append(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['rmse']:.4f} | {gain} | {loss} |")
    (out / "ablations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("row", nargs="?", help="a row of ablations.rows")
    parser.add_argument("--table", action="store_true", help="collect the rows into one table")
    parser.add_argument("--params", help="params file (default: $FACEX_PARAMS or params.yaml)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, check_inputs=("ablations",))
        if not args.table and args.row not in params.ablations.rows:
            rows = ", ".join(params.ablations.rows)
            raise ParamsError(f"unknown ablation row {args.row!r}; ablations.rows has {rows}")
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    try:
        result = table(params) if args.table else run_row(params, args.row)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.table:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(timed(main))
