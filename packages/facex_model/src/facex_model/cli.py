"""The `facex` command line. Each command is a thin front for a library call."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Annotated

import typer

from facex_model.cli_tasks import register_task_commands

app = typer.Typer(
    name="facex",
    help="FaceX: one diffusion model for face swap, head swap, reenactment, editing, inpainting, animation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the versions of FaceX and the libraries it runs on."""
    for dist in ("facex-data", "facex-model", "torch", "diffusers", "transformers", "ray", "mlflow", "dvc"):
        try:
            typer.echo(f"{dist:14s} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            typer.echo(f"{dist:14s} not installed")


@app.command()
def sample(
    out: Annotated[Path, typer.Option(help="output folder (CelebV-HQ layout)")] = Path("data/sample"),
    seed: Annotated[int, typer.Option(help="random seed: same seed, same bytes")] = 0,
    clips_per_person: Annotated[int, typer.Option(help="clips per portrait")] = 2,
    size: Annotated[int, typer.Option(help="frame width and height in pixels")] = 512,
    fps: Annotated[int, typer.Option(help="frames per second")] = 25,
    min_seconds: Annotated[float, typer.Option(help="shortest clip")] = 2.0,
    max_seconds: Annotated[float, typer.Option(help="longest clip")] = 4.0,
    portrait: Annotated[list[Path] | None, typer.Option(help="extra portrait photo to animate (repeatable)")] = None,
) -> None:
    """Write the embedded sample set: real portraits animated into CelebV-HQ-layout clips."""
    from facex_data.paths import InputPath
    from facex_data.sample import SampleSetConfig, make_sample_set

    missing = [p for p in portrait or [] if not p.is_file()]
    if missing:
        raise typer.BadParameter(f"portrait file not found: {missing[0]}", param_hint="--portrait")
    try:
        cfg = SampleSetConfig(
            out_dir=out, seed=seed, clips_per_person=clips_per_person, size=size, fps=fps,
            min_seconds=min_seconds, max_seconds=max_seconds,
            extra_portraits=[InputPath(p) for p in portrait or []],
        )
        info = make_sample_set(cfg)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    frames = sum(c["frames"] for c in info["clips"].values())
    typer.echo(f"wrote {len(info['clips'])} clips ({frames} frames) to {out}")


@app.command()
def extract(
    input_dir: Annotated[Path, typer.Option("--input", help="clips in CelebV-HQ layout (<dir>/35666/*.mp4)")] = Path(
        "data/sample"),
    out: Annotated[Path, typer.Option(help="shard folder (shard-%06d.tar + stats, ledger.json)")] = Path("data/shards"),
    extractors: Annotated[str, typer.Option(help="extractor backend: offline | paper")] = "offline",
    frames_per_clip: Annotated[int, typer.Option(help="frames sampled evenly from each clip")] = 4,
    clips_per_shard: Annotated[int, typer.Option(help="clips per shard")] = 4,
    runner: Annotated[str, typer.Option(help="ray (local Ray or $RAY_ADDRESS) | local (one process)")] = "ray",
    num_actors: Annotated[int, typer.Option(help="extractor actors")] = 2,
    models_dir: Annotated[Path | None, typer.Option(help="paper weights; default $FACEX_MODELS_DIR, ./models")] = None,
    detector: Annotated[str, typer.Option(help="paper backend's face detector: scrfd | dlib")] = "scrfd",
) -> None:
    """Extract face crops, parsing, identity, pose/expression and gaze from clips into WebDataset shards."""
    from facex_data.manifest import SamplingPolicy
    from facex_data.paths import InputPath
    from facex_data.pipeline import ExtractConfig, run_extraction

    if runner not in ("ray", "local"):
        raise typer.BadParameter("expected ray or local", param_hint="--runner")
    if detector not in ("scrfd", "dlib"):
        raise typer.BadParameter("expected scrfd or dlib", param_hint="--detector")
    if not input_dir.is_dir():
        raise typer.BadParameter(f"folder not found: {input_dir}", param_hint="--input")
    try:
        cfg = ExtractConfig(
            input_dir=InputPath(input_dir.resolve()), out_dir=out.resolve(), extractors=extractors,
            sampling=SamplingPolicy(frames_per_clip=frames_per_clip, min_clip_frames=frames_per_clip),
            clips_per_shard=clips_per_shard, runner=runner, num_actors=num_actors,
            models_dir=models_dir.resolve() if models_dir else None, detector=detector,
        )
        summary = run_extraction(cfg)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(summary.table())


models_app = typer.Typer(
    help="The third-party weights in the models dir (never downloaded by FaceX).", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@models_app.command("check")
def models_check(
    models_dir: Annotated[Path | None, typer.Option("--dir", help="default: $FACEX_MODELS_DIR or ./models")] = None,
    pin: Annotated[bool, typer.Option(help="record the sha256 of the files present in <dir>/SHA256SUMS")] = False,
) -> None:
    """Each weight file: present / missing / hash mismatch, and the pipeline stages that read it."""
    from facex_data.models import check_models, format_table, resolve_models_dir, write_pins

    root = resolve_models_dir(models_dir)
    if pin:
        typer.echo(f"pinned {len(write_pins(root))} files in {root / 'SHA256SUMS'}")
    statuses = check_models(root)
    typer.echo(format_table(statuses, root))
    if any(s.status == "hash mismatch" for s in statuses):
        raise typer.Exit(1)


register_task_commands(app)  # swap, headswap, reenact, edit, inpaint, animate, detect-watermark (cli_tasks.py)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
