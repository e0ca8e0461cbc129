"""DVC stage `evaluate`: trained FaceX models on held-out clips -> metrics.json, DVC plots and image grids.

    python pipelines/evaluate.py [--params params.yaml] [--model DIR ...] [--out DIR] [--max-pairs N] [--no-progress]

For each model folder (evaluate.models under evaluate.models_dir, or every --model given): cross-identity
reenactment and swap (ID similarity, pose / expression / gaze L2, FID) and self-reconstruction (SSIM / PSNR / RMSE),
paper §4.1, on the held-out clips of evaluate.shards. Outputs are measured by the extractor backend the shards were
written with (rebuilt from what their sample json records, weights from weights.dir). Writes into evaluate.out_dir:

    metrics.json                   {model: {reenact, swap, self_reconstruction: {headswap, reenact, swap},
                                    denoising: {<task>: conditional gain}, headline}, inpainting_reference: {...}}
    plots/<model>/<kind>.csv       one row per pair (source and target sample keys + every per-pair value)
    grids/<model>/<kind>.png       source | target | I_R | output, one pair per row
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (DVC, ray job submit): make `pipelines` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from facex_data.extractors import ExtractorOptions, build_extractors  # noqa: E402
from facex_model.model import CONFIG_NAME, FaceXModel  # noqa: E402
from facex_train.evaluation import (  # noqa: E402
    CROSS_TASKS,
    SELF_TASKS,
    HeldOutFrames,
    ModelReport,
    evaluate_model,
    evaluate_reference,
)
from facex_train.metrics import STANDIN, FaceMeasurer, build_fid  # noqa: E402
from pipelines.config import Params, ParamsError, load_params  # noqa: E402
from pipelines.stage_clock import timed  # noqa: E402

REFERENCE = "inpainting_reference"  # the I_R baseline row of metrics.json


class StageError(Exception):
    """Something the user can fix; main() prints it as one `error:` line."""


def model_dirs(params: Params, chosen: list[Path] | None) -> dict[str, Path]:
    """{model name: folder}; the name is the folder's name. Every folder must hold a saved FaceXModel."""
    dirs = [p.resolve() for p in chosen] if chosen else [params.evaluate.models_dir / m for m in params.evaluate.models]
    if not dirs:
        raise StageError("no model to evaluate: set evaluate.models or pass --model DIR")
    named: dict[str, Path] = {}
    for folder in dirs:
        if not (folder / CONFIG_NAME).is_file():
            raise StageError(
                f"model folder {folder} not found (no {CONFIG_NAME}): run the training stage that writes it "
                "(dvc repro), or choose models with --model DIR / evaluate.models"
            )
        if folder.name in named:
            raise StageError(f"two models are named {folder.name!r} ({named[folder.name]}, {folder}): rename one")
        named[folder.name] = folder
    return named


def device_for(params: Params) -> torch.device:
    return torch.device("cuda" if params.compute.use_gpu and torch.cuda.is_available() else "cpu")


def finite(metrics: dict[str, Any], where: str = "") -> dict[str, Any]:
    """A copy with non-finite numbers as null (JSON has no NaN/inf), warning about each."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out[key] = finite(value, f"{where}{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            print(f"warning: {where}{key} is {value}; written as null", file=sys.stderr)
            out[key] = None
        else:
            out[key] = value
    return out


def write_report(out_dir: Path, name: str, report: ModelReport) -> None:
    for kind, rows in report.rows.items():
        path = out_dir / "plots" / name / f"{kind}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    for kind, grid in report.grids.items():
        path = out_dir / "grids" / name / f"{kind}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(path)


def run(params: Params, models: dict[str, Path], progress: bool = True) -> dict[str, Any]:
    cfg = params.evaluate
    if cfg.max_pairs < 2:
        raise StageError(f"evaluate.max_pairs = {cfg.max_pairs}: FID needs at least 2 pairs")
    if cfg.batch_size < 1 or cfg.steps < 1:
        raise StageError("evaluate.batch_size and evaluate.steps must be >= 1")
    shard_dir = cfg.shards
    device = device_for(params)
    try:
        frames = HeldOutFrames(shard_dir, params.split.holdout_every)
        cross_pairs = frames.cross_identity_pairs(cfg.max_pairs, cfg.seed)
        self_pairs = frames.self_pairs(cfg.max_pairs, cfg.seed)
        fid = build_fid(cfg.fid_features, params.weights.dir)
    except (FileNotFoundError, ValueError) as err:
        raise StageError(str(err)) from err
    # the backend the shards were written with (detector, crop size), weights from the weights dir
    options = ExtractorOptions.recorded(frames.first_meta(), params.weights.dir, device.type)
    try:
        extractors = build_extractors(frames.backend, options)
    except (FileNotFoundError, ValueError) as err:
        raise StageError(f"extractors to measure outputs with: {err}") from err
    measurer = FaceMeasurer(extractors)
    protocol = {
        "held_out_clips": len(frames.frames),
        "steps": cfg.steps,
        "scheduler": cfg.scheduler,
        "cfg_scale": cfg.cfg_scale,
        "seed": cfg.seed,
        "extractors": frames.backend,
        "fid_features": fid[0] if cfg.fid_features == STANDIN else f"{fid[0]}:{cfg.fid_features}",
    }

    per_model = len(CROSS_TASKS) * len(cross_pairs) + len(SELF_TASKS) * len(self_pairs)
    results: dict[str, Any] = {}
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=per_model * len(models), unit="pair", desc="evaluate", disable=not progress) as bar:
        for name, folder in models.items():
            bar.set_postfix_str(name)
            try:
                model = FaceXModel.from_pretrained(folder)
            except (FileNotFoundError, ValueError) as err:
                raise StageError(f"model {name} ({folder}): {err}") from err
            if model.config.extractors != frames.backend:
                raise StageError(
                    f"model {name} ({folder}) reads {model.config.extractors!r} features but the shards in "
                    f"{shard_dir} were written by the {frames.backend!r} backend: evaluate it on matching shards"
                )
            report = evaluate_model(
                model, name, frames, cross_pairs, self_pairs, measurer, fid, cfg, device, on_pairs=bar.update
            )
            results[name] = finite(report.metrics | {"protocol": protocol})
            write_report(cfg.out_dir, name, report)
            resolution = model.config.resolution
            del model
        # the baseline a model must beat: each task's inpainting reference I_R scored as the output
        bar.set_postfix_str(REFERENCE)
        reference = evaluate_reference(frames, cross_pairs, self_pairs, measurer, fid, cfg, resolution, device)
        results[REFERENCE] = finite(reference.metrics | {"protocol": protocol})
        write_report(cfg.out_dir, REFERENCE, reference)
    (cfg.out_dir / "metrics.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: $FACEX_PARAMS or params.yaml)")
    parser.add_argument(
        "--model", type=Path, action="append", help="a saved FaceXModel folder (repeatable); default: evaluate.models"
    )
    parser.add_argument("--out", type=Path, help="override evaluate.out_dir")
    parser.add_argument("--max-pairs", type=int, help="override evaluate.max_pairs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, check_inputs=("evaluate",))
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    overrides: dict[str, Any] = {}
    if args.out:
        overrides["out_dir"] = args.out.resolve()
    if args.max_pairs is not None:
        overrides["max_pairs"] = args.max_pairs
    params = dataclasses.replace(params, evaluate=dataclasses.replace(params.evaluate, **overrides))
    try:
        results = run(params, model_dirs(params, args.model), progress=not args.no_progress)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, metrics in results.items():
        if "headline" in metrics:
            head = metrics["headline"]
            print(f"{name}: {head['name']} = {head['value']}")
    print(f"metrics, plots and grids in {params.evaluate.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(timed(main))
