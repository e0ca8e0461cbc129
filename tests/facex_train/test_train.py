"""Training through Ray Train's TorchTrainer on 2 CPU workers: learning, checkpoints, exact resume, retries."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from facex_data.extraction import ExtractConfig, run_extraction
from facex_data.layout import written_clips
from facex_data.manifest import FrameSelection
from facex_data.paths import InputPath
from facex_model.model import RUN_RECORD, FaceXConfig, FaceXModel
from facex_train.config import ComputeConfig, TrainConfig
from facex_train.pairs import POSITION, DataPosition, PairConfig, pair_loader
from facex_train.train import STATE_JSON, TrainJob

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def train_shards(small_sample, tmp_path_factory) -> Path:
    """Shards of the small sample: 2 clips (one per person), 6 frames each, one shard per clip."""
    out = tmp_path_factory.mktemp("train_shards")
    sampling = FrameSelection(mode="per_clip", frames_per_clip=6, min_clip_frames=4)
    run_extraction(ExtractConfig(input_dir=small_sample, out_dir=out, frames=sampling, clips_per_shard=1,
                                 batch_size=6, runner="local", progress=False))  # fmt: skip
    return out


def _job(tiny_backbone, shards, tmp_path, steps: int = 12, **train) -> TrainJob:
    config = TrainConfig(**{**dict(shards=InputPath(shards), batch_size=2, learning_rate=1e-3, checkpoint_every=4,
                                   resolution=32, pairs_per_clip=3, max_failures=2), **train})  # fmt: skip
    model = FaceXConfig.tiny(tiny_backbone, task="headswap", resolution=32).to_json()
    return TrainJob(name="generalist", task="headswap", steps=steps, model_config=model, train=config,
                    compute=ComputeConfig(num_workers=2), model_dir=str(tmp_path / "model"),
                    storage_path=str(tmp_path / "ray"))  # fmt: skip


def _run_driver(job: TrainJob, tmp_path: Path, name: str) -> subprocess.Popen:
    """The trainer in its own process group (a job the test can kill whole)."""
    spec = tmp_path / f"{name}.json"
    spec.write_text(json.dumps(job.to_json()))
    code = (
        "import json, sys, ray; from facex_train.train import TrainJob, fit\n"
        "job = TrainJob.from_json(json.load(open(sys.argv[1])))\n"
        "ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)\n"
        "print(json.dumps(fit(job)))\n"
    )
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - the child owns it
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen([sys.executable, "-c", code, str(spec)], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # fmt: skip


def _wait_for_registered(job: TrainJob, step: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    """Until Ray Train has registered the checkpoint of `step` (or a later one) in its checkpoint manager snapshot:
    what a restarted job resumes from. A checkpoint folder on disk is not yet registered; under load the
    registration lags several checkpoints behind the files."""
    deadline = time.time() + timeout
    while True:
        for snapshot in Path(job.storage_path).glob("*/checkpoint_manager_snapshot.json"):
            try:
                latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result") or {}
            except (OSError, json.JSONDecodeError):  # being rewritten: read it again
                continue
            if (latest.get("metrics") or {}).get("step", -1) >= step:
                return
        assert proc.poll() is None, f"trainer exited early ({proc.returncode})"
        assert time.time() < deadline, f"Ray Train registered no checkpoint of step >= {step} after {timeout}s"
        time.sleep(0.05)


def _result(job: TrainJob) -> tuple[list[float], dict[str, torch.Tensor]]:
    summary = json.loads((Path(job.model_dir) / "train_metrics.json").read_text())
    return summary["losses"], load_file(Path(job.model_dir) / "facex_trainable.safetensors")


def _fixed_loss(model: FaceXModel, batch: dict) -> float:
    """Denoising loss with fixed noise, timesteps and no condition drop: comparable before/after training."""
    generator = torch.Generator().manual_seed(99)
    drop = torch.zeros(batch["target_image"].shape[0], dtype=torch.bool)
    with torch.no_grad():
        return float(model.training_loss(batch, "headswap", generator=generator, drop_mask=drop))


@pytest.fixture(scope="module")
def uninterrupted(tiny_backbone, train_shards, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    job = _job(tiny_backbone, train_shards, tmp, steps=40, checkpoint_every=5)
    proc = _run_driver(job, tmp, "run")
    assert proc.wait(timeout=600) == 0, (tmp / "run.log").read_text()[-3000:]
    return job, *_result(job)


def test_pair_stream_is_seeded_and_resumes_exactly(train_shards):
    config = PairConfig(resolution=32, pairs_per_clip=3, seed=5)
    first = iter(pair_loader(train_shards, config, batch_size=2))
    batches = [next(first) for _ in range(6)]
    again = next(iter(pair_loader(train_shards, config, batch_size=2)))
    assert torch.equal(again["source_image"], batches[0]["source_image"])
    resumed = next(iter(pair_loader(train_shards, config, batch_size=2, position=batches[3][POSITION])))
    assert torch.equal(resumed["target_image"], batches[4]["target_image"])
    assert batches[5][POSITION] == DataPosition(epoch=batches[5][POSITION].epoch, index=batches[5][POSITION].index)
    # ranks read disjoint clips when there are fewer shards than readers
    clips = [written_clips(train_shards)]
    assert len(clips[0]) == 2
    held = {clips[0][0]}
    only_other = next(iter(pair_loader(train_shards, config, batch_size=4, holdout=held)))
    assert only_other["source_image"].shape[0] == 4


def test_shard_cache_reads_each_tar_once_and_keeps_the_stream(train_shards, monkeypatch):
    from facex_train import pairs as data

    reads, real = [], data.iter_clips

    def counted(url):
        reads.append(url)
        yield from real(url)

    monkeypatch.setattr(data, "iter_clips", counted)
    streams = {}
    for cache_mb in (0, 512):
        reads.clear()
        loader = iter(pair_loader(train_shards, PairConfig(resolution=16, pairs_per_clip=2, cache_mb=cache_mb), 2))
        streams[cache_mb] = [next(loader) for _ in range(12)]  # several epochs of this small set
        assert streams[cache_mb][-1][POSITION].epoch >= 2
        epochs = streams[cache_mb][-1][POSITION].epoch + 1
        shards = len(data.shard_urls(train_shards))
        assert len(reads) == (shards * epochs if cache_mb == 0 else shards)
    for a, b in zip(*streams.values(), strict=True):
        assert a[POSITION] == b[POSITION] and torch.equal(a["source_image"], b["source_image"])


def test_kept_frames_decode_once_within_budget_and_keep_the_stream(train_shards, monkeypatch):
    from facex_train import pairs as data

    decodes, real = [], data.decode_arrays

    def counted(raw):
        decodes.append(raw["__key__"])
        return real(raw)

    monkeypatch.setattr(data, "decode_arrays", counted)
    streams, counts = {}, {}
    for cache_mb, decoded_mb in ((0, 256), (512, 0), (512, 256), (512, 0.01)):
        decodes.clear()
        config = PairConfig(resolution=16, pairs_per_clip=2, cache_mb=cache_mb, decoded_cache_mb=decoded_mb)
        loader = iter(pair_loader(train_shards, config, 2))
        streams[cache_mb, decoded_mb] = [next(loader) for _ in range(12)]  # several epochs of this small set
        counts[cache_mb, decoded_mb] = (len(decodes), len(set(decodes)))
    assert counts[0, 256] == counts[512, 0]  # streamed shards, or no room: every pair decodes both frames
    total, distinct = counts[512, 256]
    assert total < counts[512, 0][0]  # kept frames decode once: in the first epoch (read), then once more, kept
    assert total <= 2 * distinct
    assert counts[512, 256][0] < counts[512, 0.01][0] < counts[512, 0][0]  # a budget of a few frames keeps a few
    reference = streams[0, 256]
    for stream in streams.values():
        for a, b in zip(reference, stream, strict=True):
            assert a[POSITION] == b[POSITION]
            assert all(torch.equal(a[key], b[key]) for key in a if key != POSITION)


@pytest.mark.slow(seconds=65)
def test_two_workers_learn_and_checkpoint(uninterrupted, tiny_backbone, train_shards):
    job, losses, weights = uninterrupted
    assert len(losses) == 40 and all(torch.isfinite(torch.tensor(losses)))
    summary = json.loads((Path(job.model_dir) / "train_metrics.json").read_text())
    assert summary["clips"] == {"trained_on": written_clips(train_shards), "held_out": []}  # what benchmarks check
    # the results apart from this run's own record (wall times, run name, resumes: .dvcignore'd), and the backbone
    # named from the model folder: the same bytes in every checkout
    record = json.loads((Path(job.model_dir) / RUN_RECORD).read_text())
    assert record["resumed_at"] == [] and len(record["timings"]) == 40 and not {"timings", "run_name"} & set(summary)
    written = json.loads((Path(job.model_dir) / "config.json").read_text())["backbone_path"]
    assert not Path(written).is_absolute() and (Path(job.model_dir) / written).resolve() == tiny_backbone.resolve()
    run = Path(job.storage_path) / record["run_name"]
    checkpoints = sorted(p.name for p in run.glob("step-*"))
    assert checkpoints[-1] == "step-00000040" and len(checkpoints) <= job.train.num_to_keep
    final = run / "step-00000040"
    assert {"config.json", "facex_trainable.safetensors", "train_state.safetensors", "rank-0.json", "rank-1.json"} <= {
        p.name for p in final.iterdir()
    }
    # the loss falls on a fixed small set: the trained model vs the same initialisation, same fixed noise
    batch = next(iter(pair_loader(train_shards, PairConfig(resolution=32, seed=3), batch_size=4)))
    batch.pop(POSITION)
    torch.manual_seed(job.train.seed)
    initial = FaceXModel(FaceXConfig.from_json(job.model_config)).eval()
    trained = FaceXModel.from_pretrained(job.model_dir).eval()
    assert _fixed_loss(trained, batch) < _fixed_loss(initial, batch)


@pytest.mark.slow(seconds=90)
def test_killed_job_resumes_on_the_same_trajectory(uninterrupted, tiny_backbone, train_shards, tmp_path):
    reference, ref_losses, ref_weights = uninterrupted
    job = dataclasses.replace(reference, model_dir=str(tmp_path / "model"), storage_path=str(tmp_path / "ray"))
    proc = _run_driver(job, tmp_path, "first")
    _wait_for_registered(job, 10, proc)  # the step-10 checkpoint (or a later one) is registered with Ray Train
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job: driver, local Ray, workers
    proc.wait(timeout=60)
    assert not (Path(job.model_dir) / "train_metrics.json").exists()
    again = _run_driver(job, tmp_path, "second")
    assert again.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    summary = json.loads((Path(job.model_dir) / RUN_RECORD).read_text())
    assert len(summary["resumed_at"]) == 1 and 10 <= summary["resumed_at"][0] < 40
    losses, weights = _result(job)
    assert losses == pytest.approx(ref_losses, rel=1e-5, abs=1e-6)
    for key, value in ref_weights.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow(seconds=70)
def test_a_killed_worker_is_retried_and_the_run_finishes(uninterrupted, tmp_path):
    reference, ref_losses, ref_weights = uninterrupted
    job = dataclasses.replace(reference, model_dir=str(tmp_path / "model"), storage_path=str(tmp_path / "ray"))
    proc = _run_driver(job, tmp_path, "run")
    _wait_for_registered(job, 5, proc)  # the step-5 checkpoint (or a later one) is registered with Ray Train
    driver = psutil.Process(proc.pid)
    workers = [p for p in driver.children(recursive=True) if "RayTrainWorker" in " ".join(p.cmdline())]
    if not workers:  # Ray names worker processes after the actor class
        workers = [p for p in psutil.process_iter(["cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]
    assert workers, "no Ray Train worker process found"
    workers[-1].kill()
    assert proc.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert "[FailurePolicy] RETRY" in (tmp_path / "run.log").read_text()
    summary = json.loads((Path(job.model_dir) / RUN_RECORD).read_text())
    assert len(summary["resumed_at"]) == 1 and 5 <= summary["resumed_at"][0] < 40  # from a checkpoint, not step 0
    losses, weights = _result(job)
    assert losses == pytest.approx(ref_losses, rel=1e-5, abs=1e-6)
    for key, value in ref_weights.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow(seconds=45)
def test_an_fp16_run_learns_and_checkpoints_its_loss_scale(tiny_backbone, train_shards, tmp_path):
    """compute.mixed_precision fp16 through Ray Train (CPU autocast here; CUDA on a cluster): every step's loss is
    finite, the model learns, and the checkpoint holds the gradient scaler's state for a resume."""
    job = _job(tiny_backbone, train_shards, tmp_path, steps=20, checkpoint_every=10)
    job = dataclasses.replace(job, compute=ComputeConfig(num_workers=2, mixed_precision="fp16"))
    proc = _run_driver(job, tmp_path, "fp16")
    assert proc.wait(timeout=600) == 0, (tmp_path / "fp16.log").read_text()[-3000:]
    losses, _ = _result(job)
    assert len(losses) == 20 and all(torch.isfinite(torch.tensor(losses)))
    summary = json.loads((Path(job.model_dir) / RUN_RECORD).read_text())
    state = json.loads((Path(job.storage_path) / summary["run_name"] / "step-00000020" / STATE_JSON).read_text())
    assert state["grad_scaler"]["scale"] > 0 and state["grad_scaler"]["growth_interval"] == 2000
    batch = next(iter(pair_loader(train_shards, PairConfig(resolution=32, seed=3), batch_size=4)))
    batch.pop(POSITION)
    torch.manual_seed(job.train.seed)
    initial = FaceXModel(FaceXConfig.from_json(job.model_config)).eval()
    trained = FaceXModel.from_pretrained(job.model_dir).eval()
    assert _fixed_loss(trained, batch) < _fixed_loss(initial, batch)


def test_batch_size_must_split_over_workers(tiny_backbone, train_shards, tmp_path):
    job = _job(tiny_backbone, train_shards, tmp_path, batch_size=3)
    with pytest.raises(ValueError, match="multiple of num_workers"):
        job.micro_batch  # noqa: B018
