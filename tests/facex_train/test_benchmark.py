"""`facex benchmark`: the paper's protocols on tiny datasets built here in FF++'s, VoxCeleb1's and FFHQ's public
layouts from the embedded sample's frames; pinned pair lists, known-answer metrics through the one measurement
path, resume after a kill, clear layout errors, MLflow logging."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from facex_train.benchmark import datasets as ds
from facex_train.benchmark.protocols import (
    PROTOCOLS,
    PairSettings,
    build_pair_list,
    get_protocol,
    pair_list_bytes,
    parse_roots,
)
from facex_train.benchmark.runner import BenchmarkError, BenchmarkRun, RunSettings, log_to_mlflow, run_benchmark
from facex_train.metrics import PSNR_CAP_DB, id_retrieval

PEOPLE = ("astronaut", "grace_hopper", "t1_1", "t1_2")
FAST = RunSettings(steps=1, fid_features="standin")


@pytest.fixture(scope="module")
def people_clips(tmp_path_factory) -> list[Path]:
    """One short 256-px clip of each of four people (the embedded sample's portraits, synthetic motion)."""
    from facex_data.demo_clips import DemoClipsConfig, make_demo_clips

    out = tmp_path_factory.mktemp("people")
    make_demo_clips(DemoClipsConfig(out_dir=out, seed=3, clips_per_person=1, size=256, min_seconds=1.0,
                                    max_seconds=1.2, people=PEOPLE), progress=False)  # fmt: skip
    clips = sorted(out.rglob("*.mp4"))
    assert [c.stem.removeprefix("facexsample-").rsplit("_", 1)[0] for c in clips] == sorted(PEOPLE)
    return clips


def _frames(clip: Path, count: int) -> list[Image.Image]:
    with av.open(str(clip)) as c:
        return [f.to_image() for _, f in zip(range(count), c.decode(video=0))]


@pytest.fixture(scope="module")
def layouts(people_clips, tmp_path_factory) -> dict[str, Path]:
    """The four public layouts, a few files each."""
    base = tmp_path_factory.mktemp("datasets")
    ffpp = base / "ffpp"
    videos = ffpp / ds.FFPP_VIDEOS
    videos.mkdir(parents=True)
    for i, clip in enumerate(people_clips):
        shutil.copy(clip, videos / f"{i:03d}.mp4")
    (ffpp / "splits").mkdir()
    (ffpp / "splits" / "test.json").write_text(json.dumps([["000", "001"], ["002", "003"]]))

    vox = base / "voxceleb1"
    (vox / "id10001" / "vidA").mkdir(parents=True)
    shutil.copy(people_clips[0], vox / "id10001" / "vidA" / "00001.mp4")
    frames_dir = vox / "id10002" / "vidB" / "00001"
    frames_dir.mkdir(parents=True)
    for j, im in enumerate(_frames(people_clips[1], 4)):
        im.save(frames_dir / f"{j:07d}.jpg", quality=95)

    ffhq = base / "ffhq"
    (ffhq / ds.FFHQ_IMAGES / "00000").mkdir(parents=True)
    for i, clip in enumerate(people_clips):
        _frames(clip, 1)[0].save(ffhq / ds.FFHQ_IMAGES / "00000" / f"{i:05d}.png")

    clips = base / "clips"
    clips.mkdir()
    for clip in people_clips:
        shutil.copy(clip, clips / clip.name)
    return {"ffpp": ffpp, "voxceleb1": vox, "ffhq": ffhq, "clips": clips}


def _roots(protocol, layouts) -> dict[str, Path]:
    return {d: layouts[d] for d in protocol.datasets}


# --- pair lists ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_pair_list_is_pinned_by_the_layout_and_the_seed(name, layouts):
    protocol = get_protocol(name)
    roots = _roots(protocol, layouts)
    first = pair_list_bytes(build_pair_list(protocol, roots, PairSettings(seed=0, max_pairs=12)))
    again = pair_list_bytes(build_pair_list(protocol, roots, PairSettings(seed=0, max_pairs=12)))
    other = pair_list_bytes(build_pair_list(protocol, roots, PairSettings(seed=5, max_pairs=12)))
    assert first == again
    head = json.loads(first.splitlines()[0])
    assert head["protocol"] == name and head["version"] == protocol.version and head["seed"] == 0
    pairs = [json.loads(line) for line in first.splitlines()[1:]]
    assert [p["pair"] for p in pairs] == list(range(len(pairs))) and pairs
    for p in pairs:
        for side in ("source", "target"):
            assert (roots[p[side]["dataset"]] / p[side]["path"]).is_file()
    if name == "ffpp-swap":  # the official pairs decide: the seed draws nothing
        assert other.splitlines()[1:] == first.splitlines()[1:]
    else:
        assert other != first


def test_ffpp_pairs_are_the_official_ones_both_ways_from_the_split_or_the_manipulated_names(layouts, tmp_path):
    pairs, where = ds.ffpp_swap_pairs(layouts["ffpp"])
    assert where == "splits/test.json"  # train/val/test are read together where present: one pair per video
    assert pairs == [("000", "001"), ("001", "000"), ("002", "003"), ("003", "002")]
    copy = tmp_path / "ffpp"
    shutil.copytree(layouts["ffpp"], copy)
    (copy / "splits" / "train.json").write_text(json.dumps([["000", "002"]]))
    assert ds.ffpp_swap_pairs(copy) == (sorted([*pairs, ("000", "002"), ("002", "000")]), "splits/train.json+test.json")
    shutil.rmtree(copy / "splits")
    for target, source in pairs:
        folder = copy / ds.FFPP_MANIPULATED / "Deepfakes" / "c23" / "videos"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{target}_{source}.mp4").write_bytes(b"")
    assert ds.ffpp_swap_pairs(copy) == (pairs, f"{ds.FFPP_MANIPULATED}/*/c23/videos names")
    listed = build_pair_list(get_protocol("ffpp-swap"), {"ffpp": layouts["ffpp"]}, PairSettings(frames_per_video=3))
    assert len(listed["pairs"]) == 4 * 3
    first = listed["pairs"][0]
    assert first["target"]["identity"] == "000" and first["source"]["identity"] == "001"  # 001's face on 000's video


@pytest.mark.parametrize(
    ("name", "expected"),
    [("ffpp-swap", ds.FFPP_VIDEOS), ("vox-ffhq-reenact", "id10270"), ("ffhq-headswap", ds.FFHQ_IMAGES),
     ("reconstruction", "*.mp4")],
)  # fmt: skip
def test_missing_data_names_the_path_and_layout_it_wants(name, expected, tmp_path):
    protocol = get_protocol(name)
    roots = {d: tmp_path / d for d in protocol.datasets}
    for folder in roots.values():
        folder.mkdir()
    with pytest.raises(ds.LayoutError) as err:
        build_pair_list(protocol, roots, PairSettings())
    assert expected in str(err.value) and str(tmp_path) in str(err.value)


def test_ffpp_without_a_pair_list_says_where_to_get_one(layouts, tmp_path):
    copy = tmp_path / "ffpp"
    shutil.copytree(layouts["ffpp"] / "original_sequences", copy / "original_sequences")
    with pytest.raises(ds.LayoutError, match=r"splits\}?/\{train,val,test\}\.json.*FaceForensics repository"):
        build_pair_list(get_protocol("ffpp-swap"), {"ffpp": copy}, PairSettings())


def test_roots_are_named_per_dataset_where_a_protocol_reads_two():
    reenact = get_protocol("vox-ffhq-reenact")
    assert parse_roots(reenact, ["voxceleb1=/a,ffhq=/b"]) == {"voxceleb1": Path("/a"), "ffhq": Path("/b")}
    with pytest.raises(ValueError, match="--root NAME=DIR"):
        parse_roots(reenact, ["/a"])
    with pytest.raises(ValueError, match="needs --root for ffhq"):
        parse_roots(reenact, ["voxceleb1=/a"])
    assert parse_roots(get_protocol("ffhq-headswap"), ["/x"]) == {"ffhq": Path("/x")}


# --- known answers -------------------------------------------------------------------------------------------------
def test_id_retrieval_known_answers():
    g = torch.randn(6, 128, generator=torch.Generator().manual_seed(0))
    labels = [f"p{i}" for i in range(6)]
    assert id_retrieval(g, labels, g, labels, (1, 5)) == {1: 1.0, 5: 1.0}
    shuffled = g.roll(1, dims=0)  # every output shows another person of the gallery
    assert id_retrieval(shuffled, labels, g, labels, (1,))[1] == 0.0  # at or below chance (1/6)
    found = torch.tensor([True, True, True, False, False, False])
    assert id_retrieval(g, labels, g, labels, (1,), found)[1] == 0.5  # an output without a face is a failure


def _oracle(monkeypatch, pick):
    """Replace generation by a chosen frame, so the measurement path is pinned by known answers."""
    from facex_model.pipeline import FaceXOutput, FaceXPipeline

    def output(task, frame):
        blank = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
        return FaceXOutput(Image.fromarray(frame), blank, np.zeros(frame.shape[:2], np.float32), blank,
                           np.zeros((8, 8), np.float32), task)  # fmt: skip

    def generate_many(self, task, pairs, **options):
        return [output(task, pick(source, target)) for source, target in pairs]

    monkeypatch.setattr(FaceXPipeline, "generate_many", generate_many)


def _run(protocol_name, layouts, pipe, out, settings=FAST, max_pairs=8, batch_size=8, **kw) -> dict:
    protocol = get_protocol(protocol_name)
    job = BenchmarkRun(protocol, _roots(protocol, layouts), pipe, "m", out, settings,
                       PairSettings(seed=0, max_pairs=max_pairs, frames_per_video=2), **kw)  # fmt: skip
    return job.run(progress=False, batch_size=batch_size)


def test_an_output_equal_to_the_target_scores_zero_motion_error_and_capped_psnr(layouts, pipe, monkeypatch, tmp_path):
    _oracle(monkeypatch, lambda source, target: target.frame)
    m = _run("ffpp-swap", layouts, pipe, tmp_path, RunSettings(steps=1, fid_features="standin", watermark=False))
    m = m["metrics"]
    assert m["face_detection_rate"] == 1.0 and m["evaluated"] == 8
    assert m["pose_l2"] == m["expression_l2"] == m["gaze_l2"] == 0.0
    assert m["psnr"] == PSNR_CAP_DB and m["ssim"] == pytest.approx(1.0, abs=1e-4) and m["rmse"] == 0.0
    assert m["fid_standin"] == pytest.approx(0.0, abs=1e-3)
    assert m["id_retrieval_top1"] == 0.0  # the target is another person than the source


def test_an_output_equal_to_the_source_has_id_similarity_one_and_is_retrieved(layouts, pipe, monkeypatch, tmp_path):
    _oracle(monkeypatch, lambda source, target: source.frame)
    m = _run("ffpp-swap", layouts, pipe, tmp_path, RunSettings(steps=1, fid_features="standin", watermark=False))
    m = m["metrics"]
    assert m["id_similarity"] == pytest.approx(1.0, abs=1e-5) and m["id_gallery_size"] == 4
    assert m["id_retrieval_top1"] == 1.0 and m["id_retrieval_top5"] == 1.0
    assert m["id_to_target"] < 0.99


def test_outputs_shuffled_across_pairs_lower_retrieval_to_chance(layouts, pipe, monkeypatch, tmp_path):
    frames = {}

    def someone_else(source, target):  # a frame of the previous person seen (the target's until there is one)
        person = source.name.split("#")[0]  # "source <video>#<frame>": one video, one person
        frames.setdefault(person, source.frame)
        names = sorted(frames)
        return frames[names[(names.index(person) - 1) % len(names)]] if len(names) > 1 else target.frame

    _oracle(monkeypatch, someone_else)
    m = _run("ffpp-swap", layouts, pipe, tmp_path, RunSettings(steps=1, fid_features="standin", watermark=False))
    assert m["metrics"]["id_retrieval_top1"] <= 1 / m["metrics"]["id_gallery_size"]


# --- runs ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_every_protocol_runs_and_writes_every_column(name, layouts, pipe, tmp_path):
    protocol = get_protocol(name)
    result = _run(name, layouts, pipe, tmp_path, max_pairs=3)
    metrics = result["metrics"]
    for column in protocol.columns:
        assert column.key in metrics, column.key
    assert metrics["pairs"] == 3 and 0 <= metrics["face_detection_rate"] <= 1
    assert metrics["fid"] is None and metrics["fid_standin"] >= 0  # stand-in features never fill the FID column
    table = (tmp_path / "table.md").read_text()
    assert all(c.label in table for c in protocol.columns) and "FaceX (this implementation: m)" in table
    assert "none on record" in table  # the published rows are reference data that must be entered, not invented
    rows = (tmp_path / "pairs.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("pair,source,target")
    assert Image.open(tmp_path / "grid.png").size[0] == 3 * 128
    assert result["protocol"]["pair_list_sha256"] and result["protocol"]["identity_model"].startswith("backend")


def test_a_rerun_with_other_settings_is_refused_until_overwrite(layouts, pipe, tmp_path):
    _run("reconstruction", layouts, pipe, tmp_path, max_pairs=2)
    with pytest.raises(Exception, match="settings.*--overwrite"):
        _run("reconstruction", layouts, pipe, tmp_path, RunSettings(steps=2, fid_features="standin"), max_pairs=2)
    again = _run("reconstruction", layouts, pipe, tmp_path, RunSettings(steps=2, fid_features="standin"),
                 max_pairs=2, overwrite=True)  # fmt: skip
    assert again["protocol"]["settings"]["steps"] == 2


def test_the_identity_model_for_evaluation_is_configurable_and_reported(layouts, pipe, tmp_path):
    from facex_data.extractors.nets.iresnet import IResNet

    torch.manual_seed(1)
    weights = tmp_path / "weights"
    (weights / "cosface").mkdir(parents=True)
    torch.save(IResNet([1, 1, 1, 1]).state_dict(), weights / "cosface" / "r18.pth")
    settings = RunSettings(steps=1, fid_features="standin", identity_model="cosface/r18.pth")
    result = _run("reconstruction", layouts, pipe, tmp_path / "out", settings, max_pairs=2, weights_dir=weights)
    assert result["protocol"]["identity_model"].startswith("iresnet r18.pth sha256")
    dlib = _run("reconstruction", layouts, pipe, tmp_path / "dlib", RunSettings(steps=1, fid_features="standin",
                identity_model="dlib"), max_pairs=2)  # fmt: skip
    assert dlib["protocol"]["identity_model"] == "dlib-resnet-v1-128"
    with pytest.raises(Exception, match="--id-model nothing.pth: no such file"):
        _run("reconstruction", layouts, pipe, tmp_path / "x", RunSettings(identity_model="nothing.pth"), max_pairs=2)


def test_lpips_fills_its_column_where_the_weights_dir_holds_its_alexnet(layouts, pipe, monkeypatch, tmp_path):
    """Reconstruction's LPIPS (output vs target crop): 0 for an output equal to the target, more for a blank one, per
    pair in pairs.csv; without the AlexNet the column is empty and the table says where the file goes."""
    from facex_train.lpips import alexnet_features

    torch.manual_seed(0)
    weights = tmp_path / "weights"
    (weights / "lpips").mkdir(parents=True)
    trunk = {f"features.{k}": v for k, v in alexnet_features().state_dict().items()}  # torchvision's key layout
    torch.save(trunk, weights / "lpips" / "alexnet-owt-7be5be79.pth")
    settings = RunSettings(steps=1, fid_features="standin", watermark=False)
    _oracle(monkeypatch, lambda source, target: target.frame)
    same = _run("reconstruction", layouts, pipe, tmp_path / "same", settings, max_pairs=3, weights_dir=weights)
    _oracle(monkeypatch, lambda source, target: np.zeros_like(target.frame))
    blank = _run("reconstruction", layouts, pipe, tmp_path / "blank", settings, max_pairs=3, weights_dir=weights)
    missing = _run("reconstruction", layouts, pipe, tmp_path / "missing", settings, max_pairs=3)

    assert same["metrics"]["lpips"] == 0.0 and same["metrics"]["rmse"] == 0.0
    assert blank["metrics"]["lpips"] > 0.01
    per_pair = [line.split(",")[-1] for line in (tmp_path / "blank" / "pairs.csv").read_text().splitlines()]
    assert per_pair[0] == "lpips" and np.mean([float(v) for v in per_pair[1:]]) == pytest.approx(
        blank["metrics"]["lpips"], rel=1e-6)  # fmt: skip
    assert "LPIPS: AlexNet alexnet-owt-7be5be79.pth" in (tmp_path / "blank" / "table.md").read_text()
    assert missing["metrics"]["lpips"] is None
    table = (tmp_path / "missing" / "table.md").read_text()
    assert "LPIPS column empty: no AlexNet at <weights dir>/lpips/alexnet-owt-7be5be79.pth" in table
    assert "download.pytorch.org/models/alexnet-owt-7be5be79.pth" in table
    swap = _run("ffpp-swap", layouts, pipe, tmp_path / "swap", settings, max_pairs=2, weights_dir=weights)
    assert "lpips" not in swap["metrics"]  # a protocol without the column does not compute it


def test_pairs_from_clips_the_model_trained_on_are_counted_and_flagged(layouts, pipe, model_dir, tmp_path):
    """The model folder's train_metrics.json lists its training clips; a reconstruction on them is not held out."""
    clips = sorted(p.stem for p in layouts["clips"].glob("*.mp4"))
    trained = frozenset(clips[:2])
    flagged = _run("reconstruction", layouts, pipe, tmp_path / "flagged", max_pairs=4, trained_on=trained)
    pairs = [json.loads(line) for line in (tmp_path / "flagged" / "pairs.jsonl").read_text().splitlines()[1:]]
    expected = sum(Path(p["source"]["path"]).stem in trained for p in pairs)
    assert 0 < expected < 4 and flagged["metrics"]["pairs_from_training_clips"] == expected
    assert f"NOT HELD OUT: {expected} of 4 pairs read clips the model trained on" in (
        tmp_path / "flagged" / "table.md").read_text()  # fmt: skip
    clean = _run("reconstruction", layouts, pipe, tmp_path / "clean", max_pairs=4, trained_on=frozenset({"other_0"}))
    assert clean["metrics"]["pairs_from_training_clips"] == 0
    assert "held out: no pair reads one of the 1 clips" in (tmp_path / "clean" / "table.md").read_text()
    unknown = _run("reconstruction", layouts, pipe, tmp_path / "unknown", max_pairs=2)
    assert "pairs_from_training_clips" not in unknown["metrics"] and "held out: unknown" in unknown["held_out"]

    # the command reads the list from the model folder and warns before it runs
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    (model / "train_metrics.json").write_text(json.dumps({"clips": {"trained_on": sorted(trained), "held_out": []}}))
    said = []
    result = run_benchmark("reconstruction", {"clips": layouts["clips"]}, str(model), tmp_path / "cli", FAST,
                           PairSettings(seed=0, max_pairs=4, frames_per_video=2), progress=False, say=said.append)
    assert result["metrics"]["pairs_from_training_clips"] == expected
    assert any(m.startswith(f"warning: NOT HELD OUT: {expected} of 4 pairs") for m in said), said


def test_metrics_are_logged_to_the_models_mlflow_run(layouts, pipe, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _run("reconstruction", layouts, pipe, tmp_path / "out", max_pairs=2)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("facex", artifact_location=str(tmp_path / "artifacts"))
    registering = client.create_run(experiment, run_name="register-m").info.run_id
    client.create_registered_model("facex-m")
    version = client.create_model_version("facex-m", str(tmp_path), run_id=registering)
    client.set_registered_model_alias("facex-m", "champion", version.version)

    logged = log_to_mlflow(result, tmp_path / "out", "models:/facex-m@champion", uri, say=lambda m: None)
    assert logged == registering
    run = client.get_run(registering)
    assert run.data.metrics["benchmark.reconstruction.psnr"] == pytest.approx(result["metrics"]["psnr"])
    names = {f.path for f in client.list_artifacts(registering, "benchmarks/reconstruction")}
    assert {"benchmarks/reconstruction/table.md", "benchmarks/reconstruction/metrics.json"} <= names
    assert log_to_mlflow(result, tmp_path / "out", "some/folder", None, say=lambda m: None) is None


@pytest.mark.slow(seconds=35)
def test_a_killed_run_resumes_and_writes_the_same_metrics(layouts, model_dir, tmp_path):
    # one pair per denoising batch: the resumed pairs meet the batches of the whole run, so metrics match bit for bit
    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "facex_data.cli", "benchmark", "run", "ffpp-swap", "--root", str(layouts["ffpp"]),
                "--model", str(model_dir), "--out", str(out), "--max-pairs", "8", "--steps", "2",
                "--fid", "standin", "--no-progress", "--batch-size", "1"]  # fmt: skip

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"OMP_NUM_THREADS": "1"}
    whole = subprocess.run(command(tmp_path / "whole"), capture_output=True, text=True, env=env, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "| FaceX (this implementation:" in whole.stdout

    job = subprocess.Popen(command(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    rows = tmp_path / "killed" / "ffpp-swap" / model_dir.name / "rows"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(rows.glob("*.json"))) < 3:
        time.sleep(0.2)
    job.send_signal(signal.SIGKILL)
    job.wait()
    done = len(list(rows.glob("*.json")))
    assert 3 <= done < 8, f"{done} pairs finished before the kill"
    resumed = subprocess.run(command(tmp_path / "killed"), capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    name = model_dir.name
    a = json.loads((tmp_path / "whole" / "ffpp-swap" / name / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "ffpp-swap" / name / "metrics.json").read_text())
    assert a == b


def test_the_cli_reports_a_bad_root_in_one_line_before_loading_the_model(tmp_path):
    from facex_data.cli import app, load_commands

    missing_model = tmp_path / "no-model"  # the root is checked first: no model is loaded to say it is wrong
    result = CliRunner().invoke(load_commands(app), ["benchmark", "run", "ffhq-headswap", "--root", str(tmp_path),
                                                     "--model", str(missing_model), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"error: FFHQ: expected the folder {tmp_path / ds.FFHQ_IMAGES}" in result.output
    assert not (tmp_path / "o").exists()


def test_a_tracking_server_that_is_down_is_reported_before_the_model_loads(layouts, tmp_path):
    from tests.helpers import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # the results would be logged there only after every pair
    roots, pairs = _roots(get_protocol("reconstruction"), layouts), PairSettings(seed=0, max_pairs=2)
    with pytest.raises(BenchmarkError, match=f"the MLflow server at {dead} does not answer"):
        run_benchmark("reconstruction", roots, str(tmp_path / "no-model"), tmp_path / "o", FAST, pairs,
                      progress=False, tracking_uri=dead)  # fmt: skip
    assert not (tmp_path / "o").exists()


def test_a_pair_whose_input_holds_no_face_is_skipped_and_counted(layouts, pipe, tmp_path):
    ffhq = tmp_path / "ffhq"
    shutil.copytree(layouts["ffhq"], ffhq)
    Image.new("RGB", (256, 256), (90, 120, 150)).save(ffhq / ds.FFHQ_IMAGES / "00000" / "00009.png")  # no face
    protocol = get_protocol("ffhq-headswap")
    job = BenchmarkRun(protocol, {"ffhq": ffhq}, pipe, "m", tmp_path / "out", FAST, PairSettings(seed=0, max_pairs=10))
    result = job.run(progress=False, batch_size=4)  # a faceless pair leaves the others of its batch to go on
    rows = {r["pair"]: r for r in job.rows()}
    faceless = [i for i, p in enumerate(job.pair_list["pairs"])
                if "00009" in (p["source"]["path"] + p["target"]["path"])]  # fmt: skip
    assert faceless and all(rows[i]["status"].startswith("no face in input") for i in faceless)
    m = result["metrics"]
    assert m["skipped_inputs"] == len(faceless) and m["evaluated"] == 10 - len(faceless) and m["pairs"] == 10
    assert "00009.png" in (tmp_path / "out" / "pairs.csv").read_text()  # every pair accounted for


@pytest.mark.real
def test_batched_pairs_score_as_one_at_a_time(layouts, pipe, tmp_path):
    plain = RunSettings(steps=1, fid_features="standin", watermark=False)
    one = _run("ffpp-swap", layouts, pipe, tmp_path / "one", plain, max_pairs=5, batch_size=1)
    batched = _run("ffpp-swap", layouts, pipe, tmp_path / "batched", plain, max_pairs=5, batch_size=3)  # 3 + 2
    for index in range(5):
        a, b = (np.asarray(Image.open(tmp_path / d / "outputs" / f"{index:06d}.png"), np.int16)
                for d in ("one", "batched"))  # fmt: skip
        assert np.abs(a - b).max() <= 4 and np.abs(a - b).mean() < 0.05, index  # float rounding at most
    assert batched["metrics"]["psnr"] == pytest.approx(one["metrics"]["psnr"], abs=0.05)
    assert batched["metrics"]["evaluated"] == one["metrics"]["evaluated"] == 5
