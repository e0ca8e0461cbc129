"""pipelines/extract.py as DVC and `ray job submit` run it: a separate process with its own (or a cluster's) Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from facex_data.layout import complete_shards
from facex_data.shards import decode_arrays, iter_samples
from facex_model.backbone import build_tiny_backbone
from tests.helpers import TINY_MODEL, ray_head

REPO = Path(__file__).resolve().parents[2]
STAGE = REPO / "pipelines" / "extract.py"
VENV_BIN = Path(sys.executable).parent


def _params(tmp_path: Path, input_dir: Path, out: Path, **extract) -> Path:
    section = {"input_dir": str(input_dir), "out_dir": str(out), "clips_per_shard": 1, "batch_size": 2,
               "max_inflight_batches": 2, "frames": {"mode": "every_k", "every_k": 4, "min_clip_frames": 4},
               **extract}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"extract": section}))
    return path


def _env() -> dict:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}


def _keys(out: Path) -> list[str]:
    return [s["__key__"] for tar in sorted(out.glob("shard-*.tar")) for s in iter_samples(tar)]


# Ray's job server answers this (HTTP 500, nothing submitted) while the head's dashboard agent has not registered
# yet: it waits only 10 s for one, and on a loaded 2-core host the agent can take longer to come up after the head.
NO_AGENT_YET = "No available agent to submit job"


def _submit(address: str, head: subprocess.Popen, *stage: str) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir . -- python STAGE...` to the head at `address`, as a user runs it; resubmitted
    while Ray says the head has no job agent yet (Ray's own advice: "please try again later")."""
    deadline = time.monotonic() + 180
    while True:
        job = subprocess.run(
            [str(VENV_BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--",
             "python", *stage],
            env=_env(), cwd=REPO, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        no_agent_yet = job.returncode != 0 and NO_AGENT_YET in job.stdout + job.stderr
        if not no_agent_yet or head.poll() is not None or time.monotonic() > deadline:
            return job
        time.sleep(2)


@pytest.fixture(scope="module")
def six_clips(small_sample, tmp_path_factory) -> Path:
    """Six clips (the two sample clips, three times each under other ids), so a run lasts long enough to kill."""
    root = tmp_path_factory.mktemp("six_clips")
    (root / "35666").mkdir()
    for src in sorted((small_sample / "35666").glob("*.mp4")):
        for k in range(3):
            (root / "35666" / f"{src.stem}-copy{k}.mp4").write_bytes(src.read_bytes())
    return root


@pytest.mark.slow(seconds=35)
def test_killed_job_resumes_to_the_same_shards_as_an_uninterrupted_run(six_clips, tmp_path):
    reference = tmp_path / "reference"
    (tmp_path / "ref").mkdir()
    ref_params = _params(tmp_path / "ref", six_clips, reference, runner="local")
    subprocess.run([sys.executable, str(STAGE), "--params", str(ref_params), "--no-progress"], env=_env(), check=True,
                   capture_output=True, timeout=300)

    out = tmp_path / "shards"
    params = _params(tmp_path, six_clips, out)
    cmd = [sys.executable, str(STAGE), "--params", str(params), "--no-progress"]
    job = subprocess.Popen(cmd, env=_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (out / "shard-000000.stats.json").exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)  # the whole job: driver and the local Ray it started
    job.wait()
    complete_at_kill = sorted(p.name for p in out.glob("shard-*.stats.json"))
    assert 1 <= len(complete_at_kill) < 6, f"the kill should land mid-run, found {complete_at_kill}"

    rerun = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    ledger = json.loads((out / "ledger.json").read_text())
    last_run = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
    assert set(last_run["shards_written_this_run"]).isdisjoint(n.removesuffix(".stats.json")
                                                               for n in complete_at_kill)
    assert ledger["totals"]["clips_written"] == 6
    ref_bytes = {p.name: p.read_bytes() for p in sorted(reference.glob("shard-*.tar"))}
    assert {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.tar"))} == ref_bytes
    assert _keys(out) == _keys(reference) and len(set(_keys(out))) == len(_keys(out))
    assert not list(out.glob(".*tmp")), "no temp files may be left behind"


@pytest.mark.slow(seconds=120)
def test_ray_job_submit_to_a_local_cluster_then_read_the_shards(small_sample, tmp_path):
    out = tmp_path / "shards"
    params = _params(tmp_path, small_sample, out)
    # a short temp dir: Ray's unix socket paths are length-limited
    with tempfile.TemporaryDirectory(prefix="fxray", dir="/tmp", ignore_cleanup_errors=True) as temp_dir, \
            ray_head("--num-cpus=2", f"--temp-dir={temp_dir}", env=_env(), cwd=REPO) as (head, dashboard):  # fmt: skip
        address = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 120
        while True:  # the head's dashboard answers
            probe = subprocess.run([str(VENV_BIN / "ray"), "job", "list", "--address", address], env=_env(),
                                   capture_output=True, timeout=60)
            if probe.returncode == 0:
                break
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(1)
        job = _submit(address, head, "pipelines/extract.py", "--params", str(params), "--no-progress")
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-2000:]
        assert "succeeded" in job.stdout
        # the training stage on the same cluster, on those shards (2 Ray Train workers, a couple of steps)
        train_params = yaml.safe_load(params.read_text()) | {
            "train": {"shards": str(out), "backbone": str(build_tiny_backbone(tmp_path / "backbone")),
                      "out_dir": str(tmp_path / "trained"), "model": TINY_MODEL,
                      "generalist_steps": 2, "batch_size": 2, "resolution": 32, "pairs_per_clip": 2,
                      "checkpoint_dir": str(tmp_path / "ray_train")},
            "split": {"holdout_every": 0},
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_dir": str(tmp_path / "mlartifacts")},
        }  # fmt: skip
        (tmp_path / "train.yaml").write_text(yaml.safe_dump(train_params))
        train = _submit(address, head, "pipelines/train.py", "generalist", "--params", str(tmp_path / "train.yaml"))
        assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-2000:]
        record = json.loads((tmp_path / "trained" / "generalist" / "train_metrics.json").read_text())
        assert record["steps"] == 2 and len(record["losses"]) == 2
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["totals"]["clips_written"] == 2 and ledger["totals"]["shards"] == 2
    samples = [decode_arrays(s) for url in complete_shards(out) for s in iter_samples(url)]
    assert len(samples) == ledger["totals"]["samples"] > 0
    assert samples[0]["image"].shape[-1] == 3 and samples[0]["meta"]["extractors"]["backend"] == "offline"
