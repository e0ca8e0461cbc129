"""`facex swap|headswap|reenact|edit|inpaint|animate` and `facex detect-watermark`: thin fronts for FaceXPipeline.

Registered into the one `facex` command (facex_data.cli) through the ``facex.commands`` entry point.
Every error a user can cause (a missing file, not an image, no face, a bad --face-index, an unknown model URI) is one
line on stderr and exit status 2; warnings (several faces, a downscaled image) are one line each.

Batch: `--target DIR_OR_GLOB --out DIR`, or `--pairs FILE` (.csv / .jsonl rows of source,target[,out]), runs every
input on one loaded model, `--batch-size` images (of swap, headswap, reenact, animate) per denoising batch; a bad
input is recorded with its reason and the run goes on. Outputs already in the
folder are kept and skipped (`--overwrite` redoes them); the summary goes to `<out>/<task>_summary.json`. Exit status:
0 when every input was written or kept, 1 when any failed, 2 for a usage error (nothing run).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import glob
import json
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from facex_model.inputs import IMAGE_SUFFIXES, VIDEO_SUFFIXES

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
VIDEO_OUTPUT_SUFFIXES = (".mp4",)
SOURCE_TASKS = ("swap", "headswap", "reenact", "animate")  # the tasks that take a person from --source
SOURCE_CACHE = 16  # source faces a batch run keeps detected (frame + features each)
GLOB_CHARS = frozenset("*?[")

TargetOpt = Annotated[
    Path | None,
    typer.Option("--target", help="image, or video for swap/reenact/animate; a folder or a quoted glob for a batch"),
]
OutOpt = Annotated[
    Path, typer.Option("--out", help="output .png/.jpg/.webp (.mp4 for a video target); a folder for a batch")
]
SourceOpt = Annotated[Path | None, typer.Option("--source", help="image with the face to use (jpg/png/webp/heic/mp4)")]
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
BatchSizeOpt = Annotated[
    int,
    typer.Option("--batch-size", min=1, help="images of a batch / frames of a video per denoising batch (on a GPU: "
                 "as many as its memory holds)"),
]
RegionsOpt = Annotated[str | None, typer.Option("--regions", help="comma-separated regions, e.g. eyes,nose,lips")]
WeightsDirOpt = Annotated[
    Path | None,
    typer.Option("--weights-dir", help="paper-backend models: the extractors' weights [default: $FACEX_WEIGHTS_DIR]"),
]
LikeOpt = Annotated[
    Path | None,
    typer.Option(
        "--target-face-like", help="image of the person to change: the target's face most like them (video: followed)"
    ),
]
PairsOpt = Annotated[
    Path | None,
    typer.Option("--pairs", help="batch: .csv (header source,target[,out]) or .jsonl rows; paths relative to the file"),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="batch: redo outputs that already exist")]
BackboneOpt = Annotated[
    Path | None,
    typer.Option("--backbone", help="the backbone folder the model was trained on, where config.json's path is "
                 "not on this machine (a moved or DVC-pulled model folder)"),
]  # fmt: skip


def error(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause into one line and exit status 2 (no traceback)."""
    from facex_model.inputs import FaceXInputError

    try:
        yield
    except (FaceXInputError, FileNotFoundError, ValueError, KeyError) as err:
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise error(str(text).splitlines()[0] if text else type(err).__name__) from None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while torch, diffusers and the model load: they make millions of objects that live
    as long as the process and no garbage, and collecting among them was ~0.6 s of a command's start-up."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _regions(text: str | None, option: str = "--regions") -> list[str] | None:
    """Comma-separated region names, checked before a model loads (a typo fails at once, not after the loading)."""
    names = [r.strip() for r in text.split(",") if r.strip()] if text else None
    if names:
        from facex_model.regions import ALL_REGIONS  # imports torch: only once a command runs

        unknown = [r for r in names if r not in ALL_REGIONS]
        if unknown:
            raise error(f"{option}: unknown region(s) {', '.join(unknown)}; known: {', '.join(ALL_REGIONS)}")
    return names


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
    suffixes = VIDEO_OUTPUT_SUFFIXES if video else OUTPUT_SUFFIXES
    if out.suffix.lower() not in suffixes:
        raise error(f"--out {out}: write {' or '.join(suffixes)}{' for a video target' if video else ''}")


def _check_input(path: Path | None, option: str) -> None:
    if path is not None and not path.exists():
        raise error(f"{option} {path}: file not found")


@dataclass
class Job:
    """One input of a run: what to read and where the output goes."""

    target: Path
    out: Path
    source: Path | None = None
    mask: Path | None = None


@dataclass
class Outcome:
    """What became of one job (a record of the batch summary)."""

    target: str
    source: str | None
    out: str
    status: str  # written | skipped | failed
    reason: str = ""
    seconds: float = 0.0


def run_task(
    task: str,
    *,
    source: Path | None,
    target: Path | None,
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
    batch_size: int = 8,
    weights_dir: Path | None = None,
    target_face_like: Path | None = None,
    pairs: Path | None = None,
    overwrite: bool = False,
    mask: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Shared body of the task commands: load the pipeline once, run it on one input or a batch, save (and the grid)."""
    _check_input(source, "--source")
    _check_input(target_face_like, "--target-face-like")
    _check_input(mask, "--mask")
    if face_index is not None and target_face_like is not None:
        raise error("choose the target face by --face-index or by --target-face-like, not both")
    jobs = _batch_jobs(task, source, target, out, pairs, mask)
    if jobs is None:
        assert target is not None
        _check_input(target, "--target")
        _check_out(out, target.suffix.lower() in VIDEO_SUFFIXES)
        if task in SOURCE_TASKS and source is None:
            raise error(f"{task} needs --source (the image with the face to use)")
    options = dict(
        steps=steps, cfg_scale=cfg, scheduler=scheduler, seed=seed, face_index=face_index,
        source_face_index=source_face_index, watermark=not no_watermark, grid=grid, resume=resume,
        batch_size=batch_size,
    )  # fmt: skip
    with user_errors():
        with gc_paused():
            from facex_model.pipeline import FaceXPipeline

            pipe = FaceXPipeline.from_pretrained(
                _model_path(task, model), backbone_path=backbone, device=device, weights_dir=weights_dir, warn=warn
            )
        like = pipe.identity(target_face_like, "--target-face-like") if target_face_like is not None else None
        if jobs is None:
            assert target is not None
            typer.echo(_run_job(pipe, task, Job(target, out, source, mask), like, options, extra))
            return
    _run_batch(pipe, task, jobs, like, options, extra, out, overwrite)


def _run_job(pipe: Any, task: str, job: Job, like: Any, options: dict[str, Any], extra: dict[str, Any] | None) -> str:
    """Run one job and write its output (and grid) through a temporary name, so a killed run never leaves a
    half-written file that a resumed batch would keep; -> the line to print."""
    generation = {k: options[k] for k in ("steps", "cfg_scale", "scheduler", "seed", "face_index")}
    if job.target.suffix.lower() in VIDEO_SUFFIXES:
        from facex_model.video import run_video

        partial = job.out.with_name(f"{job.out.stem}.partial{job.out.suffix}")
        job.out.parent.mkdir(parents=True, exist_ok=True)
        result = run_video(
            pipe, task, job.source, job.target, partial, source_face_index=options["source_face_index"],
            target_face_like=like, watermark=options["watermark"], resume=options["resume"],
            batch_size=options["batch_size"], progress=options.get("progress", True), **generation,
        )  # fmt: skip
        partial.replace(job.out)
        if result.frames_without_face:
            pipe.warn(f"{result.frames_without_face} of {result.frames} frames show no face: copied unchanged")
        return f"wrote {job.out} ({result.frames} frames, {result.fps:.3g} fps{', audio' if result.audio else ''})"
    task_extra = dict(extra or {})
    if task == "inpaint":
        task_extra["mask"] = job.mask
    output = pipe(
        task, source=job.source, target=job.target, source_face_index=options["source_face_index"],
        target_face_like=like, watermark=False, **generation, **task_extra,
    )  # fmt: skip
    return _write_output(job, output, options)


def _write_output(job: Job, output: Any, options: dict[str, Any]) -> str:
    """An image job's output (and grid), watermarked as asked, through a temporary name; -> the line to print."""
    from facex_model.watermark import save_image

    partial = job.out.with_name(f"{job.out.stem}.partial{job.out.suffix}")
    job.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(output.image, partial, watermark=options["watermark"])
    partial.replace(job.out)
    line = f"wrote {job.out} ({output.image.width}x{output.image.height})"
    if options["grid"]:
        from facex_model.pipeline import load_image

        grid_path = job.out.with_suffix(".grid.png")
        src = load_image(job.source, "source") if job.source is not None else None
        save_image(output.grid(src, load_image(job.target, "target")), grid_path, watermark=options["watermark"])
        line += f"\nwrote {grid_path}"
    return line


# --- batch -----------------------------------------------------------------------------------------------------
def _batch_jobs(
    task: str, source: Path | None, target: Path | None, out: Path, pairs: Path | None, mask: Path | None
) -> list[Job] | None:
    """The jobs of a batch (`--pairs`, or a folder / glob `--target`), or None for one input."""
    if pairs is not None:
        if target is not None:
            raise error("give the inputs by --target or by --pairs, not both")
        _check_input(pairs, "--pairs")
        _check_batch_out(out)
        return _pairs_jobs(task, pairs, source, out, mask)
    if target is None:
        raise error("give --target (an image, a video, a folder or a quoted glob) or --pairs FILE")
    if target.is_dir():
        if out.resolve() == target.resolve():
            raise error(f"--out {out} is the --target folder: write the outputs to another folder")
        inputs = [p for p in target.iterdir() if p.is_file() and not p.name.startswith(".")]
    elif not target.exists() and GLOB_CHARS & set(str(target)):
        inputs = [Path(p) for p in glob.glob(str(target), recursive=True) if Path(p).is_file()]
    else:
        return None
    _check_batch_out(out)
    out_dir = out.resolve()
    found = sorted(p for p in inputs if p.suffix.lower() in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES)
                   and out_dir not in p.resolve().parents)  # fmt: skip
    if not found:
        raise error(f"--target {target}: no images or videos there ({', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
    if task in SOURCE_TASKS and source is None:
        raise error(f"{task} needs --source (the image with the face to use)")
    jobs = [Job(p, Path(), source, mask) for p in found]
    return _name_outputs(jobs, out)


def _check_batch_out(out: Path) -> None:
    if out.is_file() or out.suffix.lower() in (*OUTPUT_SUFFIXES, *VIDEO_OUTPUT_SUFFIXES):
        raise error(f"--out {out}: a batch writes into a folder; give a folder, e.g. --out results/")


def _pairs_jobs(task: str, pairs: Path, source: Path | None, out: Path, mask: Path | None) -> list[Job]:
    """Rows of a pairs file -> jobs; relative input paths are relative to the file, outputs to the --out folder."""
    rows = _read_pairs(pairs)
    if not rows:
        raise error(f"--pairs {pairs}: no rows; write a header source,target[,out] and one row per input")
    base = pairs.parent
    jobs = []
    for line, row in rows:
        if not row.get("target"):
            raise error(f"--pairs {pairs} row {line}: no target; every row needs a target (and a source for {task})")
        row_source = base / row["source"] if row.get("source") else source
        if task in SOURCE_TASKS and row_source is None:
            raise error(f"--pairs {pairs} row {line}: no source, and no --source to use instead")
        row_mask = base / row["mask"] if row.get("mask") else mask
        jobs.append(Job(base / row["target"], out / row["out"] if row.get("out") else Path(), row_source, row_mask))
    return _name_outputs(jobs, out)


def _read_pairs(pairs: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a .csv with a header, or of a .jsonl of objects."""
    suffix = pairs.suffix.lower()
    try:
        text = pairs.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"--pairs {pairs}: not a readable text file ({err})") from None
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "target" not in [f.strip() for f in reader.fieldnames]:
            raise error(f"--pairs {pairs}: the first line must be a header naming the columns, e.g. source,target,out")
        return [(i + 2, {k.strip(): (v or "").strip() for k, v in row.items() if k}) for i, row in enumerate(reader)]
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"--pairs {pairs} line {i}: not JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise error(f'--pairs {pairs} line {i}: expected an object like {{"source": ..., "target": ...}}')
            rows.append((i, {k: str(v) for k, v in row.items() if v is not None}))
        return rows
    raise error(f"--pairs {pairs}: give a .csv or a .jsonl file")


def _name_outputs(jobs: list[Job], out: Path) -> list[Job]:
    """Give the jobs without an output one in `out`: <target name>.png (.mp4 for a video). Where names would clash,
    the target's extension, then the source's name, then a number are added; two rows naming one output is an error."""
    named = [j.out for j in jobs if j.out != Path()]
    clash = next((o for o, n in Counter(named).items() if n > 1), None)
    if clash is not None:
        raise error(f"two rows write {clash}; give each row its own out")
    taken = {o.resolve() for o in named}
    by_stem: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        if job.out == Path():
            by_stem[job.target.stem].append(job)
    for stem, group in by_stem.items():
        several_kinds = len({j.target.suffix.lower() for j in group}) > 1
        several_sources = len({j.source for j in group}) > 1
        for job in group:
            name = stem + (f"_{job.target.suffix.lower().lstrip('.')}" if several_kinds else "")
            name += f"-{job.source.stem}" if several_sources and job.source is not None else ""
            suffix = ".mp4" if job.target.suffix.lower() in VIDEO_SUFFIXES else ".png"
            candidate, n = out / f"{name}{suffix}", 1
            while candidate.resolve() in taken:
                n += 1
                candidate = out / f"{name}-{n}{suffix}"
            taken.add(candidate.resolve())
            job.out = candidate
    return jobs


def _run_batch(
    pipe: Any,
    task: str,
    jobs: list[Job],
    like: Any,
    options: dict[str, Any],
    extra: dict[str, Any] | None,
    out: Path,
    overwrite: bool,
) -> None:
    """Every job on the loaded pipeline: a progress bar, one line per failure, the summary printed and saved."""
    from tqdm import tqdm

    from facex_model.pipeline import FaceMemo

    def note(message: str) -> None:
        tqdm.write(f"warning: {message}", file=sys.stderr)

    pipe.warn = note
    outcomes: list[Outcome] = []
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / f"{task}_summary.json"
    pending: list[Job] = []  # image jobs waiting for a full denoising batch
    sources = FaceMemo(pipe, SOURCE_CACHE)  # each source path's detected face (or why it has none), for the run

    def record_of(job: Job) -> Outcome:
        return Outcome(str(job.target), None if job.source is None else str(job.source), str(job.out), "written")

    def failed(record: Outcome, err: Exception) -> None:
        record.status, record.reason = "failed", _reason(err)
        tqdm.write(f"failed: {_named(record)}", file=sys.stderr)

    def flush() -> None:
        if not pending:
            return
        start = time.monotonic()
        errors = _run_image_jobs(pipe, task, pending, like, options, extra, sources)
        seconds = round((time.monotonic() - start) / len(pending), 2)
        for job, err in zip(pending, errors, strict=True):
            record = record_of(job)
            if err is not None:
                failed(record, err)
            record.seconds = seconds
            outcomes.append(record)
        bar.update(len(pending))
        pending.clear()

    try:
        with tqdm(total=len(jobs), desc=task, unit="input", file=sys.stderr) as bar:
            for job in jobs:
                image_of_source_task = task in SOURCE_TASKS and job.target.suffix.lower() not in VIDEO_SUFFIXES
                if image_of_source_task and (overwrite or not job.out.exists()):
                    pending.append(job)
                    if len(pending) >= options["batch_size"]:
                        flush()
                    continue
                flush()  # outcomes stay in the order of the jobs
                record = record_of(job)
                start = time.monotonic()
                if job.out.exists() and not overwrite:
                    record.status, record.reason = "skipped", "output already there (--overwrite redoes it)"
                else:
                    try:
                        _run_job(pipe, task, job, like, dict(options, progress=False), extra)
                    except Exception as err:  # one bad input is recorded and the batch goes on
                        failed(record, err)
                record.seconds = round(time.monotonic() - start, 2)
                outcomes.append(record)
                bar.update(1)
            flush()
    finally:
        _write_summary(summary_path, task, jobs, outcomes)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("written", "skipped", "failed")}
    typer.echo(f"{task}: {len(jobs)} inputs: {counts['written']} written, {counts['skipped']} kept from before, "
               f"{counts['failed']} failed; summary in {summary_path}")  # fmt: skip
    for o in outcomes:
        if o.status == "failed":
            typer.echo(f"  failed: {_named(o)}")
    if counts["failed"]:
        raise typer.Exit(1)


def _run_image_jobs(
    pipe: Any,
    task: str,
    jobs: list[Job],
    like: Any,
    options: dict[str, Any],
    extra: dict[str, Any] | None,
    sources: Any,
) -> list[Exception | None]:
    """Image jobs of a source task in one denoising batch: detect, generate, write; -> per job, the error that
    stopped it (a bad input stops only its own job; a failed batch, e.g. out of memory, all of its jobs) or None.

    `sources` (a FaceMemo) keeps each source image's detected face (or the error it raised) for the whole run: a
    folder of targets with one source detects that source once."""
    errors: list[Exception | None] = [None] * len(jobs)
    ready = []  # (job index, source face, target face)
    for k, job in enumerate(jobs):
        try:
            target = pipe.detect(job.target, "target", options["face_index"], like)
            source = sources.detect(str(job.source), job.source, "source", options["source_face_index"])
        except Exception as err:  # recorded with its reason, as in a one-by-one run
            errors[k] = err
            continue
        ready.append((k, source, target))
    if not ready:
        return errors
    try:
        outputs = pipe.generate_many(
            task, [(source, target) for _, source, target in ready], regions=(extra or {}).get("regions"),
            steps=options["steps"], cfg_scale=options["cfg_scale"], scheduler=options["scheduler"],
            seeds=[options["seed"]] * len(ready),
        )  # fmt: skip
    except Exception as err:  # the whole batch failed (e.g. out of memory: a smaller --batch-size)
        for k, _, _ in ready:
            errors[k] = err
        return errors
    for (k, _, _), output in zip(ready, outputs, strict=True):
        try:
            _write_output(jobs[k], output, options)
        except Exception as err:  # a file that could not be written
            errors[k] = err
    return errors


def _named(outcome: Outcome) -> str:
    """An outcome's reason, led by its input unless the reason already names it."""
    return outcome.reason if outcome.target in outcome.reason else f"{outcome.target}: {outcome.reason}"


def _reason(err: Exception) -> str:
    """One line saying why an input failed: the message of an input error, else the exception's type and message."""
    from facex_model.inputs import FaceXInputError

    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return first if isinstance(err, FaceXInputError) else f"{type(err).__name__}: {first}".rstrip(": ")


def _write_summary(path: Path, task: str, jobs: list[Job], outcomes: list[Outcome]) -> None:
    """<out>/<task>_summary.json: every input with its status (written, skipped, failed or not reached) and reason."""
    records = [asdict(o) for o in outcomes]
    records += [asdict(Outcome(str(j.target), None if j.source is None else str(j.source), str(j.out), "not reached",
                               "the run stopped before this input")) for j in jobs[len(outcomes):]]  # fmt: skip
    counts = {s: sum(r["status"] == s for r in records) for s in ("written", "skipped", "failed", "not reached")}
    tmp = path.with_name(f"{path.name}.partial")
    tmp.write_text(json.dumps({"task": task, "inputs": len(jobs), **counts, "records": records}, indent=1) + "\n")
    os.replace(tmp, path)


def register(app: typer.Typer) -> None:
    """Add the task commands and detect-watermark to the `facex` app (the ``facex.commands`` entry point)."""

    def face_task(task: str, doc: str) -> None:
        def command(
            out: OutOpt,
            source: SourceOpt = None,
            target: TargetOpt = None,
            pairs: PairsOpt = None,
            model: ModelOpt = None,
            steps: StepsOpt = 20,
            cfg: CfgOpt = 3.0,
            seed: SeedOpt = 0,
            scheduler: SchedOpt = "ddim",
            device: DeviceOpt = "cpu",
            grid: GridOpt = False,
            face_index: FaceOpt = None,
            target_face_like: LikeOpt = None,
            source_face_index: SrcFaceOpt = None,
            regions: RegionsOpt = None,
            no_watermark: NoWmOpt = False,
            resume: ResumeOpt = False,
            batch_size: BatchSizeOpt = 8,
            overwrite: OverwriteOpt = False,
            weights_dir: WeightsDirOpt = None,
            backbone: BackboneOpt = None,
        ) -> None:
            _run(task, locals(), {"regions": _regions(regions)} if regions else None)

        command.__doc__ = doc
        app.command(task)(command)

    face_task("swap", "Face swap: the source's face on the target (--regions eyes,nose: only those change).")
    face_task("headswap", "Head swap: the source's head (face, hair, ears) on the target's body and background.")
    face_task("reenact", "Reenactment: the source person with the target's (or a driving video's) pose and expression.")

    @app.command("animate")
    def animate(
        out: OutOpt,
        backbone: Annotated[
            Path, typer.Option("--backbone", help="SD-1.5 diffusers folder (unet/, vae/, scheduler/) to load instead")
        ],
        source: Annotated[Path | None, typer.Option("--source", help="the person to animate")] = None,
        target: TargetOpt = None,
        pairs: PairsOpt = None,
        model: ModelOpt = None,
        steps: StepsOpt = 20,
        cfg: CfgOpt = 3.0,
        seed: SeedOpt = 0,
        scheduler: SchedOpt = "ddim",
        device: DeviceOpt = "cpu",
        grid: GridOpt = False,
        face_index: FaceOpt = None,
        target_face_like: LikeOpt = None,
        source_face_index: SrcFaceOpt = None,
        no_watermark: NoWmOpt = False,
        resume: ResumeOpt = False,
        batch_size: BatchSizeOpt = 8,
        overwrite: OverwriteOpt = False,
        weights_dir: WeightsDirOpt = None,
    ) -> None:
        """Animation: reenactment on another (community) SD-1.5 U-Net loaded in place of the base one."""
        if not backbone.is_dir():
            raise error(f"--backbone {backbone}: folder not found (an SD-1.5 diffusers folder with unet/ and vae/)")
        _run("animate", locals())

    @app.command("edit")
    def edit(
        out: OutOpt,
        target: Annotated[
            Path | None, typer.Option("--target", help="the image to edit (a folder or glob: a batch)")
        ] = None,
        source: Annotated[Path | None, typer.Option("--source", help="image to take --regions from")] = None,
        regions: RegionsOpt = None,
        step: Annotated[
            list[str] | None,
            typer.Option("--edit", help="REGIONS=IMAGE, repeatable: mixed in one pass (or in turn: --sequential)"),
        ] = None,
        sequential: Annotated[bool, typer.Option("--sequential", help="apply --edit steps one after another")] = False,
        pairs: PairsOpt = None,
        model: ModelOpt = None,
        steps: StepsOpt = 20,
        cfg: CfgOpt = 3.0,
        seed: SeedOpt = 0,
        scheduler: SchedOpt = "ddim",
        device: DeviceOpt = "cpu",
        grid: GridOpt = False,
        face_index: FaceOpt = None,
        target_face_like: LikeOpt = None,
        no_watermark: NoWmOpt = False,
        overwrite: OverwriteOpt = False,
        weights_dir: WeightsDirOpt = None,
        backbone: BackboneOpt = None,
    ) -> None:
        """Region editing: take --regions (hair, eyes, brows, lips, nose, glasses, ...) from --source."""
        from facex_model.pipeline import Edit

        edits = []
        for item in step or []:
            names, _, image = item.partition("=")
            if not image:
                raise error(f"--edit {item}: expected REGIONS=IMAGE, e.g. eyes,brows=ref.jpg")
            _check_input(Path(image), "--edit")
            edits.append(Edit(tuple(_regions(names, f"--edit {item}") or ()), Path(image)))
        if not edits and ((source is None and pairs is None) or not regions):
            raise error("edit needs --source and --regions (or one or more --edit REGIONS=IMAGE)")
        extra = {"regions": _regions(regions), "edits": edits or None, "sequential": sequential}
        _run("edit", dict(locals(), source_face_index=None), extra)

    @app.command("inpaint")
    def inpaint(
        out: OutOpt,
        target: Annotated[
            Path | None, typer.Option("--target", help="the image to repaint (a folder or glob: a batch)")
        ] = None,
        mask: Annotated[
            Path | None, typer.Option("--mask", help="black/white image, white = repaint (over the face)")
        ] = None,
        pairs: PairsOpt = None,
        model: ModelOpt = None,
        steps: StepsOpt = 20,
        cfg: CfgOpt = 3.0,
        seed: SeedOpt = 0,
        scheduler: SchedOpt = "ddim",
        device: DeviceOpt = "cpu",
        grid: GridOpt = False,
        face_index: FaceOpt = None,
        target_face_like: LikeOpt = None,
        no_watermark: NoWmOpt = False,
        overwrite: OverwriteOpt = False,
        weights_dir: WeightsDirOpt = None,
        backbone: BackboneOpt = None,
    ) -> None:
        """Inpainting: regenerate the masked part of the target's face (a batch: one --mask, or a mask column)."""
        if mask is None and pairs is None:
            raise error("inpaint needs --mask (a black/white image, white = repaint)")
        _run("inpaint", dict(locals(), source=None, source_face_index=None))

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
        target=values.get("target"),
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
        batch_size=values.get("batch_size", 8),
        weights_dir=values.get("weights_dir"),
        target_face_like=values.get("target_face_like"),
        pairs=values.get("pairs"),
        overwrite=values.get("overwrite", False),
        mask=values.get("mask"),
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
