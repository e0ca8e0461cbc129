"""The paper profile end to end, as a user runs it: in a fresh clone, random-weight stand-ins of the paper's weights in
the weights dir, `extract.extractors: paper`, every DVC stage (extract, train, finetune, evaluate, register,
examples), then `facex reenact` on a short video and `facex swap` on an image with a paper-backend model, and a
`facex benchmark` protocol on it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.helpers import face_change
from tests.pipelines.test_demo_e2e import REPO, overlay_venv, small_profile


def _short_clip(src: Path, out: Path, frames: int) -> Path:
    """The first `frames` frames of a clip, re-encoded (a driving video for reenactment)."""
    import av

    with av.open(str(src)) as inp, av.open(str(out), "w") as dst:
        stream = dst.add_stream("libx264", rate=25)
        stream.width = stream.height = 256
        stream.pix_fmt = "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            if i == frames:
                break
            image = frame.to_image().resize((256, 256))
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    return out


@pytest.mark.slow(seconds=540)
@pytest.mark.timeout(3600)  # its own cap, as the demo's: on 2 cores it shares the machine with the rest of the suite
def test_paper_profile_runs_every_stage_then_video_and_image_tasks(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    venv = overlay_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "FACEX_"))}
    env["OMP_NUM_THREADS"] = "1"
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"  # DVC runs each stage's `python` from the PATH

    params = small_profile(yaml.safe_load((clone / "params.yaml").read_text()))
    params["extract"].update(extractors="paper", detector="scrfd", crop_size=128)
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def run(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=clone, env=env, capture_output=True, text=True, timeout=timeout)

    setup = run("make", "setup", f"VENV={venv}")
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-2000:]
    python = str(venv / "bin" / "python")
    weights = clone / params["weights"]["dir"]
    standins = run(python, "-c", f"from facex_data.standins import write_random_standins as w; w({str(weights)!r})")
    assert standins.returncode == 0, standins.stderr[-2000:]

    repro = run(python, "-m", "dvc", "repro")
    assert repro.returncode == 0, repro.stdout[-4000:] + repro.stderr[-4000:]
    for stage in ("extract", "pretrain", "train_generalist", "finetune@reenact", "finetune@swap", "evaluate",
                  "register", "examples", "ablate@full", "ablate@no_frc", "ablations"):  # fmt: skip
        assert f"Running stage '{stage}'" in repro.stdout + repro.stderr, stage

    shards = clone / params["extract"]["out_dir"]
    ledger = json.loads((shards / "ledger.json").read_text())
    assert ledger["run"]["extractors"] == "paper" and ledger["totals"]["samples"] > 0
    models = clone / params["train"]["out_dir"]
    for name in ("generalist", "reenact", "swap"):
        config = json.loads((models / name / "config.json").read_text())
        assert config["extractors"] == "paper" and config["id_tokens"] == 64 and config["id_dim"] == 512
    metrics = json.loads((clone / params["evaluate"]["out_dir"] / "metrics.json").read_text())
    assert set(metrics) == {"generalist", "reenact", "swap", "inpainting_reference"}
    for name in ("generalist", "reenact", "swap"):
        m = metrics[name]
        assert m["protocol"]["extractors"] == "paper", name
        own = m["self_reconstruction"]["task"]
        assert m["reenact"]["pairs"] == m["swap"]["pairs"] == 4 and m["self_reconstruction"][own]["pairs"] == 4
        assert m["denoising"][own]["pairs"] == 4 and 0 <= m["swap"]["face_detection_rate"] <= 1
    registry = json.loads((clone / params["register"]["out"]).read_text())["models"]
    assert {n: r["version"] for n, r in registry.items()} == {"generalist": "1", "reenact": "1", "swap": "1"}
    index = json.loads((clone / params["examples"]["out_dir"] / "index.json").read_text())
    assert {g["model"] for g in index["grids"].values()} == {"generalist", "reenact", "swap"}

    # the tasks users run, with a paper-backend model (the extractors read the stand-ins from --weights-dir)
    clips = sorted((clone / params["demo_clips"]["out_dir"]).rglob("*.mp4"))
    driving = _short_clip(clips[0], tmp_path / "driving.mp4", frames=5)
    import av

    with av.open(str(clips[-1])) as c:
        source = tmp_path / "source.png"
        next(c.decode(video=0)).to_image().save(source)
    with av.open(str(clips[0])) as c:
        target = tmp_path / "target.png"
        next(c.decode(video=0)).to_image().save(target)
    facex = str(venv / "bin" / "facex")
    video = run(facex, "reenact", "--source", str(source), "--target", str(driving), "--out", str(tmp_path / "o.mp4"),
                "--model", str(models / "reenact"), "--weights-dir", str(weights), "--steps", "1")  # fmt: skip
    assert video.returncode == 0, video.stdout[-2000:] + video.stderr[-2000:]
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5
    image = run(facex, "swap", "--source", str(source), "--target", str(target), "--out", str(tmp_path / "o.png"),
                "--model", str(models / "swap"), "--weights-dir", str(weights), "--steps", "1")  # fmt: skip
    assert image.returncode == 0, image.stdout[-2000:] + image.stderr[-2000:]
    with Image.open(tmp_path / "o.png") as out:
        assert out.size == Image.open(target).size
        inside, _ = face_change(out, target)
    assert inside > 4 and not np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), np.asarray(Image.open(target)))

    # a paper benchmark protocol on the paper-backend model, ID measured by another recogniser than the training one
    cosface = weights / "cosface" / "r18.pth"
    made = run(python, "-c", "import torch; from pathlib import Path; from facex_data.standins import save; "
               "from facex_data.extractors.nets.iresnet import IResNet; torch.manual_seed(3); "
               f"save(IResNet([2, 2, 2, 2]).state_dict(), Path({str(cosface)!r}))")
    assert made.returncode == 0, made.stderr[-2000:]
    bench = run(facex, "benchmark", "run", "reconstruction", "--root", str(clone / params["demo_clips"]["out_dir"]),
                "--model", str(models / "generalist"), "--weights-dir", str(weights), "--out", str(tmp_path / "bench"),
                "--max-pairs", "2", "--steps", "1", "--fid", "standin", "--id-model", "cosface/r18.pth")  # fmt: skip
    assert bench.returncode == 0, bench.stdout[-2000:] + bench.stderr[-2000:]
    result = json.loads((tmp_path / "bench" / "reconstruction" / "generalist" / "metrics.json").read_text())
    assert result["protocol"]["extractors"] == "paper"
    assert result["protocol"]["identity_model"].startswith("iresnet r18")
    assert result["metrics"]["evaluated"] + result["metrics"]["skipped_inputs"] == 2
