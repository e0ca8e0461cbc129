"""The `facex` command line: one entry point; each installed FaceX package adds its own commands.

facex-data owns the data commands (``demo-clips``, ``extract``, ``weights check``) and ``version``; the
other packages register theirs through the ``facex.commands`` entry-point group (a function that takes
the typer app), so ``facex --help`` lists exactly what is installed. Each command is a thin front for a
library call.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Annotated

import typer

COMMANDS_GROUP = "facex.commands"

app = typer.Typer(
    name="facex",
    help="FaceX: one diffusion model for face swap, head swap, reenactment, editing, inpainting, animation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

WeightsDirOpt = Annotated[
    Path | None, typer.Option("--weights-dir", help="third-party weights [default: $FACEX_WEIGHTS_DIR or ./weights]")
]


@app.command()
def version() -> None:
    """Print the versions of FaceX and the libraries it runs on."""
    for dist in ("facex-data", "facex-model", "facex-train", "torch", "diffusers", "transformers", "ray", "mlflow",
                 "dvc"):  # fmt: skip
        try:
            typer.echo(f"{dist:14s} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            typer.echo(f"{dist:14s} not installed")


@app.command("demo-clips")
def demo_clips(
    out: Annotated[Path, typer.Option(help="output folder (CelebV-HQ layout)")] = Path("data/demo_clips"),
    seed: Annotated[int, typer.Option(help="random seed: same seed, same bytes")] = 0,
    clips_per_person: Annotated[int, typer.Option(help="clips per portrait")] = 2,
    size: Annotated[int, typer.Option(help="frame width and height in pixels")] = 512,
    fps: Annotated[int, typer.Option(help="frames per second")] = 25,
    min_seconds: Annotated[float, typer.Option(help="shortest clip")] = 2.0,
    max_seconds: Annotated[float, typer.Option(help="longest clip")] = 4.0,
    portrait: Annotated[list[Path] | None, typer.Option(help="extra portrait photo to animate (repeatable)")] = None,
) -> None:
    """Write the demo clips: real portraits animated into CelebV-HQ-layout clips (the embedded profile's input)."""
    from facex_data.config import DemoClipsConfig
    from facex_data.demo_clips import make_demo_clips
    from facex_data.paths import InputPath

    missing = [p for p in portrait or [] if not p.is_file()]
    if missing:
        raise typer.BadParameter(f"portrait file not found: {missing[0]}", param_hint="--portrait")
    try:
        cfg = DemoClipsConfig(
            out_dir=out, seed=seed, clips_per_person=clips_per_person, size=size, fps=fps,
            min_seconds=min_seconds, max_seconds=max_seconds,
            extra_portraits=[InputPath(p) for p in portrait or []],
        )  # fmt: skip
        info = make_demo_clips(cfg)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    frames = sum(c["frames"] for c in info["clips"].values())
    typer.echo(f"wrote {len(info['clips'])} clips ({frames} frames) to {out}")


@app.command()
def extract(
    input_dir: Annotated[Path, typer.Option("--input", help="clips in CelebV-HQ layout (<dir>/35666/*.mp4)")] = Path(
        "data/demo_clips"),
    out: Annotated[Path, typer.Option(help="shard folder (shard-%06d.tar + stats, ledger.json)")] = Path("data/shards"),
    extractors: Annotated[str, typer.Option(help="extractor backend: offline | paper")] = "offline",
    frames_per_clip: Annotated[int, typer.Option(help="frames taken evenly from each clip")] = 4,
    clips_per_shard: Annotated[int, typer.Option(help="clips per shard")] = 4,
    runner: Annotated[str, typer.Option(help="ray (local Ray or $RAY_ADDRESS) | local (one process)")] = "ray",
    num_actors: Annotated[int, typer.Option(help="extractor actors")] = 2,
    weights_dir: WeightsDirOpt = None,
    detector: Annotated[str, typer.Option(help="paper backend's face detector: scrfd | dlib")] = "scrfd",
) -> None:
    """Extract face crops, parsing, identity, pose/expression and gaze from clips into WebDataset shards."""
    from facex_data.config import ExtractConfig
    from facex_data.extraction import run_extraction
    from facex_data.manifest import FrameSelection
    from facex_data.paths import InputPath

    if runner not in ("ray", "local"):
        raise typer.BadParameter("expected ray or local", param_hint="--runner")
    if detector not in ("scrfd", "dlib"):
        raise typer.BadParameter("expected scrfd or dlib", param_hint="--detector")
    if not input_dir.is_dir():
        raise typer.BadParameter(f"folder not found: {input_dir}", param_hint="--input")
    try:
        cfg = ExtractConfig(
            input_dir=InputPath(input_dir.resolve()), out_dir=out.resolve(), extractors=extractors,
            frames=FrameSelection(frames_per_clip=frames_per_clip, min_clip_frames=frames_per_clip),
            clips_per_shard=clips_per_shard, runner=runner, num_actors=num_actors, detector=detector,
        )  # fmt: skip
        summary = run_extraction(cfg, weights_dir.resolve() if weights_dir else None)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(summary.table())


weights_app = typer.Typer(
    help="The third-party weights in the weights dir (never downloaded by FaceX).", no_args_is_help=True
)
app.add_typer(weights_app, name="weights")


@weights_app.command("check")
def weights_check(
    weights_dir: WeightsDirOpt = None,
    pin: Annotated[bool, typer.Option(help="record the sha256 of the files present in <dir>/SHA256SUMS")] = False,
) -> None:
    """Each weight file: present / missing / hash mismatch, and the pipeline stages that read it."""
    from facex_data.weights import check_weights, format_table, resolve_weights_dir, write_pins

    root = resolve_weights_dir(weights_dir)
    if pin:
        typer.echo(f"pinned {len(write_pins(root))} files in {root / 'SHA256SUMS'}")
    statuses = check_weights(root)
    typer.echo(format_table(statuses, root))
    if any(s.status == "hash mismatch" for s in statuses):
        raise typer.Exit(1)


_loaded: set[int] = set()


def load_commands(target: typer.Typer = app) -> typer.Typer:
    """Add every installed package's commands (entry-point group ``facex.commands``) to the app, once."""
    if id(target) not in _loaded:
        _loaded.add(id(target))
        for entry in sorted(importlib.metadata.entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
            entry.load()(target)
    return target


def main() -> None:
    load_commands()
    app()


if __name__ == "__main__":
    main()
