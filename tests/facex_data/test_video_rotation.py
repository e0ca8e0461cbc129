"""Phone videos: frames stored sideways with a display rotation (display-matrix side datum) decode upright.

Clips are written here with PyAV (``VideoStream.set_display_rotation``) from a real portrait (Grace Hopper, shipped
with matplotlib) drifting across a grey canvas.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from facex_data import decode
from facex_data.decode import ClipReader, stored_first_frame
from tests.helpers import write_phone_clip


@pytest.fixture(scope="module")
def upright_frames() -> np.ndarray:
    """(6, 240, 176, 3) portrait-format frames (taller than wide, as a phone holds them)."""
    from facex_data.demo_clips import builtin_portraits

    (hopper,) = builtin_portraits(("grace_hopper",))
    face = np.asarray(Image.fromarray(hopper.image).resize((160, 188)))
    frames = np.full((6, 240, 176, 3), 110, np.uint8)
    for i in range(6):
        frames[i, 20 + i : 208 + i, 8:168] = face
    return frames


def mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_clip_reader_decodes_a_rotated_phone_clip_upright(tmp_path, upright_frames, rotation):
    clip = write_phone_clip(tmp_path / "phone.mp4", upright_frames, rotation)
    stored, tagged = stored_first_frame(clip)
    assert tagged == rotation % 360
    assert (stored.shape == upright_frames[0].shape) == (rotation == 180)  # stored sideways, or upside down
    reader = ClipReader(clip)
    info = reader.info()
    assert (info.height, info.width, info.n_frames) == (240, 176, 6)
    frames = reader.frames([0, 3, 5])
    assert frames.shape == (3, 240, 176, 3)
    for got, want in zip(frames, upright_frames[[0, 3, 5]]):
        assert mean_error(got, want) < 4.0
        assert mean_error(np.rot90(got, 2), want) > 4 * mean_error(got, want)  # not merely a symmetric picture


class StoredFramesReader:
    """A decord VideoReader of a build that ignores the display rotation: frames exactly as stored."""

    class Array:
        def __init__(self, array: np.ndarray) -> None:
            self.array, self.shape = array, array.shape

        def asnumpy(self) -> np.ndarray:
            return self.array

    def __init__(self, path: Path) -> None:
        with av.open(str(path)) as c:
            self.stored = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])

    def __len__(self) -> int:
        return len(self.stored)

    def __getitem__(self, index: int) -> Array:
        return self.Array(self.stored[index])

    def get_batch(self, indices: list[int]) -> Array:
        return self.Array(self.stored[indices])

    def get_avg_fps(self) -> float:
        return 25.0


def test_frames_are_turned_upright_where_the_decoder_ignores_the_rotation(tmp_path, upright_frames, monkeypatch):
    clip = write_phone_clip(tmp_path / "phone.mp4", upright_frames, -90)
    monkeypatch.setattr(decode, "_reader", StoredFramesReader)
    reader = ClipReader(clip)
    assert reader.rotation == 270
    assert (reader.info().height, reader.info().width) == (240, 176)
    assert mean_error(reader.frames([2])[0], upright_frames[2]) < 4.0


def test_clip_without_rotation_is_left_as_it_is(tmp_path, upright_frames):
    clip = write_phone_clip(tmp_path / "plain.mp4", upright_frames, 0)
    reader = ClipReader(clip)
    assert reader.rotation == 0 and stored_first_frame(clip)[1] == 0
    assert mean_error(reader.frames([1])[0], upright_frames[1]) < 4.0


def test_extraction_finds_the_face_in_a_rotated_phone_clip(tmp_path, upright_frames):
    from facex_data.config import ExtractConfig
    from facex_data.extraction import run_extraction
    from facex_data.manifest import FrameSelection
    from facex_data.shards import iter_samples

    clips = tmp_path / "clips" / "35666"
    clips.mkdir(parents=True)
    write_phone_clip(clips / "phone.mp4", upright_frames, -90)  # stored landscape, sideways face
    cfg = ExtractConfig(input_dir=tmp_path / "clips", out_dir=tmp_path / "shards", runner="local",
                        frames=FrameSelection(frames_per_clip=3, min_clip_frames=4), progress=False)  # fmt: skip
    run_extraction(cfg)
    (entry,) = json.loads((tmp_path / "shards" / "ledger.json").read_text())["clips"]
    assert entry["status"] == "written" and entry["frames"] == 3, entry
    tars = sorted((tmp_path / "shards").glob("shard-*.tar"))
    metas = [json.loads(sample["json"]) for tar in tars for sample in iter_samples(tar)]
    assert len(metas) == 3
    for meta in metas:
        left, top, right, bottom = meta["bbox"]
        assert right <= 176 and bottom <= 240  # found in the upright frame
