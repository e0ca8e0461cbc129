"""The MLflow pyfunc: log + register a saved model folder, load it by alias, predict from paths and base64."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from facex_model import pyfunc


@pytest.fixture(scope="module")
def registry(tmp_path_factory, model_dir):
    """A local sqlite tracking store + registry with the tiny model logged as facex-swap@champion."""
    import mlflow
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    mlflow.set_tracking_uri(f"sqlite:///{root}/db")
    mlflow.set_registry_uri(f"sqlite:///{root}/db")  # a registry URI an earlier test left set (register) would win
    mlflow.set_experiment("facex-test")  # the URIs go back after the module (tests/conftest.py)
    with mlflow.start_run():
        info = pyfunc.log_model(model_dir, "model", registered_model_name="facex-swap")
    MlflowClient().set_registered_model_alias("facex-swap", "champion", info.registered_model_version)
    return info


def test_logged_artifacts_are_the_model_folder(registry, model_dir):
    from facex_model.pipeline import download_model_dir

    local = download_model_dir("models:/facex-swap@champion")
    assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in model_dir.iterdir())
    assert (local / "config.json").read_text() == (model_dir / "config.json").read_text()


@pytest.mark.real
def test_predict_from_paths_and_base64_returns_watermarked_pngs(registry, photos):
    import mlflow

    from facex_model.watermark import detect

    model = mlflow.pyfunc.load_model("models:/facex-swap@champion")
    source_b64 = base64.b64encode(photos["source"].read_bytes()).decode()
    frame = pd.DataFrame(
        [
            {"task": "swap", "source": str(photos["source"]), "target": str(photos["target"]), "steps": 1},
            {"task": "reenact", "source": source_b64, "target": str(photos["target"]), "steps": 1, "seed": 3},
        ]
    )
    out = model.predict(frame)
    assert list(out.columns) == ["image", "error"] and len(out) == 2 and out["error"].isna().all()
    for data in out["image"]:
        image = pyfunc.decode_png(data)
        assert image.size == (320, 288)
        assert image.text["Software"] == "FaceX"
        assert detect(np.asarray(image.convert("RGB")))[0]
    single = model.predict({"task": "swap", "source": str(photos["source"]), "target": str(photos["target"]),
                            "steps": 1})  # fmt: skip
    assert len(single) == 1


@pytest.mark.real
def test_pipeline_loads_a_registry_uri(registry, photos):
    from facex_model.pipeline import FaceXInputError, FaceXPipeline

    pipe = FaceXPipeline.from_pretrained("models:/facex-swap@champion")
    assert pipe("swap", photos["source"], photos["target"], steps=1).image.size == (320, 288)
    with pytest.raises(FaceXInputError, match="models:/facex-nope@champion: not found in the registry"):
        FaceXPipeline.from_pretrained("models:/facex-nope@champion")


def test_a_model_loaded_on_another_machine_takes_its_backbone_path_from_model_config(
    registry, model_dir, tiny_backbone, tmp_path, monkeypatch
):
    """config.json names the training machine's backbone; the loader says where it is here (load_model's model_config,
    or MLFLOW_PYFUNC_INFERENCE_CONFIG for `mlflow models serve`), and without it the error says how."""
    import json
    import shutil

    import mlflow
    from safetensors.torch import load_file

    from facex_model.model import WEIGHTS_NAME

    moved = shutil.copytree(model_dir, tmp_path / "model")
    config = json.loads((moved / "config.json").read_text())
    config["backbone_path"] = str(tmp_path / "training-host" / "backbone")
    (moved / "config.json").write_text(json.dumps(config))
    with mlflow.start_run():
        uri = pyfunc.log_model(moved, "moved").model_uri

    with pytest.raises(FileNotFoundError, match=r"training-host/backbone/unet.*model_config=\{'backbone_path'"):
        mlflow.pyfunc.load_model(uri)

    loaded = mlflow.pyfunc.load_model(uri, model_config={"backbone_path": str(tiny_backbone), "device": "cpu"})
    pipeline = loaded.unwrap_python_model().pipeline
    assert pipeline.model.config.backbone_path == str(tiny_backbone)
    assert pipeline.model.config.clip_path is None  # <backbone_path>/clip_vision
    saved = load_file(model_dir / WEIGHTS_NAME)
    own = pipeline.model.trainable_state_dict()
    assert sorted(own) == sorted(saved) and all(torch.equal(own[k], saved[k]) for k in saved)

    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", json.dumps({"backbone_path": str(tiny_backbone)}))
    served = mlflow.pyfunc.load_model(uri).unwrap_python_model().pipeline
    assert served.model.config.backbone_path == str(tiny_backbone)


@pytest.mark.real
def test_rows_with_the_same_settings_share_a_denoising_batch_and_give_what_one_row_gives(registry, photos,
                                                                                       unet_batches):  # fmt: skip
    import mlflow

    model = mlflow.pyfunc.load_model("models:/facex-swap@champion", model_config={"batch_size": 2})
    s, t = str(photos["source"]), str(photos["target"])
    requests = [
        {"task": "swap", "source": s, "target": t, "steps": 1, "seed": 1},
        {"task": "reenact", "source": s, "target": t, "steps": 1, "seed": 1},
        {"task": "swap", "source": t, "target": s, "steps": 1, "seed": 2},
        {"task": "swap", "source": s, "target": t, "steps": 1, "seed": 3},
    ]
    together = model.predict(pd.DataFrame(requests))["image"]
    assert sorted(unet_batches) == [1, 1, 2]  # swap rows: a batch of 2 and one of 1; the reenact row alone
    for request, data in zip(requests, together, strict=True):
        alone = model.predict(request)["image"][0]
        a, b = (np.asarray(pyfunc.decode_png(d).convert("RGB"), np.int16) for d in (data, alone))
        assert a.shape == b.shape and np.abs(a - b).mean() < 0.05  # each row in its place, float rounding at most
        assert np.abs(a - b).max() <= 8  # (a rounding step can move one watermark block's coefficients)
    assert not np.array_equal(*(np.asarray(pyfunc.decode_png(together[i])) for i in (0, 3)))  # seeds 1 and 3


@pytest.mark.real
def test_a_bad_row_gets_its_reason_the_others_their_images_and_a_shared_image_is_detected_once(
    registry, photos, monkeypatch
):
    import mlflow

    model = mlflow.pyfunc.load_model("models:/facex-swap@champion", model_config={"batch_size": 4})
    pipeline = model.unwrap_python_model().pipeline
    detected: list[str] = []
    detect = pipeline.detect
    monkeypatch.setattr(pipeline, "detect", lambda image, name="image", *a, **k: detected.append(name)
                        or detect(image, name, *a, **k))  # fmt: skip
    source = base64.b64encode(photos["source"].read_bytes()).decode()  # the same base64 text in four rows
    target = str(photos["target"])
    requests = [
        {"task": "swap", "source": source, "target": target, "steps": 1, "seed": 1},
        {"task": "swap", "source": source, "target": str(photos["dog_01.jpg"]), "steps": 1},
        {"task": "swap", "source": "not an image", "target": target, "steps": 1},
        {"task": "swap", "source": source, "target": target, "steps": 1, "seed": 2},
        {"task": "swap", "source": source, "target": target, "regions": "eyez", "steps": 1},
        {"task": "inpaint", "target": target, "steps": 1},
    ]
    out = model.predict(pd.DataFrame(requests))
    assert list(out.columns) == ["image", "error"] and len(out) == len(requests)
    assert list(out["error"].isna()) == [True, False, False, True, False, False]
    errors = list(out["error"])
    assert "no face found in target" in errors[1] and "dog_01.jpg" in errors[1]
    assert "neither an image path nor a base64-encoded image" in errors[2]
    assert "unknown region(s) eyez" in errors[4] and "needs a mask" in errors[5]
    assert list(out["image"].isna()) == [False, True, True, False, True, True]
    made = [np.asarray(pyfunc.decode_png(out["image"][i]).convert("RGB")) for i in (0, 3)]
    assert made[0].shape == (288, 320, 3) and not np.array_equal(*made)  # seeds 1 and 2
    # the source once for the four rows that share it, the photo target once for three, the dog once (the inpaint
    # row detects its target on its own before it is refused)
    assert sorted(detected) == ["source", "target", "target", "target"]


def test_a_folder_naming_its_backbone_relatively_is_logged_with_the_absolute_path(registry, model_dir, tiny_backbone,
                                                                                   tmp_path):  # fmt: skip
    """The pipeline's model folders name their backbone relative to themselves; the registry's copy lies elsewhere,
    so it is logged naming the backbone absolutely and loads on this machine without a model_config."""
    import dataclasses
    import json
    import shutil

    import mlflow

    from facex_model.model import FaceXModel, write_config

    backbone = shutil.copytree(tiny_backbone, tmp_path / "data" / "backbone")
    folder = shutil.copytree(model_dir, tmp_path / "data" / "models" / "swap")
    config = FaceXModel.read_config(folder)
    write_config(folder, dataclasses.replace(config, backbone_path=str(backbone)), relative_paths=True)
    assert json.loads((folder / "config.json").read_text())["backbone_path"] == "../../backbone"
    with mlflow.start_run():
        uri = pyfunc.log_model(folder, "relative").model_uri

    loaded = mlflow.pyfunc.load_model(uri).unwrap_python_model().pipeline
    assert loaded.model.config.backbone_path == str(backbone)
    logged = next(Path(mlflow.artifacts.download_artifacts(uri)).rglob("config.json"))
    assert json.loads(logged.read_text())["backbone_path"] == str(backbone)
    assert json.loads((folder / "config.json").read_text())["backbone_path"] == "../../backbone"  # left as it was
