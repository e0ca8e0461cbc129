"""params.yaml parsing: every mistake a user can make names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.config import DEFAULT_PARAMS, Params, ParamsError, load_params


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_repo_params_files_parse():
    params = load_params(DEFAULT_PARAMS)
    assert isinstance(params, Params)
    assert params.demo_clips.fps == 25 and params.demo_clips.size == 512
    real = load_params(DEFAULT_PARAMS.parent / "params" / "celebvhq-sd15.yaml")
    assert (real.train.batch_size, real.train.learning_rate, real.train.resolution) == (32, 1e-5, 256)
    assert (real.train.model.rep_dim, real.train.model.inp_channels, real.train.model.train_vision_encoder) == (
        768, (64, 128, 256, 512), True)
    assert real.train.specialist_steps == {"reenact": 15000, "swap": 5000}
    assert real.compute.num_workers == 4 and real.compute.use_gpu


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, {"demo_clips": {"seed": 1, "fsp": 25}})
    with pytest.raises(ParamsError, match=r"unknown key demo_clips\.fsp") as err:
        load_params(path)
    assert str(path) in str(err.value)


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ParamsError, match=r"unknown key sampel"):
        load_params(write(tmp_path, {"sampel": {}}))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"fps": "fast"}, r"demo_clips\.fps: expected int, got 'fast'"),
        ({"fps": 2.5}, r"demo_clips\.fps: expected int"),
        ({"seed": True}, r"demo_clips\.seed: expected int"),
        ({"min_seconds": "1s"}, r"demo_clips\.min_seconds: expected float"),
        ({"extra_portraits": "a.jpg"}, r"demo_clips\.extra_portraits: expected"),
        ({"extra_portraits": [3]}, r"demo_clips\.extra_portraits\[0\]: expected InputPath"),
    ],
)
def test_wrong_type_is_named(tmp_path, section, message):
    with pytest.raises(ParamsError, match=message):
        load_params(write(tmp_path, {"demo_clips": section}))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"compute": {"mixed_precision": "fp8"}}, r"compute\.mixed_precision: expected one of 'no', 'bf16', 'fp16'"),
        ({"train": {"specialist_steps": {"swap": "many"}}}, r"train\.specialist_steps\.swap: expected int"),
        ({"compute": 4}, r"compute: expected a mapping"),
        ({"train": {"model": {"inp_channels": [16, "x"]}}}, r"train\.model\.inp_channels\[1\]: expected int"),
        ({"train": {"timestep_sampling": "cubic"}}, r"train\.timestep_sampling: expected one of 'uniform', 'logit_n"),
        ({"train": {"logit_std": 0}}, r"train\.logit_std must be > 0"),
    ],
)
def test_nested_and_choice_errors_are_named(tmp_path, data, message):
    with pytest.raises(ParamsError, match=message):
        load_params(write(tmp_path, data))


def test_int_is_accepted_for_float(tmp_path):
    params = load_params(write(tmp_path, {"demo_clips": {"min_seconds": 2, "max_seconds": 3}}))
    assert params.demo_clips.min_seconds == 2.0 and isinstance(params.demo_clips.min_seconds, float)


def test_the_timestep_setting_reaches_the_training_loss_as_one_value(tmp_path):
    """What train.py hands FaceXModel.training_loss (and bench-specialists samples from): (mean, std) or None."""
    assert load_params(DEFAULT_PARAMS).train.logit_normal == (2.0, 1.0)  # the embedded default: logit-normal
    assert load_params(write(tmp_path, {"train": {"logit_mean": 0.5, "logit_std": 2}})).train.logit_normal is None
    logit = {"timestep_sampling": "logit_normal", "logit_mean": 0.5, "logit_std": 2}
    assert load_params(write(tmp_path, {"train": logit})).train.logit_normal == (0.5, 2.0)


def test_missing_input_path_is_named_only_for_the_running_stage(tmp_path):
    path = write(tmp_path, {"demo_clips": {"extra_portraits": ["portraits/nobody.jpg"]}})
    load_params(path)  # other stages may still parse it
    with pytest.raises(ParamsError, match=r"demo_clips\.extra_portraits\[0\]: path .*nobody\.jpg does not exist"):
        load_params(path, check_inputs=("demo_clips",))


def test_relative_paths_resolve_against_the_params_repo(tmp_path):
    (tmp_path / "params").mkdir()
    profile = tmp_path / "params" / "real.yaml"
    profile.write_text(yaml.safe_dump({"demo_clips": {"out_dir": "data/x"}}))
    assert load_params(profile).demo_clips.out_dir == tmp_path / "data" / "x"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("demo_clips: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_stage_script_exits_with_the_message(tmp_path, capsys):
    from pipelines.demo_clips import main

    assert main(["--params", str(write(tmp_path, {"demo_clips": {"fps": "x"}}))]) == 2
    assert "demo_clips.fps: expected int" in capsys.readouterr().err
