"""The training stage's driver: what it does about an MLflow run named beside the Ray checkpoints."""

from __future__ import annotations

import mlflow

from pipelines.train import _tracked


def test_a_resume_file_naming_a_run_the_tracking_store_lacks_starts_a_new_run(tmp_path):
    """A run id kept beside the checkpoints is resumed where the store holds it, and ignored where it does not (the
    store was reset or the params point at another): mlflow.start_run(run_id=...) would raise there."""
    first, second = (f"sqlite:///{tmp_path / name}" for name in ("first.db", "second.db"))
    client = mlflow.MlflowClient(tracking_uri=first)
    run = client.create_run(client.create_experiment("facex"))
    previous = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(first)
        assert _tracked(run.info.run_id)
        mlflow.set_tracking_uri(second)
        assert not _tracked(run.info.run_id)
    finally:
        mlflow.set_tracking_uri(previous)
