"""pipelines/examples.py: one grid per model and task from the demo clips, watermarked, with an index."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import examples


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from facex_model.backbone import build_tiny_backbone
    from facex_model.model import FaceXConfig, FaceXModel

    root = tmp_path_factory.mktemp("models")
    backbone = build_tiny_backbone(root / "backbone", seed=0)
    torch.manual_seed(0)
    model = FaceXModel(FaceXConfig.tiny(backbone))
    for name in ("generalist", "reenact", "swap"):
        model.save_pretrained(root / name)
    return root


def test_examples_stage_writes_a_grid_per_model_and_task(models_dir, small_sample, tmp_path):
    from facex_model.watermark import detect

    out = tmp_path / "examples"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        argv = ["--models-dir", str(models_dir), "--clips-dir", str(small_sample), "--out", str(out), "--steps", "1"]
        assert examples.main(argv) == 0
    finally:
        torch.set_num_threads(previous)
    index = json.loads((out / "index.json").read_text())
    expected = {f"{m}_{t}.png" for m, tasks in examples.MODEL_TASKS.items() for t in tasks}
    assert set(index["grids"]) == expected
    for name in expected:
        with Image.open(out / name) as grid:
            assert grid.width in (3 * 256, 4 * 256) and grid.height == 256
            assert grid.text["Software"] == "FaceX"
            assert detect(np.asarray(grid.convert("RGB")))[0]


def test_examples_stage_without_models_says_what_to_run(small_sample, tmp_path, capsys):
    argv = ["--models-dir", str(tmp_path / "none"), "--clips-dir", str(small_sample), "--out", str(tmp_path / "o")]
    assert examples.main(argv) == 2
    assert "run the training stages first" in capsys.readouterr().err
