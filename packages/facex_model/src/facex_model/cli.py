"""`facex swap|headswap|reenact|edit|inpaint|animate` and `facex detect-watermark`: thin fronts for FaceXPipeline.

Registered into the one `facex` command (facex_data.cli) through the ``facex.commands`` entry point.
Every error a user can cause (a missing file, not an image, no face, a bad --face-index, an unknown model URI) is one
line on stderr and exit status 2; warnings (several faces, a downscaled image) are one line each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from facex_model.inputs import VIDEO_SUFFIXES

MODELS_DIR = Path("data/models")
# the specialist each task was finetuned for (paper §4), else the generalist
DEFAULT_MODELS = {
    "swap": ("swap", "generalist"),
    "headswap": ("generalist",),
    "reenact": ("reenact", "generalist"),
    "animate": ("reenact", "generalist"),
    "edit": ("generalist",),
    "inpaint": ("generalist",),
}
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

TargetOpt = Annotated[Path, typer.Option("--target", help="image, or mp4 video for swap/reenact/animate")]
OutOpt = Annotated[Path, typer.Option("--out", help="output .png/.jpg/.webp (.mp4 for a video target)")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="model folder or models:/<name>@<alias> [default: data/models/<task>]")
]
StepsOpt = Annotated[int, typer.Option("--steps", min=1, help="denoising steps")]
CfgOpt = Annotated[float, typer.Option("--cfg", help="classifier-free guidance scale (1 = off)")]
SeedOpt = Annotated[int, typer.Option("--seed", help="random seed: same seed, same output")]
SchedOpt = Annotated[str, typer.Option("--scheduler", help="ddim | euler | dpm")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu | cuda | auto")]
GridOpt = Annotated[bool, typer.Option("--grid", help="also write <out>.grid.png: source | target | I_R | result")]
FaceOpt = Annotated[int | None, typer.Option("--face-index", min=0, help="target face by size (0 = largest)")]
SrcFaceOpt = Annotated[int | None, typer.Option("--source-face-index", min=0, help="source face by size")]
NoWmOpt = Annotated[
    bool, typer.Option("--no-watermark", help="do NOT mark the output as synthetic (invisible mark + metadata)")
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="video: keep finished frames in <out>.frames.partial/ and skip them on re-run")
]
RegionsOpt = Annotated[str | None, typer.Option("--regions", help="comma-separated regions, e.g. eyes,nose,lips")]
WeightsDirOpt = Annotated[
    Path | None,
    typer.Option("--weights-dir", help="paper-backend models: the extractors' weights [default: $FACEX_WEIGHTS_DIR]"),
]


def error(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause into one line and exit status 2 (no traceback)."""
    from facex_model.pipeline import FaceXInputError

    try:
        yield
    except (FaceXInputError, FileNotFoundError, ValueError, KeyError) as err:
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise error(str(text).splitlines()[0] if text else type(err).__name__) from None


def _regions(text: str | None) -> list[str] | None:
    return [r.strip() for r in text.split(",") if r.strip()] if text else None


def _model_path(task: str, model: str | None) -> str:
    if model:
        return model
    for name in DEFAULT_MODELS[task]:
        if (MODELS_DIR / name).is_dir():
            return str(MODELS_DIR / name)
    raise error(
        f"no model given and {MODELS_DIR / DEFAULT_MODELS[task][0]} does not exist: pass --model FOLDER or "
        "--model models:/<name>@<alias>, or train one (dvc repro)"
    )


def _check_out(out: Path, video: bool) -> None:
    suffixes = VIDEO_SUFFIXES if video else OUTPUT_SUFFIXES
    if out.suffix.lower() not in suffixes:
        raise error(f"--out {out}: write {' or '.join(suffixes)}{' for a video target' if video else ''}")


def _check_input(path: Path | None, option: str) -> None:
    if path is not None and not path.exists():
        raise error(f"{option} {path}: file not found")


def run_task(
    task: str,
    *,
    source: Path | None,
    target: Path,
    out: Path,
    model: str | None,
    steps: int,
    cfg: float,
    seed: int,
    scheduler: str,
    device: str,
    grid: bool,
    face_index: int | None,
    source_face_index: int | None,
    no_watermark: bool,
    backbone: Path | None = None,
    resume: bool = False,
    weights_dir: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Shared body of the task commands: load the pipeline, run on an image or a video, save (and the grid)."""
    _check_input(source, "--source")
    _check_input(target, "--target")
    video = target.suffix.lower() in VIDEO_SUFFIXES
    _check_out(out, video)
    with user_errors():
        from facex_model.pipeline import FaceXPipeline, load_image
        from facex_model.watermark import save_image

        pipe = FaceXPipeline.from_pretrained(
            _model_path(task, model), backbone_path=backbone, device=device, weights_dir=weights_dir, warn=warn
        )
        options = dict(steps=steps, cfg_scale=cfg, scheduler=scheduler, seed=seed, face_index=face_index)
        if video:
            from facex_model.video import run_video

            result = run_video(
                pipe, task, source, target, out, source_face_index=source_face_index,
                watermark=not no_watermark, resume=resume, **options,
            )  # fmt: skip
            if result.frames_without_face:
                warn(f"{result.frames_without_face} of {result.frames} frames show no face: copied unchanged")
            typer.echo(f"wrote {out} ({result.frames} frames, {result.fps:.3g} fps{', audio' if result.audio else ''})")
            return
        output = pipe(
            task, source=source, target=target, source_face_index=source_face_index, watermark=False,
            **options, **(extra or {}),
        )  # fmt: skip
        save_image(output.image, out, watermark=not no_watermark)
        typer.echo(f"wrote {out} ({output.image.width}x{output.image.height})")
        if grid:
            grid_path = out.with_suffix(".grid.png")
            src = load_image(source, "source") if source is not None else None
            panel = output.grid(src, load_image(target, "target"))
            save_image(panel, grid_path, watermark=not no_watermark)
            typer.echo(f"wrote {grid_path}")


def register(app: typer.Typer) -> None:
    """Add the task commands and detect-watermark to the `facex` app (the ``facex.commands`` entry point)."""

    def face_task(task: str, doc: str) -> None:
        def command(
            source: Annotated[Path, typer.Option("--source", help="image with the face to use (jpg/png/webp/mp4)")],
            target: TargetOpt,
            out: OutOpt,
            model: ModelOpt = None,
            steps: StepsOpt = 20,
            cfg: CfgOpt = 3.0,
            seed: SeedOpt = 0,
            scheduler: SchedOpt = "ddim",
            device: DeviceOpt = "cpu",
            grid: GridOpt = False,
            face_index: FaceOpt = None,
            source_face_index: SrcFaceOpt = None,
            regions: RegionsOpt = None,
            no_watermark: NoWmOpt = False,
            resume: ResumeOpt = False,
            weights_dir: WeightsDirOpt = None,
        ) -> None:
            _run(task, locals(), {"regions": _regions(regions)} if regions else None)

        command.__doc__ = doc
        app.command(task)(command)

    face_task("swap", "Face swap: the source's face on the target (--regions eyes,nose: only those change).")
    face_task("headswap", "Head swap: the source's head (face, hair, ears) on the target's body and background.")
    face_task("reenact", "Reenactment: the source person with the target's (or a driving video's) pose and expression.")

    @app.command("animate")
    def animate(
        source: Annotated[Path, typer.Option("--source", help="the person to animate")],
        target: TargetOpt,
        out: OutOpt,
        backbone: Annotated[
            Path, typer.Option("--backbone", help="SD-1.5 diffusers folder (unet/, vae/, scheduler/) to load instead")
        ],
        model: ModelOpt = None,
        steps: StepsOpt = 20,
        cfg: CfgOpt = 3.0,
        seed: SeedOpt = 0,
        scheduler: SchedOpt = "ddim",
        device: DeviceOpt = "cpu",
        grid: GridOpt = False,
        face_index: FaceOpt = None,
        source_face_index: SrcFaceOpt = None,
        no_watermark: NoWmOpt = False,
        resume: ResumeOpt = False,
        weights_dir: WeightsDirOpt = None,
    ) -> None:
        """Animation: reenactment on another (community) SD-1.5 U-Net loaded in place of the base one."""
        if not backbone.is_dir():
            raise error(f"--backbone {backbone}: folder not found (an SD-1.5 diffusers folder with unet/ and vae/)")
        _run("animate", locals())

    @app.command("edit")
    def edit(
        target: Annotated[Path, typer.Option("--target", help="the image to edit")],
        out: OutOpt,
        source: Annotated[Path | None, typer.Option("--source", help="image to take --regions from")] = None,
        regions: RegionsOpt = None,
        step: Annotated[
            list[str] | None,
            typer.Option("--edit", help="REGIONS=IMAGE, repeatable: mixed in one pass (or in turn: --sequential)"),
        ] = None,
        sequential: Annotated[bool, typer.Option("--sequential", help="apply --edit steps one after another")] = False,
        model: ModelOpt = None,
        steps: StepsOpt = 20,
        cfg: CfgOpt = 3.0,
        seed: SeedOpt = 0,
        scheduler: SchedOpt = "ddim",
        device: DeviceOpt = "cpu",
        grid: GridOpt = False,
        face_index: FaceOpt = None,
        no_watermark: NoWmOpt = False,
        weights_dir: WeightsDirOpt = None,
    ) -> None:
        """Region editing: take --regions (hair, eyes, brows, lips, nose, glasses, ...) from --source."""
        from facex_model.pipeline import Edit

        edits = []
        for item in step or []:
            names, _, image = item.partition("=")
            if not image:
                raise error(f"--edit {item}: expected REGIONS=IMAGE, e.g. eyes,brows=ref.jpg")
            _check_input(Path(image), "--edit")
            edits.append(Edit(tuple(_regions(names) or ()), Path(image)))
        if not edits and (source is None or not regions):
            raise error("edit needs --source and --regions (or one or more --edit REGIONS=IMAGE)")
        extra = {"regions": _regions(regions), "edits": edits or None, "sequential": sequential}
        _run("edit", dict(locals(), source_face_index=None), extra)

    @app.command("inpaint")
    def inpaint(
        target: Annotated[Path, typer.Option("--target", help="the image to repaint")],
        mask: Annotated[Path, typer.Option("--mask", help="black/white image, white = repaint (over the face)")],
        out: OutOpt,
        model: ModelOpt = None,
        steps: StepsOpt = 20,
        cfg: CfgOpt = 3.0,
        seed: SeedOpt = 0,
        scheduler: SchedOpt = "ddim",
        device: DeviceOpt = "cpu",
        grid: GridOpt = False,
        face_index: FaceOpt = None,
        no_watermark: NoWmOpt = False,
        weights_dir: WeightsDirOpt = None,
    ) -> None:
        """Inpainting: regenerate the masked part of the target's face."""
        _check_input(mask, "--mask")
        _run("inpaint", dict(locals(), source=None, source_face_index=None), {"mask": mask})

    @app.command("detect-watermark")
    def detect_watermark(file: Annotated[Path, typer.Argument(help="image (png/jpg/webp) or mp4 video")]) -> None:
        """Report whether FILE carries the FaceX watermark and synthetic-image metadata (exit 1 if not)."""
        found = detect_file(file)
        raise typer.Exit(0 if found else 1)


def _run(task: str, values: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """run_task with a command's own parameters (its locals())."""
    run_task(
        task,
        source=values.get("source"),
        target=values["target"],
        out=values["out"],
        model=values.get("model"),
        steps=values["steps"],
        cfg=values["cfg"],
        seed=values["seed"],
        scheduler=values["scheduler"],
        device=values["device"],
        grid=values["grid"],
        face_index=values.get("face_index"),
        source_face_index=values.get("source_face_index"),
        no_watermark=values["no_watermark"],
        backbone=values.get("backbone"),
        resume=values.get("resume", False),
        weights_dir=values.get("weights_dir"),
        extra=extra,
    )


def detect_file(file: Path) -> bool:
    """Print the watermark report of an image, or of a video's first frames; -> found."""
    from PIL import Image

    from facex_model.watermark import detect, inspect_image

    if not file.is_file():
        raise error(f"{file}: file not found")
    if file.suffix.lower() in VIDEO_SUFFIXES:
        import av

        try:
            with av.open(str(file)) as c:
                comment = c.metadata.get("comment", "")
                frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(3), c.decode(video=0))]
        except (av.FFmpegError, IndexError) as err:
            raise error(f"{file}: not a readable video ({err})") from None
        results = [detect(f) for f in frames]
        found = bool(results) and all(r[0] for r in results)
        best = max((r[1] for r in results), default=0)
        meta = "synthetic/FaceX metadata present" if "FaceX" in comment else "no FaceX metadata"
        typer.echo(f"{file}: FaceX watermark {'found' if found else 'not found'} in the first {len(frames)} frames "
                   f"(best {best}/48 bits); {meta}")  # fmt: skip
        return found
    try:
        with Image.open(file) as im:
            im.load()
            report = inspect_image(im)
    except (OSError, SyntaxError, ValueError) as err:
        raise error(f"{file}: not a readable image ({err})") from None
    typer.echo(report.summary(str(file)))
    if report.metadata.get("Description"):
        typer.echo(f"  {report.metadata['Description']}")
    return report.found
