"""The embedded sample set: CelebV-HQ layout, decodable, reproducible, and showing real faces."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import decord
import numpy as np
import pytest

from facex_data.demo_clips import (
    ACTION_MAPPING,
    APPEARANCE_MAPPING,
    CLIP_DIR,
    INFO_FILE,
    DemoClipsConfig,
    make_demo_clips,
)
from facex_data.faces import detect_faces
from pipelines.config import DEFAULT_PARAMS, load_params


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_layout_and_metadata_match_the_files(small_sample):
    info = json.loads((small_sample / INFO_FILE).read_text())
    assert list(info["meta_info"]["appearance_mapping"]) == list(APPEARANCE_MAPPING)
    assert len(info["meta_info"]["action_mapping"]) == len(ACTION_MAPPING) == 35
    files = sorted(p.stem for p in (small_sample / CLIP_DIR).glob("*.mp4"))
    assert files == sorted(info["clips"])
    people = {c["ytb_id"] for c in info["clips"].values()}
    assert len(people) >= 2
    for clip_id, clip in info["clips"].items():
        assert clip_id.startswith(clip["ytb_id"] + "_")
        assert clip["duration"]["end_sec"] > clip["duration"]["start_sec"]
        box = clip["bbox"]
        assert 0 <= box["top"] < box["bottom"] <= 1 and 0 <= box["left"] < box["right"] <= 1
        assert len(clip["attributes"]["appearance"]) == 40
        assert clip["attributes"]["emotion"]["labels"] in info["meta_info"]["emotion_mapping"]
    assert (small_sample / "README.md").read_text().startswith("# FaceX embedded sample set")


def test_clips_decode_with_decord_and_pyav_as_declared(small_sample):
    info = json.loads((small_sample / INFO_FILE).read_text())
    for clip_id, clip in info["clips"].items():
        path = small_sample / CLIP_DIR / f"{clip_id}.mp4"
        reader = decord.VideoReader(str(path))
        assert len(reader) == clip["frames"]
        assert reader.get_avg_fps() == pytest.approx(clip["fps"])
        assert reader[0].shape == (clip["size"][1], clip["size"][0], 3)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert (stream.width, stream.height) == tuple(clip["size"])
            assert float(stream.average_rate) == pytest.approx(clip["fps"])
            assert sum(1 for _ in container.decode(stream)) == clip["frames"]
        seconds = clip["frames"] / clip["fps"]
        assert 1.0 - 1 / clip["fps"] <= seconds <= 1.4 + 1 / clip["fps"]


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    def run(seed: int, name: str) -> dict[str, str]:
        cfg = DemoClipsConfig(out_dir=tmp_path / name, seed=seed, clips_per_person=1, size=128,
                              min_seconds=0.4, max_seconds=0.6)
        make_demo_clips(cfg, progress=False)
        return digests(tmp_path / name)

    first, again, other = run(3, "a"), run(3, "b"), run(4, "c")
    assert first == again
    assert first.keys() == other.keys()
    clips = [k for k in first if k.endswith(".mp4")]
    assert all(first[k] != other[k] for k in clips)


def test_motion_moves_the_face(small_sample):
    path = next((small_sample / CLIP_DIR).glob("*.mp4"))
    reader = decord.VideoReader(str(path))
    first, last = reader[0].asnumpy().astype(int), reader[len(reader) - 1].asnumpy().astype(int)
    assert np.abs(first - last).mean() > 3.0


@pytest.mark.slow
def test_dlib_finds_exactly_one_face_in_95_percent_of_frames_of_every_default_clip(tmp_path):
    cfg = load_params(DEFAULT_PARAMS).sample
    make_demo_clips(cfg, out_dir=tmp_path, progress=False)
    for path in sorted((tmp_path / CLIP_DIR).glob("*.mp4")):
        reader = decord.VideoReader(str(path))
        frames = range(0, len(reader), 4)
        one_face = sum(len(detect_faces(reader[i].asnumpy())) == 1 for i in frames)
        assert one_face / len(frames) >= 0.95, f"{path.name}: one face in {one_face}/{len(frames)} frames"


@pytest.mark.real
def test_extra_portrait_adds_a_person(tmp_path, real_data):
    cfg = DemoClipsConfig(out_dir=tmp_path, clips_per_person=1, size=128, min_seconds=0.2, max_seconds=0.2,
                          extra_portraits=[real_data / "images" / "portrait_02.jpg"])
    info = make_demo_clips(cfg, progress=False)
    assert "facexsample-portrait_02_0" in info["clips"]
    assert info["clips"]["facexsample-portrait_02_0"]["attributes"]["appearance"] == [0] * 40  # unlabelled


@pytest.mark.real
def test_extra_portrait_without_a_face_is_refused_with_its_name(tmp_path, real_data):
    cat = real_data / "images" / "cat_01.jpg"
    cfg = DemoClipsConfig(out_dir=tmp_path, clips_per_person=1, size=128, min_seconds=0.2, max_seconds=0.2,
                          extra_portraits=[cat])
    with pytest.raises(ValueError, match="cat_01.jpg: no face found"):
        make_demo_clips(cfg, progress=False)
