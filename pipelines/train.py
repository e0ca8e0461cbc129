"""DVC stages `train_generalist` and `finetune@<task>`: train FaceX with Ray Train, tracked in MLflow.

    python pipelines/train.py generalist [--params params.yaml]      # head-swap assembly (paper §3.5)
    python pipelines/train.py reenact    [--params params.yaml]      # specialists start from the generalist
    python pipelines/train.py swap       [--params params.yaml]

Reads the extract stage's shards (minus the held-out clips, `split.holdout_every`), trains for
`train.generalist_steps` / `train.specialist_steps[<task>]` on `compute.num_workers` workers, and
writes the model to data/models/<stage>/ (config.json + facex_trainable.safetensors +
train_metrics.json). Checkpoints live under .work/ray_train/: killing the job and running the same
command again resumes from the last checkpoint. One MLflow run per stage (params, git commit, the
shards' DVC hash, per-step metrics, sample grids) in `tracking.uri`.

Without a cluster it starts a local Ray and stops it at the end; under `ray job submit` (RAY_ADDRESS
set) it runs on that cluster:

    ray job submit --working-dir . -- python pipelines/train.py generalist --params params/celebvhq-sd15.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (DVC, ray job submit): make `pipelines` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import REPO_ROOT, Params, ParamsError, load_params  # noqa: E402

TINY_BACKBONE = "tiny-sd15"  # models.backbone: tiny is built once into the models dir under this name


def resolve_backbone(params: Params) -> tuple[Path, Path | None]:
    """(backbone folder, CLIP folder or None): the tiny stand-in (built once, deterministically) or the models dir's."""
    models = params.models
    models_dir = Path(os.environ.get("FACEX_MODELS_DIR", models.dir))
    if models.backbone == "tiny":
        from facex_model.backbone import build_tiny_backbone

        backbone = models_dir / TINY_BACKBONE
        if not (backbone / "unet").is_dir():
            build_tiny_backbone(backbone, seed=0)  # deterministic: every machine builds the same one
    else:
        backbone = models_dir / models.backbone
        if not (backbone / "unet").is_dir():
            raise ParamsError(
                f"models.backbone: {backbone} has no unet/ folder; put the diffusers SD-1.5 folder there "
                "(README 'Real data and weights')"
            )
    clip = None
    if models.vision_encoder != "tiny":
        clip = models_dir / models.vision_encoder
        if not (clip / "config.json").is_file():
            raise ParamsError(f"models.vision_encoder: {clip}/config.json not found; put CLIP ViT-L/14 there")
    return backbone, clip


def checkpoint_storage(params: Params) -> str:
    """Ray Train's storage_path: `train.checkpoint_dir` (a local path, relative to the repo, or s3:// / gs://)."""
    where = params.train.checkpoint_dir
    if "://" in where or Path(where).is_absolute():
        return where
    return str(REPO_ROOT / where)


def tracking_uri(params: Params) -> str:
    """$MLFLOW_TRACKING_URI if set (how a cluster points every job at its server), else `tracking.uri`;
    a relative sqlite path is made absolute against the repo."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str(REPO_ROOT / uri[len(prefix) :])
    return uri


def ensure_experiment(params: Params) -> str:
    """The MLflow experiment id for `tracking.experiment` (created with the local artifact root if new)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(params))
    found = mlflow.get_experiment_by_name(params.tracking.experiment)
    if found is not None:
        return found.experiment_id
    location = None
    if tracking_uri(params).startswith("sqlite:"):
        location = Path(params.tracking.artifact_dir).resolve().as_uri()
    return mlflow.create_experiment(params.tracking.experiment, artifact_location=location)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_hash(path: Path) -> str:
    """The DVC md5 of a stage output as recorded in dvc.lock ('unknown' outside DVC)."""
    lock = REPO_ROOT / "dvc.lock"
    if not lock.is_file():
        return "unknown"
    import yaml

    rel = os.path.relpath(path, REPO_ROOT)
    for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
        for out in stage.get("outs", []):
            if out.get("path") == rel:
                return str(out.get("md5", "unknown"))
    return "unknown"


def build_job(params: Params, stage: str, out_dir: Path | None = None) -> tuple:
    """The TrainJob for a stage, plus its MLflow params."""
    from facex_model import features
    from facex_model.train import DEFAULT_TASK, TrainJob

    train, compute = params.train, params.compute
    models_out = Path(params.evaluate.models_dir)  # one place for the model folders (evaluate/register read them)
    if stage == "generalist":
        steps, init_from = train.generalist_steps, None
    elif stage in train.specialist_steps:
        steps, init_from = train.specialist_steps[stage], str(models_out / "generalist")
        if not (Path(init_from) / "config.json").is_file():
            raise ParamsError(f"{init_from}: no generalist model; run the train_generalist stage first")
    else:
        known = ", ".join(["generalist", *train.specialist_steps])
        raise ParamsError(f"unknown training stage {stage!r}; known: {known} (train.specialist_steps)")
    shards = Path(params.extract.out_dir)
    clips = features.written_clips(shards)
    holdout = sorted(features.holdout_clips(clips, params.split.holdout_every))
    backbone, clip = resolve_backbone(params)
    overrides = features.config_overrides_for_backend(features.shard_backend(shards))
    if params.models.backbone == "tiny":
        from facex_model.model import FaceXConfig

        tiny = FaceXConfig.tiny(backbone).to_json()
        overrides = {k: tiny[k] for k in tiny if k not in ("backbone_path", "clip_path")} | overrides
    overrides["extractors"] = features.shard_backend(shards)
    job = TrainJob(
        name=stage,
        task=DEFAULT_TASK.get(stage, stage),
        shards=str(shards),
        out_dir=str(out_dir or models_out / stage),
        storage_path=checkpoint_storage(params),
        backbone_path=str(backbone),
        clip_path=str(clip) if clip else None,
        init_from=init_from,
        model_overrides=overrides,
        steps=steps,
        batch_size=train.batch_size,
        grad_accum=train.grad_accum,
        learning_rate=train.learning_rate,
        warmup_steps=train.warmup_steps,
        max_grad_norm=train.max_grad_norm,
        ema_decay=train.ema_decay,
        gradient_checkpointing=train.gradient_checkpointing,
        snr_gamma=train.snr_gamma,
        mixed_precision=compute.mixed_precision,
        cond_drop_prob=train.cond_drop_prob,
        resolution=train.resolution,
        min_gap=train.min_gap,
        max_gap=train.max_gap,
        pairs_per_clip=train.pairs_per_clip,
        prefetch=train.prefetch,
        cache_mb=train.cache_mb,
        holdout=holdout,
        checkpoint_every=train.checkpoint_every,
        image_every=train.image_every,
        seed=train.seed,
        num_workers=compute.num_workers,
        use_gpu=compute.use_gpu,
        max_failures=train.max_failures,
        tracking_uri=tracking_uri(params),
    )
    run_params = {
        "stage": stage,
        "task": job.task,
        "steps": steps,
        "init_from": init_from or "",
        "backbone": params.models.backbone,
        "vision_encoder": params.models.vision_encoder,
        "extractors": overrides["extractors"],
        "train_clips": len(clips) - len(holdout),
        "heldout_clips": len(holdout),
        **{f"train.{k}": v for k, v in dataclasses.asdict(train).items() if k not in ("specialist_steps",)},
        **{f"compute.{k}": v for k, v in dataclasses.asdict(compute).items()},
    }
    return job, run_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", help="generalist, or a specialist named in train.specialist_steps")
    parser.add_argument("--params", help="params file (default: $FACEX_PARAMS or params.yaml)")
    parser.add_argument("--out", type=Path, help="model dir to write (default data/models/<stage>)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, check_inputs=())
        job, run_params = build_job(params, args.stage, args.out)
    except (ParamsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import mlflow
    import ray

    from facex_model.train import fit

    experiment = ensure_experiment(params)
    # a resumed job continues its MLflow run (the id is kept beside the checkpoints when they are local)
    local = "://" not in job.storage_path
    resume_file = Path(job.storage_path) / job.run_name() / "mlflow_run_id"
    run_id = resume_file.read_text().strip() if local and resume_file.is_file() else None
    with mlflow.start_run(run_id=run_id, experiment_id=experiment, run_name=args.stage) as run:
        if local:
            resume_file.parent.mkdir(parents=True, exist_ok=True)
            resume_file.write_text(run.info.run_id)
        if run_id is None:
            mlflow.log_params(run_params)
            mlflow.set_tags(
                {"git_commit": git_commit(), "dvc.shards_md5": dvc_hash(Path(job.shards)), "facex.stage": args.stage,
                 "ray_train.run_name": job.run_name()}
            )  # fmt: skip
        job.mlflow_run_id = run.info.run_id
        started_here = not ray.is_initialized()
        if started_here:
            if os.environ.get("RAY_ADDRESS"):
                ray.init(log_to_driver=True)
            else:
                ray.init(num_cpus=max(job.num_workers, os.cpu_count() or 1), include_dashboard=False)
        try:
            summary = fit(job)
        finally:
            if started_here:
                ray.shutdown()
        if summary.get("heldout_loss") is not None:
            mlflow.log_metric("final_heldout_loss", summary["heldout_loss"])
        mlflow.log_artifacts(job.out_dir, artifact_path="model")
    print(json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=1))
    print(f"model in {job.out_dir}; MLflow run {run.info.run_id} in {job.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
