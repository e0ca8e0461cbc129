"""Clip manifest, sampling policy, shard writer and reader (no extraction: fast)."""

from __future__ import annotations

import json
import subprocess
import tarfile

import numpy as np
import pytest
import webdataset as wds

from facex_data import schema
from facex_data.layout import complete_shards, shard_stats, shard_tar
from facex_data.manifest import ClipManifest, FrameSelection
from facex_data.shards import (
    ShardWriter,
    decode_arrays,
    decode_npy,
    encode_jpg,
    encode_json,
    encode_npy,
    encode_png,
    iter_clips,
    iter_samples,
)


def test_per_clip_sampling_spreads_frames_and_skips_short_clips():
    policy = FrameSelection(mode="per_clip", frames_per_clip=4, min_clip_frames=4)
    assert policy.indices(100, 25.0) == [12, 37, 62, 87]
    assert policy.indices(3, 25.0) == []


def test_every_k_and_fps_sampling():
    assert FrameSelection(mode="every_k", every_k=10, min_clip_frames=1).indices(35, 30.0) == [0, 10, 20, 30]
    assert FrameSelection(mode="fps", fps=5.0, min_clip_frames=1).indices(30, 30.0) == [0, 6, 12, 18, 24]
    capped = FrameSelection(mode="every_k", every_k=1, min_clip_frames=1, max_frames_per_clip=3)
    assert capped.indices(100, 25.0) == [0, 1, 2]


def _touch_clips(root, names):
    (root / "35666").mkdir(parents=True)
    for name in names:
        (root / "35666" / f"{name}.mp4").write_bytes(b"x")


def test_manifest_assigns_sorted_clips_to_shards_deterministically(tmp_path):
    _touch_clips(tmp_path, ["c", "a", "e", "b", "d"])
    (tmp_path / "celebvhq_info.json").write_text(json.dumps({"clips": {"a": {"ytb_id": "ya"}}, "meta_info": {}}))
    manifest = ClipManifest.scan(tmp_path)
    plans = manifest.shards(2)
    assert [p.name for p in plans] == ["shard-000000", "shard-000001", "shard-000002"]
    assert [[c.clip_id for c in p.clips] for p in plans] == [["a", "b"], ["c", "d"], ["e"]]
    assert manifest.clips[0].info == {"ytb_id": "ya"} and manifest.clips[1].info == {}
    assert ClipManifest.scan(tmp_path).shards(2) == plans


def test_manifest_without_info_json_and_empty_folder_message(tmp_path):
    _touch_clips(tmp_path / "in", ["a"])
    assert ClipManifest.scan(tmp_path / "in").info_file is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .mp4 clips"):
        ClipManifest.scan(tmp_path / "empty")


def _sample(clip: str, frame: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "__key__": schema.sample_key(clip, frame),
        schema.JPG: encode_jpg(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), 95),
        schema.PARSING: encode_png(np.full((32, 32), schema.UNKNOWN, np.uint8)),
        schema.IDENTITY: encode_npy(rng.normal(size=128).astype(np.float32)),
        schema.TDMM: encode_npy(np.zeros(16, np.float32)),
        schema.GAZE: encode_npy(np.zeros(2, np.float32)),
        schema.LANDMARKS: encode_npy(np.zeros((68, 2), np.float32)),
        schema.META: encode_json({"clip_id": clip, "frame_index": frame}),
    }


def _write(out, order):
    samples = [_sample("clip.b" if i % 2 else "clip_a", i, i) for i in range(4)]
    records = [{"clip_id": "clip_a", "status": "written", "frames": 2}, {"clip_id": "clip.b", "status": "written",
                                                                         "frames": 2}]
    return ShardWriter(out).write("shard-000000", [samples[i] for i in order], records)


def test_shard_bytes_do_not_depend_on_sample_order_or_time(tmp_path):
    a = _write(tmp_path / "a", [0, 1, 2, 3])
    b = _write(tmp_path / "b", [3, 1, 0, 2])
    assert a["sha256"] == b["sha256"]
    a_bytes, b_bytes = (shard_tar(tmp_path / d, "shard-000000").read_bytes() for d in ("a", "b"))
    assert a_bytes == b_bytes
    with tarfile.open(shard_tar(tmp_path / "a", "shard-000000")) as tar:
        assert {(m.mtime, m.uid, m.gid, m.mode) for m in tar} == {(0, 0, 0, 0o644)}


def test_shards_read_back_with_webdataset_tar_and_the_reader(tmp_path):
    _write(tmp_path, [0, 1, 2, 3])
    path = shard_tar(tmp_path, "shard-000000")
    keys = ["clip_a/000000", "clip_a/000002", "clip_b/000001", "clip_b/000003"]  # dot in clip id -> "_"
    plain = list(wds.WebDataset([str(path)], shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in plain] == keys
    assert all(set(schema.SAMPLE_KEYS) <= set(s) for s in plain)
    assert [s["__key__"] for s in iter_samples(path)] == keys
    listing = subprocess.run(["tar", "tf", str(path)], capture_output=True, text=True, check=True).stdout.split()
    assert listing[:7] == [f"clip_a/000000.{ext}" for ext in schema.SAMPLE_KEYS]
    decoded = [decode_arrays(s) for url in complete_shards(tmp_path) for s in iter_samples(url)]
    assert [s["__key__"] for s in decoded] == keys
    s = decoded[0]
    assert s["image"].shape == (32, 32, 3) and s["id"].shape == (128,) and s["parsing"].shape == (32, 32)
    assert s["meta"] == {"clip_id": "clip_a", "frame_index": 0}
    clips = [(clip, [f["__key__"] for f in frames]) for clip, frames in iter_clips(str(path))]
    assert clips == [("clip_a", keys[:2]), ("clip.b", keys[2:])]


def test_npy_members_decode_like_np_load():
    import io

    arrays = [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.random.default_rng(0).random((3, 5))),
        np.zeros((512, 8, 8), np.float16),
        np.zeros((0, 3), np.int64),
    ]
    for a in arrays * 2:  # the second pass reads cached headers
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        b = decode_npy(buf.getvalue())
        assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b) and b.flags.writeable
    assert np.array_equal(decode_npy(encode_npy(arrays[0])), arrays[0])
    with pytest.raises(ValueError, match="npy"):
        decode_npy(b"not an array at all")
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="object"):
        decode_npy(buf.getvalue())


def test_a_shard_without_stats_file_is_incomplete_and_not_read(tmp_path):
    _write(tmp_path, [0, 1, 2, 3])
    writer = ShardWriter(tmp_path)
    assert writer.is_complete("shard-000000")
    shard_stats(tmp_path, "shard-000000").unlink()
    assert not writer.is_complete("shard-000000")
    with pytest.raises(FileNotFoundError, match="run the extract stage"):
        complete_shards(tmp_path)
    writer.discard("shard-000000")
    assert not shard_tar(tmp_path, "shard-000000").exists()


def test_duplicate_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        ShardWriter(tmp_path).write("shard-000000", [_sample("a", 1, 0), _sample("a", 1, 1)], [])
