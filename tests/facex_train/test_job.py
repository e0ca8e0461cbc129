"""A training job: built from the stage configs as they are, serialised for Ray exactly, named by what shapes it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from facex_data.paths import InputPath
from facex_model.model import FaceXConfig
from facex_train.code import module_closure
from facex_train.config import ComputeConfig, ModelConfig, TrainConfig
from facex_train.train import LOCAL_POLL_INTERVAL_S, POLL_INTERVAL_ENV, TRAJECTORY_ROOTS, TrainJob
from tests.helpers import ray_head


def _job(**train) -> TrainJob:
    config = TrainConfig(shards=InputPath("/data/shards"), model=ModelConfig(rep_dim=32, inp_channels=(8, 16)), **train)
    return TrainJob(name="generalist", task="headswap", steps=3, model_config=FaceXConfig("/b").to_json(),
                    train=config, compute=ComputeConfig(num_workers=2), holdout=["a_1"], model_dir="/o",
                    storage_path="/s")  # fmt: skip


def test_a_job_survives_the_json_trip_to_the_workers():
    job = _job(learning_rate=3e-4)
    back = TrainJob.from_json(job.to_json())
    assert back == job and isinstance(back.train.shards, InputPath) and back.train.model.inp_channels == (8, 16)


def test_the_run_name_follows_what_shapes_the_trajectory_only():
    base = _job().run_name()
    assert base.startswith("generalist-") and _job().run_name() == base
    assert _job(learning_rate=3e-4).run_name() != base
    assert dataclasses.replace(_job(), steps=4).run_name() != base
    assert _job(timestep_sampling="logit_normal").run_name() != base
    assert _job(timestep_sampling="logit_normal", logit_mean=2.0).run_name() != _job(
        timestep_sampling="logit_normal").run_name()
    assert _job(latent_cache_mb=0).run_name() != base  # encoding per step rounds differently: a new trajectory
    for unshaping in (dict(log_every=5), dict(cache_mb=0), dict(prefetch=False), dict(checkpoint_every=3)):
        assert _job(**unshaping).run_name() == base, unshaping
    assert dataclasses.replace(_job(), model_dir="/elsewhere", storage_path="/x").run_name() == base


def test_the_model_folder_records_the_clips_it_learned_from(tmp_path):
    """Written clips less the held-out ones, plus what a specialist's generalist learned from; skipped clips never."""
    import json

    from facex_train.train import training_clips

    shards = tmp_path / "shards"
    shards.mkdir()
    ledger = [{"clip_id": c, "status": "written"} for c in ("a_0", "a_1", "b_0", "c_0")]
    ledger.append({"clip_id": "bad_0", "status": "failed"})
    (shards / "ledger.json").write_text(json.dumps({"clips": ledger}))
    job = dataclasses.replace(_job(), train=dataclasses.replace(_job().train, shards=InputPath(shards)),
                              holdout=["c_0"])  # fmt: skip
    assert training_clips(job) == {"trained_on": ["a_0", "a_1", "b_0"], "held_out": ["c_0"]}
    parent = tmp_path / "generalist"
    parent.mkdir()
    (parent / "train_metrics.json").write_text(json.dumps({"clips": {"trained_on": ["c_0", "z_9"]}}))
    specialist = dataclasses.replace(job, init_from=str(parent))
    assert training_clips(specialist) == {"trained_on": ["a_0", "a_1", "b_0", "c_0", "z_9"], "held_out": []}


def test_the_code_hash_covers_the_model_and_training_modules_not_inference():
    names = {p.name for p in module_closure(TRAJECTORY_ROOTS)}
    assert {"train.py", "pairs.py", "model.py", "frc.py", "fors.py", "ford.py", "features.py", "shards.py"} <= names
    assert not {"pipeline.py", "video.py", "cli.py", "evaluation.py", "watermark.py"} & names


def test_a_local_ray_session_serves_the_state_api_on_localhost_only_and_ends_with_the_stage(monkeypatch):
    """Ray Train's placement-group cleaner polls the state API each second; without the dashboard it can't (and logs
    a warning every second of a run)."""
    import ray
    from ray.util.state import list_actors

    from facex_train.train import ray_session

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(POLL_INTERVAL_ENV, raising=False)
    assert not ray.is_initialized()
    with ray_session(num_workers=1) as context:
        assert ray.is_initialized()
        # raises RayStateApiException without a dashboard
        assert isinstance(list_actors(address=context.address_info["address"]), list)
        assert context.address_info["webui_url"].split(":")[0] == "127.0.0.1", context.address_info
        assert os.environ[POLL_INTERVAL_ENV] == LOCAL_POLL_INTERVAL_S  # Ray Train reads it when a run starts
    assert not ray.is_initialized()
    assert POLL_INTERVAL_ENV not in os.environ  # the stage's setting ends with the stage


def test_a_local_ray_session_polls_at_the_users_interval_where_one_is_set(monkeypatch):
    import ray

    from facex_train.train import ray_session

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv(POLL_INTERVAL_ENV, "3")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: "context")
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with ray_session(num_workers=2):
        assert os.environ[POLL_INTERVAL_ENV] == "3"
    assert os.environ[POLL_INTERVAL_ENV] == "3"


def test_a_ray_session_connects_to_the_cluster_a_job_was_submitted_to_without_sizing_it(monkeypatch):
    """`ray job submit` sets RAY_ADDRESS; ray.init must then get no num_cpus (Ray refuses it when connecting)."""
    import ray

    from facex_train.train import ray_session

    calls = []
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setattr(ray, "is_initialized", lambda: bool(calls) and calls[-1] != "shutdown")
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs) or "context")
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    monkeypatch.delenv(POLL_INTERVAL_ENV, raising=False)
    with ray_session(num_workers=4) as context:
        with ray_session(num_workers=4) as inner:  # inside a running session: used as it is
            assert inner is None
        assert context == "context"
        assert POLL_INTERVAL_ENV not in os.environ  # a cluster's Ray Train keeps its own polling
    assert calls == [{"log_to_driver": True}, "shutdown"]


TRAIN_BESIDE_A_CLUSTER = """
import time
import ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from facex_train.train import ray_session

def loop(config):
    import os
    print("workers polled every", os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"], flush=True)
    time.sleep(6)  # the placement-group cleaner checks its controller about once a second meanwhile
    ray.train.report({"done": 1})

with ray_session(num_workers=2):
    result = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2),
                          run_config=RunConfig(name="beside", storage_path=%r)).fit()
print("finished, error:", result.error)
"""


@pytest.mark.slow(seconds=90)
def test_a_training_stage_beside_a_ray_start_cluster_runs_on_its_own_ray_and_keeps_its_workers(tmp_path):
    """A `ray start` head on the machine (its address in Ray's temp dir, as after `ray start` for `ray job submit`):
    a stage without RAY_ADDRESS starts its own Ray, and Ray Train's placement-group cleaner watches that one (asking
    the other, it found no controller and removed the run's placement group, killing its workers)."""
    # a short temp dir: Ray's unix socket paths are length-limited
    with tempfile.TemporaryDirectory(prefix="fxr", dir="/tmp", ignore_cleanup_errors=True) as name:
        temp = Path(name)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
            "RAY_TMPDIR": name, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}  # fmt: skip
        with ray_head("--num-cpus=1", env=env) as (head, _):
            deadline = time.monotonic() + 120
            while not (temp / "ray" / "ray_current_cluster").is_file():
                assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
                time.sleep(1)
            run = subprocess.run([sys.executable, "-c", TRAIN_BESIDE_A_CLUSTER % str(tmp_path / "runs")], env=env,
                                 capture_output=True, text=True, timeout=300)  # fmt: skip
            out = run.stdout + run.stderr
            assert run.returncode == 0, out[-3000:]
            assert "finished, error: None" in run.stdout
            assert "workers polled every 0.5" in out  # the session's interval reached Ray Train's processes
            for symptom in ("Found multiple active Ray instances", "is dead. Cleaning up placement group",
                            "Failed to register placement group with cleaner", "Failed to query Ray Train Controller",
                            "FailurePolicy"):  # fmt: skip
                assert symptom not in out, out[-3000:]


def test_the_run_name_follows_what_the_input_folders_hold(tmp_path):
    """Retraining the backbone (or a specialist's generalist) under the same path must not resume the old run: its
    final checkpoint would come back as the new model. The runs' own records (wall seconds) are not content."""
    backbone, shards, generalist = tmp_path / "backbone", tmp_path / "shards", tmp_path / "generalist"
    for folder in (backbone / "unet", shards, generalist):
        folder.mkdir(parents=True)
    weights = backbone / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(bytes(3 << 20))  # 3 MiB: its middle is not read
    (shards / "shard-000000.tar").write_bytes(b"tar")
    (generalist / "model.safetensors").write_bytes(b"weights-1")

    def job(**changes):
        config = TrainConfig(shards=InputPath(shards), backbone=backbone)
        return dataclasses.replace(_job(), train=config, name="swap", **{"init_from": str(generalist), **changes})

    base = job().run_name()
    (backbone / "run_record.json").write_text('{"vae_seconds": 1}')
    (shards / "runs.jsonl").write_text("{}\n")
    (generalist / "run_record.json").write_text('{"timings": []}')
    assert job().run_name() == base
    data = bytearray(weights.read_bytes())
    data[-1] = 1  # a retrained backbone of the same architecture: same size, other bytes
    weights.write_bytes(bytes(data))
    changed = job().run_name()
    assert changed != base
    (generalist / "model.safetensors").write_bytes(b"weights-2")  # the generalist retrained
    assert job().run_name() not in (base, changed)
    assert job(init_from=None).run_name() != job().run_name()
