"""`facex benchmark`: the paper's evaluation protocols on a user's dataset copies (registered by facex-train)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

benchmark_app = typer.Typer(help="The paper's evaluation protocols (Tables 1-3) on your copy of FF++, VoxCeleb1, FFHQ.",
                            no_args_is_help=True)  # fmt: skip


IdModelOpt = Annotated[str, typer.Option("--id-model", help="identity model for ID metrics: backend, dlib, or an "
                                        "iresnet ArcFace/CosFace .pth/.onnx (under the weights dir, or a path)")]
FidOpt = Annotated[str, typer.Option("--fid", help="FID features: a folder under the weights dir holding the FID "
                                     "Inception, or standin (ranks models only; not comparable with papers)")]
PublishedOpt = Annotated[Path | None, typer.Option("--published", help="published rows (paper_tables.json format)")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@benchmark_app.command("list")
def list_protocols() -> None:
    """The protocols, the datasets each reads and its columns."""
    from facex_train.benchmark.protocols import PROTOCOLS

    for p in PROTOCOLS.values():
        typer.echo(f"{p.name:18s} paper {p.table:20s} task {p.task:9s} --root {','.join(p.datasets)}")
        typer.echo(f"{'':18s} {p.description}; columns: {' '.join(c.label for c in p.columns)}")


@benchmark_app.command("pairs")
def pairs(
    name: Annotated[str, typer.Argument(help="protocol (facex benchmark list)")],
    root: Annotated[list[str], typer.Option("--root", help="dataset folder: DIR, or NAME=DIR per dataset")],
    out: Annotated[Path, typer.Option("--out", help="pair list file to write (.jsonl)")],
    seed: Annotated[int, typer.Option(help="seed of the drawn pairs")] = 0,
    max_pairs: Annotated[int | None, typer.Option("--max-pairs", help="at most this many pairs")] = None,
) -> None:
    """Write a protocol's pinned pair list (same dataset copy and seed: same bytes) without running a model."""
    from facex_train.benchmark.datasets import LayoutError
    from facex_train.benchmark.protocols import (
        PairSettings,
        build_pair_list,
        get_protocol,
        pair_list_bytes,
        parse_roots,
        sha256,
    )

    try:
        protocol = get_protocol(name)
        data = pair_list_bytes(build_pair_list(protocol, parse_roots(protocol, root), PairSettings(seed, max_pairs)))
    except (KeyError, ValueError, LayoutError) as err:
        raise _fail(str(err).strip('"')) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    count = len(data.splitlines()) - 1
    typer.echo(f"{out}: {count} pairs, sha256 {sha256(data)}")


@benchmark_app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="protocol (facex benchmark list)")],
    root: Annotated[list[str], typer.Option("--root", help="dataset folder: DIR, or NAME=DIR per dataset")],
    model: Annotated[str, typer.Option("--model", help="model folder, or a registry URI models:/NAME@ALIAS")],
    out: Annotated[Path, typer.Option("--out", help="results go to OUT/<protocol>/<model>/")] = Path("benchmarks"),
    max_pairs: Annotated[int | None, typer.Option("--max-pairs", help="only the first N pairs of the list")] = None,
    seed: Annotated[int, typer.Option(help="seed of the drawn pairs and of generation (pair i: seed + i)")] = 0,
    steps: Annotated[int, typer.Option(help="denoising steps")] = 20,
    cfg: Annotated[float, typer.Option("--cfg", help="classifier-free guidance scale")] = 3.0,
    scheduler: Annotated[str, typer.Option(help="ddim, dpm++ ... (as the task commands)")] = "ddim",
    id_model: IdModelOpt = "backend",
    fid: FidOpt = "inception",
    published: PublishedOpt = None,
    no_watermark: Annotated[bool, typer.Option("--no-watermark", help="score outputs without the watermark")] = False,
    weights_dir: Annotated[Path | None, typer.Option("--weights-dir", help="third-party weights [default: "
                                                     "$FACEX_WEIGHTS_DIR or ./weights]")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, auto")] = "cpu",
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow to log to [default: "
                                                     "$MLFLOW_TRACKING_URI; unset: not logged]")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="MLflow run to log to (default: the run that "
                                               "registered a models:/ model, else a new run)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="redo every pair (default: resume)")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="pairs per denoising batch (on a GPU: as many as "
                                            "its memory holds; results as with 1, up to float rounding)")] = 8,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar")] = False,
) -> None:
    """Run a protocol on a model: metrics.json, pairs.csv, grid.png and table.md (the paper's layout)."""
    from facex_data.weights import resolve_weights_dir
    from facex_train.benchmark.protocols import PairSettings, get_protocol, parse_roots
    from facex_train.benchmark.runner import BenchmarkError, RunSettings, model_name, run_benchmark

    try:
        protocol = get_protocol(name)
        roots = parse_roots(protocol, root)
        reference = json.loads(published.read_text()) if published else None
    except (KeyError, ValueError, OSError) as err:
        raise _fail(str(err).strip('"')) from None
    settings = RunSettings(steps=steps, cfg_scale=cfg, scheduler=scheduler, seed=seed, identity_model=id_model,
                           fid_features=fid, watermark=not no_watermark)  # fmt: skip
    out_dir = out / protocol.name / model_name(model)
    try:
        run_benchmark(
            protocol.name, roots, model, out_dir, settings, PairSettings(seed, max_pairs),
            weights_dir=resolve_weights_dir(weights_dir), device=device, overwrite=overwrite, published=reference,
            progress=not no_progress, tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"),
            run_id=run_id, say=lambda m: typer.echo(m, err=True), batch_size=batch_size,
        )  # fmt: skip
    except BenchmarkError as err:
        raise _fail(str(err)) from None
    typer.echo((out_dir / "table.md").read_text())
    typer.echo(f"results in {out_dir}")


def register(app: typer.Typer) -> None:
    """Add `facex benchmark` to the `facex` app (the ``facex.commands`` entry point of facex-train)."""
    app.add_typer(benchmark_app, name="benchmark")
