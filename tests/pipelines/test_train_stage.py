"""The training stage's driver: what it does about an MLflow run named beside the Ray checkpoints."""

from __future__ import annotations

import mlflow

from pipelines.train import _tracked


def test_a_resume_file_naming_a_run_the_tracking_store_lacks_starts_a_new_run(tmp_path):
    """A run id kept beside the checkpoints is resumed where the store holds it, and ignored where it does not (the
    store was reset or the params point at another): mlflow.start_run(run_id=...) would raise there."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'first.db'}")
    with mlflow.start_run() as run:
        pass
    assert _tracked(run.info.run_id)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'second.db'}")
    assert not _tracked(run.info.run_id)
