"""DVC stages `train_generalist` and `finetune@<task>`: train FaceX with Ray Train, tracked in MLflow.

    python pipelines/train.py generalist [--params params.yaml]      # head-swap assembly (paper §3.5)
    python pipelines/train.py reenact    [--params params.yaml]      # specialists start from the generalist
    python pipelines/train.py swap       [--params params.yaml]

Reads `train.shards` (the extract stage's output, minus the held-out clips, `split.holdout_every`),
trains for `train.generalist_steps` / `train.specialist_steps[<task>]` on `compute.num_workers`
workers, and writes the model to `train.out_dir`/<stage>/ (config.json + facex_trainable.safetensors
+ train_metrics.json). Checkpoints live under `train.checkpoint_dir`: killing the job and running
the same command again resumes from the last checkpoint. One MLflow run per stage (params, git
commit, the shards' DVC hash, per-step metrics, sample grids) in `tracking.uri`.

Without a cluster it starts a local Ray and stops it at the end; under `ray job submit` (RAY_ADDRESS
set) it runs on that cluster:

    ray job submit --working-dir . -- python pipelines/train.py generalist --params params/celebvhq-sd15.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (DVC, ray job submit): make `pipelines` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import REPO_ROOT, Params, ParamsError, load_params  # noqa: E402
from pipelines.stage_clock import timed  # noqa: E402
from pipelines.tracking import dvc_hash, ensure_experiment, git_commit, tracking_uri  # noqa: E402


def resolve_backbone(params: Params) -> tuple[Path, Path | None]:
    """(backbone folder, CLIP vision folder or None = <backbone>/clip_vision) from `train.backbone` /
    `train.vision_encoder`: the pretrain stage's output in the embedded profile, SD-1.5 in the real one."""
    train = params.train
    if not (train.backbone / "unet").is_dir():
        raise ParamsError(
            f"train.backbone: {train.backbone} has no unet/ folder: run the pretrain stage (dvc repro pretrain), "
            "or point it at a Stable Diffusion 1.5 diffusers folder (README 'Real data and weights')"
        )
    clip = train.vision_encoder
    if clip is not None and not (clip / "config.json").is_file():
        raise ParamsError(f"train.vision_encoder: {clip}/config.json not found; put CLIP ViT-L/14's folder there")
    if clip is None and not (train.backbone / "clip_vision" / "config.json").is_file():
        raise ParamsError(f"train.vision_encoder is not set and {train.backbone}/clip_vision/ has no config.json")
    return train.backbone, clip


def checkpoint_storage(params: Params) -> str:
    """Ray Train's storage_path: `train.checkpoint_dir` (a local path, relative to the repo, or s3:// / gs://)."""
    where = params.train.checkpoint_dir
    if "://" in where or Path(where).is_absolute():
        return where
    return str(REPO_ROOT / where)


def model_config(params: Params, stage: str, task: str) -> tuple[dict, str | None]:
    """(the complete FaceXConfig json this stage trains, the model dir it starts from or None).

    The generalist: `train.model`'s sizes on the backbone, with the dimensions the shards' extractor backend fixes.
    A specialist: the generalist's config with this stage's task, starting from the generalist's weights."""
    from dataclasses import asdict, replace

    from facex_data.layout import shard_backend
    from facex_model.features import backend_config
    from facex_model.model import FaceXConfig, FaceXModel

    train = params.train
    backbone, clip = resolve_backbone(params)
    fixed = {"backbone_path": str(backbone), "clip_path": str(clip) if clip else None, "task": task,
             "cond_drop_prob": train.cond_drop_prob, "resolution": train.resolution}  # fmt: skip
    if stage == "generalist":
        backend = backend_config(shard_backend(train.shards))
        return FaceXConfig(**asdict(train.model), **backend, **fixed).to_json(), None
    init_from = train.out_dir / "generalist"
    try:
        generalist = FaceXModel.read_config(init_from)
    except FileNotFoundError as err:
        raise ParamsError(f"{init_from}: no generalist model; run the train_generalist stage first") from err
    return replace(generalist, **fixed).to_json(), str(init_from)


def build_job(params: Params, stage: str, out_dir: Path | None = None) -> tuple:
    """The TrainJob for a stage, plus its MLflow params."""
    from facex_data.layout import holdout_clips, written_clips
    from facex_train.train import DEFAULT_TASK, TrainJob

    train = params.train
    if stage == "generalist":
        steps = train.generalist_steps
    elif stage in train.specialist_steps:
        steps = train.specialist_steps[stage]
    else:
        known = ", ".join(["generalist", *train.specialist_steps])
        raise ParamsError(f"unknown training stage {stage!r}; known: {known} (train.specialist_steps)")
    clips = written_clips(train.shards)
    holdout = sorted(holdout_clips(clips, params.split.holdout_every))
    task = DEFAULT_TASK.get(stage, stage)
    model, init_from = model_config(params, stage, task)
    job = TrainJob(
        name=stage, task=task, steps=steps, model_config=model, train=train, compute=params.compute,
        init_from=init_from, holdout=holdout, model_dir=str(out_dir or train.out_dir / stage),
        storage_path=checkpoint_storage(params),
        tracking_uri=tracking_uri(params),
    )  # fmt: skip
    run_params = {
        "stage": stage,
        "task": job.task,
        "steps": steps,
        "init_from": init_from or "",
        "backbone": str(params.train.backbone),
        "vision_encoder": str(params.train.vision_encoder or ""),
        "extractors": model["extractors"],
        "train_clips": len(clips) - len(holdout),
        "heldout_clips": len(holdout),
        **{f"train.{k}": v for k, v in dataclasses.asdict(train).items() if k not in ("specialist_steps", "model")},
        **{f"train.model.{k}": v for k, v in dataclasses.asdict(train.model).items()},
        **{f"compute.{k}": v for k, v in dataclasses.asdict(params.compute).items()},
    }
    return job, run_params


def _tracked(run_id: str) -> bool:
    """Whether the active tracking store holds this run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient().get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", help="generalist, or a specialist named in train.specialist_steps")
    parser.add_argument("--params", help="params file (default: $FACEX_PARAMS or params.yaml)")
    parser.add_argument("--out", type=Path, help="model dir to write (default data/models/<stage>)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, check_inputs=("train",))
        job, run_params = build_job(params, args.stage, args.out)
    except (ParamsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import mlflow

    from facex_train.train import fit, ray_session

    try:
        experiment = ensure_experiment(params)
    except ConnectionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # a resumed job continues its MLflow run (the id is kept beside the checkpoints when they are local)
    local = "://" not in job.storage_path
    run_name = job.run_name()  # reads the input folders' ends: once here (fit names the Ray run the same way)
    resume_file = Path(job.storage_path) / run_name / "mlflow_run_id"
    run_id = resume_file.read_text().strip() if local and resume_file.is_file() else None
    if run_id is not None and not _tracked(run_id):
        print(f"{resume_file} names MLflow run {run_id}, which {job.tracking_uri} does not hold (a new or another "
              "tracking store): the resumed training logs to a new run", file=sys.stderr)  # fmt: skip
        run_id = None
    with mlflow.start_run(run_id=run_id, experiment_id=experiment, run_name=args.stage) as run:
        if local:
            resume_file.parent.mkdir(parents=True, exist_ok=True)
            resume_file.write_text(run.info.run_id)
        if run_id is None:
            mlflow.log_params(run_params)
            mlflow.set_tags(
                {"git_commit": git_commit(), "dvc.shards_md5": dvc_hash(job.train.shards), "facex.stage": args.stage,
                 "ray_train.run_name": run_name}
            )  # fmt: skip
        job.mlflow_run_id = run.info.run_id
        with ray_session(job.compute.num_workers):
            summary = fit(job)
        if summary.get("heldout_loss") is not None:
            mlflow.log_metric("final_heldout_loss", summary["heldout_loss"])
        mlflow.log_artifacts(job.model_dir, artifact_path="model")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("losses", "timings")}, indent=1))
    print(f"model in {job.model_dir}; MLflow run {run.info.run_id} in {job.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(timed(main))
