"""`facex swap|headswap|reenact|edit|inpaint|animate`: outputs the target's size, grids, videos, and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facex_data.cli import load_commands
from tests.helpers import face_change, free_port

app = load_commands()

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def common(model_dir, out):
    return ["--model", model_dir, "--out", out, "--steps", "1"]


@pytest.mark.real
@pytest.mark.parametrize(
    "task, extra",
    [
        ("swap", ["--grid"]),
        ("swap", ["--regions", "eyes,lips", "--no-watermark"]),
        ("headswap", []),
        ("reenact", ["--scheduler", "euler"]),
        ("edit", ["--regions", "lips"]),
    ],
)
def test_task_commands_write_the_target_size(model_dir, photos, tmp_path, task, extra):
    out = tmp_path / "out.png"
    result = invoke(task, "--source", photos["source"], "--target", photos["target"], *common(model_dir, out), *extra)
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (320x288)" in result.output
    from facex_model.watermark import detect

    with Image.open(out) as im:
        assert im.size == (320, 288)
        assert detect(np.asarray(im.convert("RGB")))[0] is ("--no-watermark" not in extra)
        inside, frame = face_change(im, photos["target"])
    assert inside > 8, f"{task} left the target's face as it was"
    if task != "reenact":  # reenactment repaints the whole aligned crop, which reaches the frame here
        assert frame < 4, f"{task} changed the image far from the face"
    if "--grid" in extra:
        with Image.open(tmp_path / "out.grid.png") as grid:
            assert grid.size == (4 * 256, 256)


@pytest.mark.real
def test_inpaint_animate_and_progressive_edit_commands(model_dir, other_backbone, photos, tmp_path):
    mask = tmp_path / "mask.png"
    m = np.zeros((288, 320), np.uint8)
    m[120:180, 130:190] = 255
    Image.fromarray(m).save(mask)
    out = tmp_path / "inpaint.jpg"
    result = invoke("inpaint", "--target", photos["target"], "--mask", mask, *common(model_dir, out))
    assert result.exit_code == 0, result.output
    out = tmp_path / "animate.webp"
    result = invoke("animate", "--source", photos["source"], "--target", photos["target"],
                    "--backbone", other_backbone, *common(model_dir, out))  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "edit.png"
    result = invoke("edit", "--target", photos["target"], "--edit", f"lips={photos['source']}",
                    "--edit", f"eyes={photos['other']}", "--sequential", *common(model_dir, out))  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("inpaint.jpg", "animate.webp", "edit.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size == (320, 288)


@pytest.mark.real
def test_video_target_writes_mp4(model_dir, photos, tmp_path, make_clip, probe_video):
    clip = make_clip(tmp_path / "in.mp4", photos["target"], frames=3, audio=True)
    out = tmp_path / "out.mp4"
    result = invoke("reenact", "--source", photos["source"], "--target", clip, *common(model_dir, out))
    assert result.exit_code == 0, result.output
    assert probe_video(out)[:3] == (3, probe_video(clip)[1], True)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0]


@pytest.mark.real
def test_user_errors_are_one_line_with_nonzero_exit(model_dir, photos, tmp_path, monkeypatch):
    out = tmp_path / "out.png"
    src, tgt = photos["source"], photos["target"]
    assert_one_line_error(invoke("swap", "--source", tmp_path / "nope.jpg", "--target", tgt, *common(model_dir, out)),
                          "nope.jpg", "file not found")  # fmt: skip
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    assert_one_line_error(invoke("swap", "--source", notes, "--target", tgt, *common(model_dir, out)),
                          "notes.txt", "not an image or video")  # fmt: skip
    assert_one_line_error(invoke("swap", "--source", photos["dog_01.jpg"], "--target", tgt, *common(model_dir, out)),
                          "no face found", "dog_01.jpg")  # fmt: skip
    assert_one_line_error(invoke("swap", "--source", src, "--target", photos["pair"], "--face-index", "5",
                                 *common(model_dir, out)), "face-index must be 0..1")  # fmt: skip
    assert_one_line_error(invoke("swap", "--source", src, "--target", tgt, *common(model_dir, tmp_path / "o.gif")),
                          "--out", ".png")  # fmt: skip
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/registry.db")
    assert_one_line_error(invoke("swap", "--source", src, "--target", tgt, "--out", out, "--model",
                                 "models:/facex-nope@champion"), "models:/facex-nope@champion",
                          "not found in the registry")  # fmt: skip
    dead = f"http://127.0.0.1:{free_port()}"  # a registry server that is down: said at once, not after retries
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    assert_one_line_error(invoke("swap", "--source", src, "--target", tgt, "--out", out, "--model",
                                 "models:/facex-swap@champion"), "models:/facex-swap@champion",
                          f"the MLflow server at {dead} does not answer")  # fmt: skip
    assert_one_line_error(invoke("swap", "--source", src, "--target", tgt, "--out", out, "--model", tmp_path / "m"),
                          "folder not found")  # fmt: skip
    # a mistyped region fails before any model loads (this model folder does not even exist)
    assert_one_line_error(invoke("swap", "--source", src, "--target", tgt, "--regions", "eyes,eyez", "--out", out,
                                 "--model", tmp_path / "m"), "--regions: unknown region(s) eyez; known: ")  # fmt: skip
    assert_one_line_error(invoke("edit", "--target", tgt, "--edit", f"lip={src}", "--out", out, "--model",
                                 tmp_path / "m"), f"--edit lip={src}: unknown region(s) lip")  # fmt: skip


@pytest.mark.real
def test_a_model_folder_whose_backbone_is_elsewhere_says_so_and_runs_with_backbone(model_dir, tiny_backbone, photos,
                                                                                   tmp_path):  # fmt: skip
    """A model folder moved (or DVC-pulled into another checkout) keeps config.json's absolute backbone path."""
    import json
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(model_dir, moved)
    config = json.loads((moved / "config.json").read_text())
    config["backbone_path"] = str(tmp_path / "old-checkout" / "data" / "backbone")
    (moved / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out.png"
    args = ["swap", "--source", photos["source"], "--target", photos["target"], *common(moved, out)]
    assert_one_line_error(invoke(*args), str(moved / "config.json"), "old-checkout", "--backbone DIR")
    result = invoke(*args, "--backbone", tiny_backbone)
    assert result.exit_code == 0 and out.is_file(), result.output
    inpainted = invoke("inpaint", "--target", photos["target"], "--mask", photos["target"], *common(moved, out),
                       "--backbone", tiny_backbone)  # fmt: skip
    assert inpainted.exit_code == 0, inpainted.output


@pytest.mark.real
def test_several_faces_and_large_images_warn_on_one_line(model_dir, photos, tmp_path):
    big = tmp_path / "big.png"
    Image.open(photos["pair"]).resize((2600, 1500)).save(big)
    out = tmp_path / "out.png"
    result = invoke("swap", "--source", photos["source"], "--target", big, *common(model_dir, out))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert any("downscaled to 2048x1182" in w for w in warnings)
    assert any("2 faces" in w and "--face-index" in w for w in warnings)
    with Image.open(out) as im:
        assert im.size == (2048, 1182)


@pytest.mark.parametrize("task", ["swap", "headswap", "reenact", "edit", "inpaint", "animate"])
def test_every_command_on_embedded_sample_frames(model_dir, other_backbone, sample_frames, tmp_path, task):
    names = sorted(sample_frames)
    source = next(sample_frames[n] for n in names if "grace" in n)
    target = next(sample_frames[n] for n in names if "astronaut" in n)
    out = tmp_path / "out.png"
    args = {
        "edit": ["--source", source, "--regions", "eyes"],
        "inpaint": ["--mask", tmp_path / "mask.png"],
        "animate": ["--source", source, "--backbone", other_backbone],
    }.get(task, ["--source", source])
    if task == "inpaint":
        mask = np.zeros(Image.open(target).size[::-1], np.uint8)
        mask[mask.shape[0] // 2 :] = 255
        Image.fromarray(mask).save(tmp_path / "mask.png")
    result = invoke(task, "--target", target, *args, *common(model_dir, out))
    assert result.exit_code == 0, result.output
    with Image.open(out) as im, Image.open(target) as tgt:
        assert im.size == tgt.size
