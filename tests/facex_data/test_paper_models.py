"""The weights dir: `facex weights check` on empty / complete / corrupted dirs, which folder wins, and stages that
need a missing weight failing before any work starts."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from facex_data.cli import load_commands
from facex_data.standins import write_random_standins
from facex_data.weights import (
    MANIFEST,
    PINS_FILE,
    MissingWeightsError,
    check_weights,
    paper_extract_keys,
    require_weights,
    resolve_weights_dir,
    weight_path,
)

app = load_commands()


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("weights")
    write_random_standins(root)
    return root


def check(weights_dir) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["weights", "check", "--weights-dir", str(weights_dir)])
    return result.exit_code, result.output


def row(output: str, path: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(path + " "))


def test_check_on_empty_dir_lists_every_weight_missing_with_stage_and_source(tmp_path):
    code, out = check(tmp_path)
    assert code == 0
    for w in MANIFEST:
        assert "missing" in row(out, w.path)
    assert "extract (extractors: paper)" in row(out, "bisenet/79999_iter.pth")
    assert "get it from face-parsing.PyTorch" in out


def test_check_on_complete_dir_reports_hash_ok(standins):
    code, out = check(standins)
    assert code == 0
    for key in ("scrfd", "arcface_pth", "bisenet", "deep3d", "deep3d_lm3d", "gaze"):
        path = next(w.path for w in MANIFEST if w.key == key)
        assert " ok " in row(out, path)
    assert "missing" in row(out, "arcface/glint360k_r100.onnx")  # the alternative format is optional


def test_check_on_corrupted_file_reports_hash_mismatch_and_fails(tmp_path, standins):
    import shutil

    root = tmp_path / "weights"
    shutil.copytree(standins, root)
    bisenet = weight_path(root, "bisenet")
    data = bytearray(bisenet.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bisenet.write_bytes(bytes(data))
    code, out = check(root)
    assert code == 1
    assert "hash mismatch" in row(out, "bisenet/79999_iter.pth")
    assert "re-download it" in out
    assert {s.weight.key: s.status for s in check_weights(root)}["gaze"] == "ok"


def test_pin_records_hashes_of_present_files(tmp_path):
    weight_path(tmp_path, "gaze").parent.mkdir(parents=True)
    weight_path(tmp_path, "gaze").write_bytes(b"not a real checkpoint")
    result = CliRunner().invoke(app, ["weights", "check", "--weights-dir", str(tmp_path), "--pin"])
    assert result.exit_code == 0 and "pinned 1 files" in result.output
    assert (tmp_path / PINS_FILE).read_text().endswith("  gaze/L2CSNet_gaze360.pkl\n")
    assert " ok " in row(result.output, "gaze/L2CSNet_gaze360.pkl")


def test_missing_weights_error_names_file_destination_and_source(tmp_path):
    weight_path(tmp_path, "arcface_onnx").parent.mkdir(parents=True)
    weight_path(tmp_path, "arcface_onnx").write_bytes(b"x")
    with pytest.raises(MissingWeightsError) as err:
        require_weights(tmp_path, paper_extract_keys("scrfd"), "extract")
    text = str(err.value)
    assert str(weight_path(tmp_path, "bisenet")) in text
    assert "github.com/zllrunning/face-parsing.PyTorch" in text
    assert "arcface" not in text.lower()  # the ONNX alternative is there: ArcFace is satisfied
    assert "det_10g.onnx" in text
    dlib_only = require_weights(tmp_path, [("arcface_pth", "arcface_onnx")], "extract")
    assert dlib_only == {"arcface": weight_path(tmp_path, "arcface_onnx")}


def test_paper_extract_with_missing_weights_fails_before_decoding(tmp_path, small_sample, monkeypatch):
    from facex_data import extraction as pipeline
    from facex_data.paths import InputPath

    def no_decoding(*args, **kwargs):
        raise AssertionError("a clip was opened before the weights were checked")

    monkeypatch.setattr(pipeline, "ClipReader", no_decoding)
    monkeypatch.setattr(pipeline, "_prepare", no_decoding)
    cfg = pipeline.ExtractConfig(
        input_dir=InputPath(small_sample),
        out_dir=tmp_path / "shards",
        extractors="paper",
        runner="local",
        progress=False,
    )
    with pytest.raises(MissingWeightsError, match="79999_iter.pth"):
        pipeline.run_extraction(cfg, tmp_path / "weights")
    assert not (tmp_path / "shards").exists()


def test_a_given_weights_dir_wins_over_the_environment_which_wins_over_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEX_WEIGHTS_DIR", str(tmp_path / "env"))
    assert resolve_weights_dir(tmp_path / "given") == tmp_path / "given"
    assert resolve_weights_dir(None) == tmp_path / "env"
    monkeypatch.delenv("FACEX_WEIGHTS_DIR")
    assert str(resolve_weights_dir(None)) == "weights"


def test_the_stage_reads_weights_dir_from_params_even_when_the_environment_names_a_complete_one(
    tmp_path, small_sample, standins, monkeypatch, capsys
):
    """weights.dir is DVC-tracked: an environment variable must never change what a stage reads."""
    import yaml

    from pipelines.extract import main

    monkeypatch.setenv("FACEX_WEIGHTS_DIR", str(standins))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "weights": {"dir": str(tmp_path / "empty")},
        "extract": {"input_dir": str(small_sample), "out_dir": str(tmp_path / "shards"), "extractors": "paper",
                    "runner": "local"},
    }))  # fmt: skip
    assert main(["--params", str(params), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "empty") in err and "79999_iter.pth" in err


def test_cli_extract_paper_names_the_missing_file_and_exits_2(tmp_path, small_sample):
    result = CliRunner().invoke(
        app,
        [
            "extract",
            "--input",
            str(small_sample),
            "--out",
            str(tmp_path / "shards"),
            "--extractors",
            "paper",
            "--weights-dir",
            str(tmp_path),
            "--runner",
            "local",
        ],
    )
    assert result.exit_code == 2
    assert "L2CSNet_gaze360.pkl" in result.output and "Nothing is downloaded" in result.output
