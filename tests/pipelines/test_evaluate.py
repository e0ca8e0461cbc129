"""The evaluate stage on tiny models and small real shards: every metric, only held-out clips, clear errors."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from facex_data.extraction import ExtractConfig, run_extraction
from facex_data.extractors import ExtractorOptions, build_extractors
from facex_data.layout import holdout_clips, person_of, written_clips
from facex_data.manifest import FrameSelection
from facex_model.features import image_tensor, tdmm_parts
from facex_train.config import EvaluateConfig
from facex_train.evaluation import SELF, SELF_TASKS, HeldOutFrames, cross_identity, pair_batch
from facex_train.metrics import FaceMeasurer, build_fid, id_similarity, l2_distance

CROSS_KEYS = {"id_similarity", "id_to_target", "source_closer_rate", "pose_l2", "expression_l2", "gaze_l2",
              "face_detection_rate", "fid_standin", "score"}  # fmt: skip
SELF_KEYS = {"ssim", "psnr", "rmse"}
GAIN_KEYS = {"mse_own", "mse_null", "mse_mismatched", "gain", "gain_se", "mismatch_gain", "gain_pooled", "by_timestep",
             "pairs"}  # fmt: skip


@pytest.fixture(scope="module")
def shards(small_sample, tmp_path_factory) -> Path:
    """Four clips (each sample person under ids _0 and _1), 3 frames each: the split holds out one clip per person."""
    clips = tmp_path_factory.mktemp("eval_clips")
    (clips / "35666").mkdir()
    for video in sorted((small_sample / "35666").glob("*.mp4")):
        person = video.stem.rsplit("_", 1)[0]
        for k in (0, 1):
            shutil.copy(video, clips / "35666" / f"{person}_{k}.mp4")
    out = tmp_path_factory.mktemp("eval_shards")
    sampling = FrameSelection(mode="per_clip", frames_per_clip=3, min_clip_frames=4)
    config = ExtractConfig(input_dir=clips, out_dir=out, frames=sampling, clips_per_shard=1, runner="local",
                           progress=False)  # fmt: skip
    run_extraction(config)
    return out


@pytest.fixture(scope="module")
def tiny_backbone_dir(tmp_path_factory) -> Path:
    from facex_model.backbone import build_tiny_backbone

    return build_tiny_backbone(tmp_path_factory.mktemp("eval_backbone"), seed=0)


@pytest.fixture(scope="module")
def models(tiny_backbone_dir, tmp_path_factory) -> dict[str, Path]:
    from facex_model.model import FaceXConfig, FaceXModel

    root = tmp_path_factory.mktemp("eval_models")
    backbone = tiny_backbone_dir
    dirs = {}
    for name, task in (("generalist", "headswap"), ("swap", "swap")):
        torch.manual_seed(0)
        dirs[name] = FaceXModel(FaceXConfig.tiny(backbone, task=task)).save_pretrained(root / name)
    return dirs


def _params(tmp_path: Path, shards: Path, **evaluate) -> Path:
    data = {
        "split": {"holdout_every": 2},
        "evaluate": {"shards": str(shards), "steps": 2, "max_pairs": 2, "batch_size": 2,
                     "out_dir": str(tmp_path / "metrics"), **evaluate},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def evaluated(shards, models, tmp_path_factory) -> Path:
    from pipelines.evaluate import main

    tmp = tmp_path_factory.mktemp("eval_run")
    argv = ["--params", str(_params(tmp, shards)), "--no-progress"]
    for folder in models.values():
        argv += ["--model", str(folder)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from more, and the box is shared
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    return tmp / "metrics"


def _numbers(tree: dict) -> list[float]:
    out = []
    for value in tree.values():
        if isinstance(value, dict):
            out += _numbers(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(value)
    return out


def test_every_model_gets_every_metric_finite_with_a_headline(evaluated):
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert set(metrics) == {"generalist", "swap", "inpainting_reference"}
    for name, m in metrics.items():
        for task in ("reenact", "swap"):
            assert set(m[task]) >= CROSS_KEYS and "fid" not in m[task], (name, task, m[task])
            assert m[task]["pairs"] == 2
        for task in SELF_TASKS:
            assert set(m[SELF][task]) >= SELF_KEYS and m[SELF][task]["pairs"] == 2
        assert all(math.isfinite(v) for v in _numbers(m)), m
        assert m["protocol"]["fid_features"] == "fid_standin"
        if name != "inpainting_reference":
            assert {task: set(m["denoising"][task]) for task in SELF_TASKS} == dict.fromkeys(SELF_TASKS, GAIN_KEYS)
    assert metrics["swap"]["headline"] == {
        "name": f"{SELF}.swap.psnr",
        "value": metrics["swap"][SELF]["swap"]["psnr"],
        "higher_is_better": True,
    }
    assert metrics["generalist"]["headline"]["name"] == f"{SELF}.headswap.psnr"
    assert metrics["generalist"][SELF]["task"] == "headswap" and metrics["swap"][SELF]["task"] == "swap"
    assert "headline" not in metrics["inpainting_reference"]  # a baseline row, never registered


def test_plots_and_grids_are_written_per_model_and_kind(evaluated):
    for name in ("generalist", "swap", "inpainting_reference"):
        for kind in ("reenact", "swap", *(f"{SELF}_{t}" for t in SELF_TASKS)):
            rows = list(csv.DictReader((evaluated / "plots" / name / f"{kind}.csv").open()))
            assert len(rows) == 2
            with Image.open(evaluated / "grids" / name / f"{kind}.png") as grid:
                assert grid.size == (4 * 128, 2 * 128)  # source | target | I_R | output, a pair per row


def test_only_held_out_clips_are_evaluated_and_cross_pairs_cross_identities(evaluated, shards):
    clips = written_clips(shards)
    held = holdout_clips(clips, 2)
    assert held == {"facexsample-astronaut_1", "facexsample-grace_hopper_1"}
    for name in ("generalist", "swap"):
        for kind in ("reenact", "swap", f"{SELF}_headswap"):
            for row in csv.DictReader((evaluated / "plots" / name / f"{kind}.csv").open()):
                source, target = row["source"].split("/")[0], row["target"].split("/")[0]
                assert {source, target} <= held
                if kind.startswith(SELF):
                    assert source == target and row["source"] != row["target"]
                else:
                    assert person_of(source) != person_of(target)


def test_the_measurer_reads_a_stored_crop_back_as_the_same_face(shards):
    frames = HeldOutFrames(shards, 2)
    key = frames.frames["facexsample-astronaut_1"][0]
    sample = frames.sample(key)
    measurer = FaceMeasurer(build_extractors("offline", ExtractorOptions.recorded(frames.first_meta())))
    image = image_tensor(sample["image"], sample["image"].shape[0])[None]
    measured = measurer.measure(image, [sample["lmk"]])
    assert measured.detected.tolist() == [True]
    assert id_similarity(measured.identity, torch.from_numpy(sample["id"])[None]).item() > 0.95
    pose = tdmm_parts(sample["tdmm"], "offline")["angles"][None]
    assert l2_distance(measured.pose, pose).item() < 0.1


def test_only_shards_with_held_out_clips_are_read_and_frames_per_clip_are_capped(shards, monkeypatch):
    from facex_train import evaluation

    read = []
    real_iter = evaluation.iter_samples
    monkeypatch.setattr(evaluation, "iter_samples", lambda url: read.append(Path(url).name) or real_iter(url))
    monkeypatch.setattr(evaluation, "FRAMES_PER_CLIP", 2)
    frames = HeldOutFrames(shards, 2)
    assert len(list(shards.glob("shard-*.tar"))) == 4 and len(read) == 2
    assert sorted(frames.frames) == ["facexsample-astronaut_1", "facexsample-grace_hopper_1"]
    for keys in frames.frames.values():
        assert len(keys) == 2 and keys[0] < keys[1]


def test_person_is_the_ytb_id_else_the_clip_id_without_its_index():
    assert person_of("abc_3", {"ytb_id": "XyZ"}) == "XyZ"
    assert person_of("facexsample-astronaut_1", {"ytb_id": None}) == "facexsample-astronaut"


def test_a_missing_model_folder_is_named(shards, tmp_path, capsys):
    from pipelines.evaluate import main

    missing = tmp_path / "models" / "reenact"
    assert main(["--params", str(_params(tmp_path, shards)), "--model", str(missing), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(missing) in err and "Traceback" not in err


def test_default_models_come_from_the_params_and_a_missing_one_is_named(shards, models, tmp_path, capsys):
    from pipelines.evaluate import main

    params = _params(tmp_path, shards, models_dir=str(models["swap"].parent), models=["swap", "reenact"])
    assert main(["--params", str(params), "--no-progress"]) == 2
    assert str(models["swap"].parent / "reenact") in capsys.readouterr().err


def test_held_out_clips_of_one_person_are_refused_for_cross_identity_pairs(shards, models, tmp_path, capsys):
    from pipelines.evaluate import main

    params = _params(tmp_path, shards)
    data = yaml.safe_load(params.read_text()) | {"split": {"holdout_every": 4}}  # holds out grace_hopper_1 only
    params.write_text(yaml.safe_dump(data))
    assert main(["--params", str(params), "--model", str(models["swap"]), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "1 person(s)" in err and "split.holdout_every" in err


def test_a_model_trained_on_another_backend_is_refused(shards, tiny_backbone_dir, tmp_path, capsys):
    from facex_model.model import FaceXConfig, FaceXModel
    from pipelines.evaluate import main

    folder = FaceXModel(FaceXConfig.tiny(tiny_backbone_dir, extractors="paper")).save_pretrained(tmp_path / "paper")
    assert main(["--params", str(_params(tmp_path, shards)), "--model", str(folder), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "'paper'" in err and "'offline'" in err and str(folder) in err


def _cross(shards, produce, resolution: int):
    frames = HeldOutFrames(shards, 2)
    pairs = frames.cross_identity_pairs(4, 0)
    meta = frames.first_meta()
    measurer = FaceMeasurer(build_extractors("offline", ExtractorOptions.recorded(meta)))
    settings = EvaluateConfig(batch_size=4)
    section, rows, _ = cross_identity(frames, pairs, "swap", produce, measurer, build_fid("standin", None), settings,
                                      resolution, torch.device("cpu"))  # fmt: skip
    return section, rows


def test_a_blank_output_is_a_miss_with_no_motion_error_and_scores_zero(shards):
    section, rows = _cross(shards, lambda batch, i: torch.zeros_like(batch["target_image"]), 64)
    assert section["face_detection_rate"] == 0 and section["score"] == 0
    assert section["pose_l2"] is None and section["expression_l2"] is None and section["gaze_l2"] is None
    assert all(r["face_detected"] == 0 and r["pose_l2"] is None for r in rows)


def test_an_output_equal_to_the_source_has_its_identity_and_one_equal_to_the_target_the_targets(shards):
    crop = HeldOutFrames(shards, 2).first_meta()["crop_size"]  # at the stored crop size: the very pixels measured
    source, _ = _cross(shards, lambda batch, i: batch["source_image"], crop)
    assert source["face_detection_rate"] == 1 and source["id_similarity"] > 0.99
    assert source["source_closer_rate"] == 1 and source["score"] == 1
    target, _ = _cross(shards, lambda batch, i: batch["target_image"], crop)
    assert target["id_to_target"] > 0.99 and target["source_closer_rate"] == 0 and target["score"] == 0
    # the target's stored pose/expression were measured on the full frame, the output on the stored crop: not zero,
    # but far below what an output with the source's pose and expression scores against the same target
    assert target["pose_l2"] < source["pose_l2"] / 3 and target["expression_l2"] < source["expression_l2"] / 3


def test_an_untrained_model_has_no_conditional_gain(shards, models):
    """Before training, the conditions cannot help the denoiser: the gain is within noise of zero."""
    from facex_model.model import FaceXModel
    from facex_train.evaluation import conditional_gain

    frames = HeldOutFrames(shards, 2)
    pairs = frames.self_pairs(4, 0)
    model = FaceXModel.from_pretrained(models["generalist"]).eval()
    gain = conditional_gain(model, pair_batch(frames, pairs, 64, torch.device("cpu")), "headswap")
    assert gain["pairs"] == len(pairs) >= 2
    assert abs(gain["gain"]) < max(3 * gain["gain_se"], 0.02), gain
    assert abs(gain["mismatch_gain"]) < 0.02, gain
