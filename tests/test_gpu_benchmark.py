"""benchmarks/gpu.py cannot rot: every section runs at tiny shapes on the CPU and fills its table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu.py"


def run(*args: str, out: Path, returncode: int = 0) -> dict:
    env = {**os.environ, "OUT": str(out), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                            timeout=900)  # fmt: skip
    assert result.returncode == returncode, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / ("gpu_learn.json" if "--learn" in args else "gpu_benchmark.json")).read_text())


@pytest.mark.slow
@pytest.mark.parametrize("precision", [(), ("--bf16",)], ids=["fp32", "gpu-dtypes"])
def test_smoke_fills_every_speed_section(tmp_path, precision):
    """--bf16 runs the GPU's precision path (bf16 autocast in training, bf16 weights in inference, fp16 extractors)
    on the CPU: the dtype mix a GPU run meets is checked here, not first on a lent GPU's few minutes."""
    table = run("--smoke", *precision, out=tmp_path)
    assert table["bf16"] == table["gpu_dtypes"] == bool(precision)
    sections = {r["section"] for r in table["rows"]}
    assert {"device", "train", "infer", "extract", "total"} <= sections
    assert all(r["value"] is not None for r in table["rows"]), [r for r in table["rows"] if r["value"] is None]
    whats = " | ".join(r["what"] for r in table["rows"])
    for needed in ("precomputed latents: samples/s", "MFU", "FaceX / plain U-Net step", "FaceX / diffusers per step",
                   "the four together", "FaceX step, micro-batch 2: aten calls per step",
                   "plain U-Net step, micro-batch 2: aten calls per step"):  # fmt: skip
        assert needed in whats, needed
    assert any("goal" in r["goal"] for r in table["rows"])
    assert "FaceX step, micro-batch 2" in (tmp_path / "train_profile.txt").read_text()


@pytest.mark.slow(seconds=35)
def test_smoke_learn_runs_on_exported_shards(small_sample, tmp_path):
    from facex_data.extraction import ExtractConfig, run_extraction
    from facex_data.manifest import FrameSelection

    shards = tmp_path / "shards"
    frames = FrameSelection(mode="per_clip", frames_per_clip=4, min_clip_frames=4)
    clips = tmp_path / "clips"
    (clips / "35666").mkdir(parents=True)
    for video in sorted((small_sample / "35666").glob("*.mp4")):  # each person twice: one clip of each held out
        for k in (0, 1):
            (clips / "35666" / f"{video.stem.rsplit('_', 1)[0]}_{k}.mp4").write_bytes(video.read_bytes())
    run_extraction(ExtractConfig(input_dir=clips, out_dir=shards, frames=frames, runner="local", progress=False))
    data = tmp_path / "learn.npz"
    exported = subprocess.run([sys.executable, str(SCRIPT), "--export-learn-data", str(data), "--shards", str(shards)],
                              capture_output=True, text=True)  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-2000:]
    table = run("--smoke", "--learn", "--learn-data", str(data), out=tmp_path / "out")
    values = {r["what"]: r["value"] for r in table["rows"]}
    assert values["held-out self-reconstruction PSNR"] > 0 and "conditional denoising gain (per-level mean)" in values
    # FaceX trains with the demo's recipe (params.yaml), not the speed sections' optimizer (lr 1e-5, uniform t)
    from pipelines.config import load_params

    train = load_params(REPO / "params.yaml").train
    (label,) = [what for what in values if what.startswith("FaceX training")]
    assert f"lr {train.learning_rate:g}" in label, label
    assert f"sigmoid(N({train.logit_mean:g}, {train.logit_std:g}))" in label, label
    assert (tmp_path / "out" / "learn_grid.png").is_file()


def test_a_failing_section_is_a_row_and_the_exit_status(tmp_path):
    """A section that fails leaves its error in the table (written under $OUT as it goes) and exit status 1, and the
    total row still comes: a lent GPU's one call brings back every figure the other sections measured."""
    table = run("--smoke", "--learn", "--learn-data", str(tmp_path / "missing.npz"), out=tmp_path, returncode=1)
    (failed,) = [r for r in table["rows"] if r["what"].startswith("FAILED")]
    assert failed["section"] == "learn" and "FileNotFoundError" in failed["what"] and failed["value"] is None
    assert table["rows"][-1]["section"] == "total"


def test_face_rate_counts_faces_with_either_cascade(monkeypatch):
    import importlib.util

    import cv2
    import numpy as np

    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    from skimage.data import astronaut  # a real portrait (NASA, public domain), as the learning check's 64 px crops

    face = cv2.resize(astronaut()[0:300, 100:400], (64, 64), interpolation=cv2.INTER_AREA)
    crops = np.stack([face, np.full_like(face, 128), face[::-1]])  # a face, a blank output, a face upside down
    assert gpu.face_rate(crops) == (1 / 3, "OpenCV Haar")
    monkeypatch.delattr(cv2, "CascadeClassifier")  # OpenCV 5, as on the GPU machine's image
    assert gpu.face_rate(crops) == (1 / 3, "scikit-image LBP")
