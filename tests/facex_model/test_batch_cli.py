"""Batch runs: `--target DIR_OR_GLOB --out DIR` and `--pairs FILE` on one loaded model; every input accounted for in
the summary, a bad input recorded and the run going on, finished outputs kept on a re-run.

Inputs: frames of the embedded sample's clips (real portraits), skimage's coffee cup (no face) and a text file named
.jpg.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facex_data.cli import load_commands
from facex_model.pipeline import FaceXPipeline

app = load_commands()


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def person(sample_frames, name: str) -> Path:
    return next(path for stem, path in sample_frames.items() if name in stem)


@pytest.fixture
def folder(sample_frames, tmp_path) -> Path:
    """Two faces, a faceless photo, a text file named .jpg, and a non-image file that is not an input."""
    import skimage.data

    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(person(sample_frames, "astronaut"), root / "astronaut.png")
    Image.open(person(sample_frames, "grace")).convert("RGB").save(root / "grace.jpg", quality=95)
    Image.fromarray(skimage.data.coffee()).save(root / "coffee.png")
    (root / "notes.jpg").write_text("not a picture, whatever the name says\n")
    (root / "README.txt").write_text("photos for the batch\n")
    return root


def summary_of(out: Path, task: str = "swap") -> dict:
    return json.loads((out / f"{task}_summary.json").read_text())


def statuses(summary: dict) -> dict[str, str]:
    return {Path(r["target"]).name: r["status"] for r in summary["records"]}


@pytest.fixture
def counted_calls(monkeypatch) -> list[str]:
    """The targets the pipeline is run on (each job detects its target first, batched or not)."""
    calls: list[str] = []
    original = FaceXPipeline.detect

    def spy(self, image, name, *args, **kwargs):
        if name == "target":
            calls.append(Path(image).name)
        return original(self, image, name, *args, **kwargs)

    monkeypatch.setattr(FaceXPipeline, "detect", spy)
    return calls


def test_folder_batch_accounts_for_every_input_and_writes_the_good_ones(model_dir, sample_frames, folder, tmp_path):
    out = tmp_path / "out"
    result = invoke("swap", "--source", person(sample_frames, "grace"), "--target", folder, "--out", out,
                    "--model", model_dir, "--steps", "1")  # fmt: skip
    assert result.exit_code == 1, result.output  # something failed
    summary = summary_of(out)
    assert statuses(summary) == {"astronaut.png": "written", "grace.jpg": "written", "coffee.png": "failed",
                                 "notes.jpg": "failed"}  # fmt: skip
    assert (summary["inputs"], summary["written"], summary["failed"]) == (4, 2, 2)
    reasons = {Path(r["target"]).name: r["reason"] for r in summary["records"]}
    assert "no face found" in reasons["coffee.png"] and "not a readable image" in reasons["notes.jpg"]
    for name in ("astronaut", "grace"):
        with Image.open(out / f"{name}.png") as im, Image.open(next(folder.glob(f"{name}.*"))) as original:
            assert im.size == original.size
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "grace.png", "swap_summary.json"]
    assert "4 inputs: 2 written, 0 kept from before, 2 failed" in result.output
    assert "coffee.png" in result.output and "notes.jpg" in result.output and "Traceback" not in result.output


def test_a_source_is_detected_once_for_the_whole_run_faceless_or_not(model_dir, sample_frames, folder, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    original = FaceXPipeline.detect
    sources = []

    def spy(self, image, name, *args, **kwargs):
        if name == "source":
            sources.append(Path(image).name)
        return original(self, image, name, *args, **kwargs)

    monkeypatch.setattr(FaceXPipeline, "detect", spy)
    grace = person(sample_frames, "grace")
    common = ["--target", folder, "--model", model_dir, "--steps", "1", "--batch-size", "1"]
    invoke("swap", "--source", grace, "--out", tmp_path / "out", *common)
    assert summary_of(tmp_path / "out")["written"] == 2 and sources == [grace.name]  # two batches, one detection
    sources.clear()
    invoke("swap", "--source", folder / "coffee.png", "--out", tmp_path / "faceless", *common)
    reasons = {Path(r["target"]).name: r["reason"] for r in summary_of(tmp_path / "faceless")["records"]}
    for name in ("astronaut.png", "grace.jpg"):  # every target with a face says why, from one detection
        assert reasons[name].startswith("no face found in source") and "coffee.png" in reasons[name]
    assert sources == ["coffee.png"]


def test_rerun_keeps_finished_outputs_and_overwrite_redoes_them(model_dir, sample_frames, folder, tmp_path,
                                                               counted_calls):  # fmt: skip
    out = tmp_path / "out"
    args = ["swap", "--source", person(sample_frames, "grace"), "--target", folder, "--out", out, "--model",
            model_dir, "--steps", "1"]  # fmt: skip
    invoke(*args)
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    counted_calls.clear()
    result = invoke(*args)
    assert result.exit_code == 1
    assert sorted(counted_calls) == ["coffee.png", "notes.jpg"]  # only the inputs without an output are run again
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == finished
    assert statuses(summary_of(out)) == {"astronaut.png": "skipped", "grace.jpg": "skipped", "coffee.png": "failed",
                                         "notes.jpg": "failed"}  # fmt: skip
    counted_calls.clear()
    invoke(*args, "--overwrite")
    assert len(counted_calls) == 4 and summary_of(out)["written"] == 2


def test_interrupted_batch_still_writes_its_summary(model_dir, sample_frames, folder, tmp_path, monkeypatch):
    original = FaceXPipeline.detect
    calls = []

    def stop_on_third_target(self, image, name, *args, **kwargs):
        calls.append(name)
        if calls.count("target") == 3:  # grace.jpg, in the second batch of two
            raise KeyboardInterrupt
        return original(self, image, name, *args, **kwargs)

    monkeypatch.setattr(FaceXPipeline, "detect", stop_on_third_target)
    out = tmp_path / "out"
    invoke("swap", "--source", person(sample_frames, "grace"), "--target", folder, "--out", out, "--model", model_dir,
           "--steps", "1", "--batch-size", "2")  # fmt: skip
    summary = summary_of(out)
    assert summary["inputs"] == len(summary["records"]) == 4
    assert statuses(summary) == {"astronaut.png": "written", "coffee.png": "failed", "grace.jpg": "not reached",
                                 "notes.jpg": "not reached"}  # fmt: skip
    assert not list(out.glob("*.partial*"))


def test_batch_size_changes_how_many_go_through_the_unet_at_once_not_the_outputs(
    model_dir, sample_frames, folder, tmp_path, unet_batches
):
    rows = unet_batches
    runs = {}
    for size in (1, 3):
        rows.clear()
        out = tmp_path / f"out{size}"
        result = invoke("swap", "--source", person(sample_frames, "grace"), "--target", folder, "--out", out,
                        "--model", model_dir, "--steps", "1", "--batch-size", size, "--no-watermark")  # fmt: skip
        assert result.exit_code == 1, result.output  # the faceless and the unreadable input fail either way
        runs[size] = (list(rows), statuses(summary_of(out)))
    # batches of 3: astronaut, coffee (no face), grace -> one U-Net batch of 2; then notes.jpg (unreadable) -> none
    assert runs[1][0] == [1, 1] and runs[3][0] == [2]
    assert runs[1][1] == runs[3][1]
    for name in ("astronaut", "grace"):
        a, b = (np.asarray(Image.open(tmp_path / f"out{size}" / f"{name}.png"), np.int16) for size in (1, 3))
        assert np.abs(a - b).max() <= 4 and np.abs(a - b).mean() < 0.05  # float rounding of a larger batch at most


def test_pairs_csv_and_jsonl_with_their_own_sources_and_outputs(model_dir, sample_frames, tmp_path):
    shutil.copy(person(sample_frames, "astronaut"), tmp_path / "a.png")
    shutil.copy(person(sample_frames, "grace"), tmp_path / "g.png")
    rows = ["source,target,out", "a.png,g.png,", "g.png,a.png,a_as_grace.jpg", "a.png,missing.png,"]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = invoke("swap", "--pairs", tmp_path / "pairs.csv", "--out", out, "--model", model_dir, "--steps", "1")
    assert result.exit_code == 1, result.output
    records = summary_of(out)["records"]
    assert [(Path(r["source"]).name, Path(r["out"]).name, r["status"]) for r in records] == [
        ("a.png", "g.png", "written"), ("g.png", "a_as_grace.jpg", "written"), ("a.png", "missing.png", "failed"),
    ]  # fmt: skip
    assert "file not found" in records[2]["reason"]
    with Image.open(out / "a_as_grace.jpg") as im:
        assert im.format == "JPEG"

    lines = [{"source": "g.png", "target": "a.png"}, {"source": "a.png", "target": "a.png"}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = invoke("reenact", "--pairs", tmp_path / "pairs.jsonl", "--out", out, "--model", model_dir, "--steps", "1")
    assert result.exit_code == 0, result.output
    names = sorted(Path(r["out"]).name for r in summary_of(out, "reenact")["records"])
    assert names == ["a-a.png", "a-g.png"]  # one target, two sources: the source's name tells them apart


def test_glob_target_takes_only_the_matching_files(model_dir, sample_frames, folder, tmp_path):
    out = tmp_path / "out"
    result = invoke("swap", "--source", person(sample_frames, "grace"), "--target", folder / "*.png", "--out", out,
                    "--model", model_dir, "--steps", "1")  # fmt: skip
    assert result.exit_code == 1
    assert statuses(summary_of(out)) == {"astronaut.png": "written", "coffee.png": "failed"}


def test_batch_usage_errors_are_one_line_and_run_nothing(model_dir, sample_frames, folder, tmp_path):
    source = person(sample_frames, "grace")
    cases = [
        (["--source", source, "--target", folder, "--out", tmp_path / "x.png"], "a batch writes into a folder"),
        (["--source", source, "--target", folder / "*.gif", "--out", tmp_path / "o"], "no images or videos there"),
        (["--source", source, "--target", folder, "--out", folder], "is the --target folder"),
        (["--source", source, "--out", tmp_path / "o"], "give --target"),
        (["--target", folder, "--out", tmp_path / "o"], "swap needs --source"),
    ]
    (tmp_path / "bad.csv").write_text("person,picture\na.png,b.png\n")
    cases.append((["--pairs", tmp_path / "bad.csv", "--out", tmp_path / "o"], "header naming the columns"))
    for args, fragment in cases:
        result = invoke("swap", *args, "--model", model_dir)
        errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert result.exit_code == 2 and len(errors) == 1 and fragment in errors[0], (args, result.output)
    assert not (tmp_path / "o").exists()


def test_video_in_a_batch_is_written_as_mp4(model_dir, sample_frames, tmp_path, make_clip, probe_video):
    clip = make_clip(tmp_path / "clip.mp4", person(sample_frames, "astronaut"), frames=2, audio=False)
    (tmp_path / "pairs.csv").write_text(f"source,target\n{person(sample_frames, 'grace')},{clip.name}\n")
    out = tmp_path / "out"
    result = invoke("swap", "--pairs", tmp_path / "pairs.csv", "--out", out, "--model", model_dir, "--steps", "1")
    assert result.exit_code == 0, result.output
    assert probe_video(out / "clip.mp4")[0] == 2
    assert statuses(summary_of(out)) == {"clip.mp4": "written"}
