"""The register stage against a real `mlflow server`: versions, the champion alias on merit, load by alias."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import face_change
from tests.infra.test_mlflow_postgres import MlflowServer

pytestmark = [pytest.mark.slow, pytest.mark.real]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, real_data):
    """Two tiny trained-model folders, two real faces, and a params file pointing at a fresh server."""
    from PIL import Image

    from facex_model.backbone import build_tiny_backbone
    from facex_model.model import FaceXConfig, FaceXModel

    root = tmp_path_factory.mktemp("register")
    backbone = build_tiny_backbone(root / "backbone", seed=0)
    for name in ("generalist", "swap"):
        torch.manual_seed(0)
        FaceXModel(FaceXConfig.tiny(backbone)).save_pretrained(root / "models" / name)
        (root / "models" / name / "train_metrics.json").write_text(json.dumps({"heldout_loss": 0.5}))
    faces = {}
    for role, file in (("source", "portrait_02.jpg"), ("target", "portrait_05.jpg")):
        faces[role] = root / f"{role}.png"
        Image.open(real_data / "images" / file).convert("RGB").resize((256, 240)).save(faces[role])
    server = MlflowServer(f"sqlite:///{root}/mlflow.db", root / "artifacts")
    server.start()
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({
        "tracking": {"uri": server.uri, "experiment": "facex-register-test", "model_prefix": "facex"},
        "register": {"models_dir": str(root / "models"), "models": ["generalist", "swap"],
                     "metrics": str(root / "metrics" / "metrics.json")},
    }))  # fmt: skip
    try:
        yield root, params, server, faces
    finally:
        server.stop()


def _metrics(root: Path, swap_score: float) -> None:
    (root / "metrics").mkdir(exist_ok=True)
    metrics = {
        "generalist": {"headline": {"name": "self_reconstruction.psnr", "value": 20.0, "higher_is_better": True}},
        "swap": {"headline": {"name": "swap.score", "value": swap_score, "higher_is_better": True}},
    }
    (root / "metrics" / "metrics.json").write_text(json.dumps(metrics))


def _register(root: Path, params: Path, tag: str) -> dict:
    from pipelines.register import main

    out = root / f"registry-{tag}.json"
    assert main(["--params", str(params), "--out", str(out)]) == 0
    return json.loads(out.read_text())["models"]


def test_versions_and_champion_move_only_on_a_better_metric(setup, monkeypatch):
    import mlflow

    from facex_model.pyfunc import decode_png

    root, params, server, faces = setup
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)

    _metrics(root, swap_score=0.2)
    first = _register(root, params, "1")
    assert first["swap"]["version"] == "1" and first["swap"]["champion_moved"]
    assert first["generalist"]["headline"]["name"] == "self_reconstruction.psnr"

    _metrics(root, swap_score=0.1)  # worse: a new version, the champion stays
    second = _register(root, params, "2")
    assert second["swap"]["version"] == "2" and not second["swap"]["champion_moved"]
    assert second["generalist"]["champion_moved"]  # equal counts as at least as good
    client = mlflow.MlflowClient(server.uri)
    assert client.get_model_version_by_alias("facex-swap", "champion").version == "1"

    _metrics(root, swap_score=0.3)  # better: the alias moves
    third = _register(root, params, "3")
    assert third["swap"]["champion_moved"]
    champion = client.get_model_version_by_alias("facex-swap", "champion")
    assert champion.version == "3" and champion.tags["headline.value"] == "0.3"
    assert sorted(v.version for v in client.search_model_versions("name='facex-swap'")) == ["1", "2", "3"]

    model = mlflow.pyfunc.load_model("models:/facex-swap@champion")
    out = model.predict({"task": "swap", "source": str(faces["source"]), "target": str(faces["target"]), "steps": 1})
    image = decode_png(out["image"][0])
    assert image.size == (256, 240)
    inside, frame = face_change(image, faces["target"])
    assert inside > 8 and frame < 4  # the face was generated anew, the rest of the target kept


def test_held_out_loss_is_the_fallback_headline(setup, tmp_path):
    from pipelines.register import at_least_as_good, headline_for

    root, *_ = setup
    head = headline_for("swap", root / "models" / "swap", tmp_path / "no-metrics.json")
    assert head == {**head, "name": "heldout_loss", "value": 0.5, "higher_is_better": False}
    lower = {"name": "heldout_loss", "value": 0.4, "higher_is_better": False}
    assert at_least_as_good(lower, head)[0] and not at_least_as_good(head, lower)[0]
    assert not at_least_as_good({**lower, "value": float("nan")}, head)[0]


def test_a_tracking_server_that_is_down_is_one_error_line_at_once(tmp_path, capsys):
    """Not MLflow's minutes of connection retries followed by a traceback."""
    from pipelines.register import main
    from tests.helpers import free_port

    (tmp_path / "models" / "swap").mkdir(parents=True)
    (tmp_path / "models" / "swap" / "config.json").write_text("{}")
    dead = f"http://127.0.0.1:{free_port()}"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "tracking": {"uri": dead, "experiment": "facex-register-test", "model_prefix": "facex"},
        "register": {"models_dir": str(tmp_path / "models"), "models": ["swap"],
                     "metrics": str(tmp_path / "metrics.json")},
    }))  # fmt: skip
    assert main(["--params", str(params), "--out", str(tmp_path / "registry.json")]) == 2
    assert f"error: the MLflow server at {dead} does not answer" in capsys.readouterr().err
    assert not (tmp_path / "registry.json").exists()
