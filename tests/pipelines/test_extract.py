"""The extract stage's Ray runner in-process: same shards as the one-process loop, survives a killed actor."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from facex_data.extraction import ExtractConfig, run_extraction
from facex_data.manifest import FrameSelection
from facex_data.shards import iter_samples


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _cfg(small_sample, out, **kw) -> ExtractConfig:
    base = dict(input_dir=small_sample, out_dir=out, frames=FrameSelection(mode="every_k", every_k=3,
                min_clip_frames=4), clips_per_shard=1, batch_size=3, progress=False)
    return ExtractConfig(**{**base, **kw})


def _shard_bytes(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.tar"))}


@pytest.fixture(scope="module")
def reference(small_sample, tmp_path_factory):
    """The same extraction by the plain one-process loop."""
    out = tmp_path_factory.mktemp("reference")
    summary = run_extraction(_cfg(small_sample, out, runner="local"))
    return summary, out


def test_ray_runner_writes_the_same_bytes_as_the_sequential_loop(local_ray, small_sample, reference, tmp_path):
    ref_summary, ref_out = reference
    summary = run_extraction(_cfg(small_sample, tmp_path))
    assert summary.samples == ref_summary.samples > 10
    assert _shard_bytes(tmp_path) == _shard_bytes(ref_out)
    ledger = json.loads((tmp_path / "ledger.json").read_text())
    assert [c["status"] for c in ledger["clips"]] == ["written", "written"]
    assert sum(c["frames"] for c in ledger["clips"]) == summary.samples


def test_the_same_extraction_leaves_the_same_folder_bytes(small_sample, reference, tmp_path):
    """Shards, stats and ledger are byte-identical across runs (a DVC output that does not change when
    the stage re-runs); only runs.jsonl, which .dvcignore excludes, records each run's timings."""
    _, ref_out = reference
    run_extraction(_cfg(small_sample, tmp_path, runner="local"))
    same = sorted(p.name for p in ref_out.iterdir() if p.name != "runs.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "runs.jsonl") == same
    assert all((tmp_path / name).read_bytes() == (ref_out / name).read_bytes() for name in same)
    run = json.loads((tmp_path / "runs.jsonl").read_text())
    assert run["seconds"] > 0 and run["runner"] == "local" and len(run["shards_written_this_run"]) == 2
    assert "runs.jsonl" in (Path(__file__).parents[2] / ".dvcignore").read_text().split()


def test_rerun_skips_complete_shards_and_redoes_incomplete_ones(local_ray, small_sample, reference, tmp_path):
    run_extraction(_cfg(small_sample, tmp_path))
    (tmp_path / "shard-000001.stats.json").unlink()  # as if the run died before shard 1's marker
    (tmp_path / "shard-000001.tar").write_bytes(b"half a tar")
    summary = run_extraction(_cfg(small_sample, tmp_path))
    assert (summary.shards_skipped_complete, summary.shards_written) == (1, 1)
    assert summary.ledger["run"]["shards_written_this_run"] == ["shard-000001"]
    assert _shard_bytes(tmp_path) == _shard_bytes(reference[1])


def _kill_first_busy_extractor(stop: threading.Event, killed: list) -> None:
    """SIGKILL the first Ray worker seen running FrameExtractor.__call__ (this test's own Ray)."""
    me = psutil.Process()
    while not stop.is_set() and not killed:
        for proc in me.children(recursive=True):
            try:
                title = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if "ray::FrameExtractor.__call__" in title:
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
                return
        time.sleep(0.02)


def test_killing_an_extractor_actor_mid_run_loses_no_sample(local_ray, small_sample, reference, tmp_path):
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_busy_extractor, args=(stop, killed), daemon=True)
    killer.start()
    try:
        summary = run_extraction(_cfg(small_sample, tmp_path))
    finally:
        stop.set()
        killer.join()
    assert killed, "no busy extractor actor was found to kill"
    assert summary.clips_skipped == 0 and summary.samples == reference[0].samples
    assert _shard_bytes(tmp_path) == _shard_bytes(reference[1])
    keys = [s["__key__"] for tar in sorted(tmp_path.glob("shard-*.tar")) for s in iter_samples(tar)]
    assert len(keys) == len(set(keys)) == summary.samples


def test_facex_extract_cli_writes_shards_and_prints_the_summary(small_sample, tmp_path):
    from typer.testing import CliRunner

    from facex_data.cli import load_commands

    app = load_commands()

    result = CliRunner().invoke(app, ["extract", "--input", str(small_sample), "--out", str(tmp_path),
                                      "--runner", "local", "--frames-per-clip", "2"])
    assert result.exit_code == 0, result.output
    assert "clips written                 2" in result.output
    assert json.loads((tmp_path / "ledger.json").read_text())["totals"]["samples"] == 4


def test_stage_with_a_missing_input_folder_names_the_key(tmp_path, capsys):
    from pipelines.extract import main

    params = tmp_path / "params.yaml"
    params.write_text(f"extract:\n  input_dir: {tmp_path / 'nowhere'}\n")
    assert main(["--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert "extract.input_dir" in err and "nowhere" in err


def test_a_clip_that_hangs_the_decoder_is_skipped_and_the_run_finishes(local_ray, small_sample, tmp_path):
    inputs = tmp_path / "in" / "35666"
    inputs.mkdir(parents=True)
    good = sorted((small_sample / "35666").glob("*.mp4"))[0]
    (inputs / good.name).write_bytes(good.read_bytes())
    os.mkfifo(inputs / "hangs.mp4")  # opening a FIFO with no writer blocks inside decord forever: a real hang
    cfg = _cfg(small_sample, tmp_path / "out", input_dir=tmp_path / "in", decode_timeout_s=5.0)
    started = time.monotonic()
    summary = run_extraction(cfg)
    assert time.monotonic() - started < 90
    clips = {c["clip_id"]: c for c in summary.ledger["clips"]}
    assert clips["hangs"]["status"] == "skipped" and "decoder hung" in clips["hangs"]["reason"]
    assert clips[good.stem]["status"] == "written" and clips[good.stem]["frames"] > 0


def _kill_the_process_reading(fifo, killed: list) -> None:
    """Open the FIFO's write end (it returns once a decoder has opened the clip), then SIGKILL that decoder."""
    with open(fifo, "wb"):
        for fd in Path("/proc").glob("[0-9]*/fd/*"):
            try:
                if os.readlink(fd) == str(fifo) and int(fd.parts[2]) != os.getpid():
                    os.kill(int(fd.parts[2]), signal.SIGKILL)
                    killed.append(int(fd.parts[2]))
            except OSError:  # a process or fd that went away while we looked
                continue


def test_a_decoder_process_that_dies_on_a_clip_is_recorded_and_the_run_finishes(local_ray, small_sample, tmp_path):
    inputs = tmp_path / "in" / "35666"
    inputs.mkdir(parents=True)
    good = sorted((small_sample / "35666").glob("*.mp4"))[0]
    (inputs / good.name).write_bytes(good.read_bytes())
    fifo = inputs / "crashes.mp4"
    os.mkfifo(fifo)  # the decoder blocks in it until the killer below has found and killed that very process
    killed: list[int] = []
    killer = threading.Thread(target=_kill_the_process_reading, args=(fifo, killed), daemon=True)
    killer.start()
    summary = run_extraction(_cfg(small_sample, tmp_path / "out", input_dir=tmp_path / "in", decode_timeout_s=60.0))
    killer.join(timeout=10)
    assert killed, "no decoder process had the clip open"
    clips = {c["clip_id"]: c for c in summary.ledger["clips"]}
    assert clips["crashes"]["status"] == "skipped" and "decoder process crashed" in clips["crashes"]["reason"]
    assert str(fifo) in clips["crashes"]["reason"]
    assert clips[good.stem]["status"] == "written" and clips[good.stem]["frames"] > 0
    assert summary.samples == clips[good.stem]["frames"]


def test_decoders_replaced_after_each_clip_lose_no_clip(local_ray, small_sample, reference, tmp_path):
    """decoder_max_clips=1 with one decoder: a fresh decoder per clip, and every clip still lands once."""
    inputs = tmp_path / "in" / "35666"
    inputs.mkdir(parents=True)
    clips = sorted(small_sample.rglob("*.mp4"))
    for k in range(3):
        for clip in clips:
            (inputs / f"{clip.stem}-{k}.mp4").symlink_to(clip)
    cfg = _cfg(small_sample, tmp_path / "out", input_dir=tmp_path / "in", num_decoders=1, decoder_max_clips=1)
    summary = run_extraction(cfg)
    assert summary.clips_written == 3 * len(clips) and summary.clips_skipped == 0
    assert summary.samples == 3 * reference[0].samples
    keys = [s["__key__"] for tar in sorted(cfg.out_dir.glob("shard-*.tar")) for s in iter_samples(tar)]
    assert len(keys) == len(set(keys)) == summary.samples
