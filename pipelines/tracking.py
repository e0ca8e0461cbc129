"""What the stages record about a run, shared by the training and register stages: MLflow's store, git, DVC hashes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pipelines.config import REPO_ROOT, Params


def tracking_uri(params: Params) -> str:
    """$MLFLOW_TRACKING_URI if set (how a cluster points every job at its server), else `tracking.uri`;
    a relative sqlite path is made absolute against the repo. Where results are logged, never what they are."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str(REPO_ROOT / uri[len(prefix) :])
    return uri


def ensure_experiment(params: Params) -> str:
    """The MLflow experiment id for `tracking.experiment` (created with the local artifact root if new);
    ServerUnreachableError (a ConnectionError) at once where an http(s) server does not answer."""
    import mlflow

    from facex_model.mlflow_server import check_server

    check_server(tracking_uri(params))  # seconds, not MLflow's minutes of retries, to say a server is down
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
