"""Bad input clips: each ends as a ledger entry with a clear reason, the run finishes, nothing else is lost.

Clips are built here from ../shared/data/real/images (portraits, a dog, a cat) with PyAV.
"""

from __future__ import annotations

import json
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from facex_data.extraction import ExtractConfig, run_extraction
from facex_data.manifest import FrameSelection
from facex_data.shards import iter_samples

pytestmark = [pytest.mark.real, pytest.mark.slow]


def _rgb(path, size):
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    side = min(h, w)
    image = image[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def _pan(image, n, width, height, step=3):
    """n frames of ``image`` placed on a grey canvas, drifting right by ``step`` px a frame."""
    frames = []
    for i in range(n):
        canvas = np.full((height, width, 3), 128, np.uint8)
        h, w = image.shape[:2]
        x, y = (width - w) // 2 + i * step - n * step // 2, (height - h) // 2
        canvas[y:y + h, x:x + w] = image
        frames.append(canvas)
    return frames


def _write(path, frames, fps=25, pix_fmt="yuv420p", pts=None):
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            if pts is not None:
                vf.pts, vf.time_base = pts[i], Fraction(1, 1000)
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def bad_input_dir(tmp_path_factory, real_data):
    images = real_data / "images"
    root = tmp_path_factory.mktemp("bad_inputs")
    clips = root / "35666"
    clips.mkdir()
    face = _rgb(images / "portrait_03.jpg", 256)  # dlib HOG finds this one at 256 px
    _write(clips / "good.mp4", _pan(face, 8, 320, 320))
    good = (clips / "good.mp4").read_bytes()
    (clips / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (clips / "zero_bytes.mp4").write_bytes(b"")
    (clips / "text_file.mp4").write_text("this is not a video\n" * 20)
    _write(clips / "dog.mp4", _pan(_rgb(images / "dog_01.jpg", 256), 8, 320, 320))
    _write(clips / "cat.mp4", _pan(_rgb(images / "cat_01.jpg", 256), 8, 320, 320))
    big, small = _rgb(images / "portrait_05.jpg", 256), _rgb(images / "portrait_02.jpg", 160)
    two = np.full((320, 480, 3), 128, np.uint8)
    two[32:288, 0:256], two[80:240, 300:460] = big, small
    _write(clips / "two_faces.mp4", [two] * 6)
    gray = cv2.cvtColor(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    _write(clips / "grayscale.mp4", _pan(gray, 8, 320, 320), pix_fmt="gray")
    _write(clips / "hd_1280x720.mp4", _pan(_rgb(images / "portrait_04.jpg", 400), 8, 1280, 720))
    vfr_pts = [0, 40, 50, 130, 140, 300, 310, 420]  # ms: uneven gaps
    _write(clips / "vfr.mp4", _pan(_rgb(images / "portrait_05.jpg", 256), 8, 320, 320), pts=vfr_pts)
    _write(clips / "too_short.mp4", _pan(face, 2, 320, 320))
    return root


@pytest.fixture(scope="module")
def bad_input_run(bad_input_dir, tmp_path_factory):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = tmp_path_factory.mktemp("bad_shards")
    cfg = ExtractConfig(
        input_dir=bad_input_dir, out_dir=out, frames=FrameSelection(frames_per_clip=3, min_clip_frames=4),
        clips_per_shard=4, batch_size=3, progress=False, decode_timeout_s=60.0,
    )
    try:
        summary = run_extraction(cfg)
    finally:
        ray.shutdown()
    ledger = json.loads((out / "ledger.json").read_text())
    return summary, {c["clip_id"]: c for c in ledger["clips"]}, out


@pytest.mark.parametrize(
    ("clip", "reason"),
    [
        ("truncated", "re-download or remove"),
        ("zero_bytes", "empty file (0 bytes)"),
        ("text_file", "not a readable video"),
        ("dog", "no face found in any of the 3 sampled frames"),
        ("cat", "no face found in any of the 3 sampled frames"),
        ("too_short", "shorter than the sampling window"),
    ],
)
def test_bad_clip_is_skipped_with_a_reason_naming_the_file(bad_input_run, clip, reason):
    _, clips, _ = bad_input_run
    entry = clips[clip]
    assert entry["status"] == "skipped" and entry["frames"] == 0
    assert reason in entry["reason"] and f"{clip}.mp4" in entry["reason"]


@pytest.mark.parametrize("clip", ["good", "grayscale", "hd_1280x720", "vfr"])
def test_unusual_but_valid_clips_are_written_with_every_sampled_frame(bad_input_run, clip):
    _, clips, _ = bad_input_run
    assert clips[clip]["status"] == "written" and clips[clip]["frames"] == 3, clips[clip]


def test_two_face_clip_keeps_the_largest_face_and_records_it(bad_input_run):
    _, clips, out = bad_input_run
    entry = clips["two_faces"]
    assert entry["status"] == "written" and entry["multi_face_frames"] == entry["frames"] == 3
    assert "largest" in entry["note"]
    metas = [json.loads(s["json"]) for tar in sorted(out.glob("shard-*.tar")) for s in iter_samples(tar)
             if s["__key__"].startswith("two_faces/")]
    assert len(metas) == 3
    for meta in metas:
        left, top, right, bottom = meta["bbox"]
        assert meta["n_faces"] == 2 and right < 260, "the big portrait (left half) must be the face kept"


def test_run_finishes_with_every_clip_in_the_ledger_and_all_good_samples(bad_input_run, bad_input_dir):
    summary, clips, out = bad_input_run
    assert set(clips) == {p.stem for p in (bad_input_dir / "35666").glob("*.mp4")}
    assert summary.clips_written == 5 and summary.clips_skipped == 6
    keys = [s["__key__"] for tar in sorted(out.glob("shard-*.tar")) for s in iter_samples(tar)]
    assert len(keys) == len(set(keys)) == summary.samples == 15
    assert sorted({k.split("/")[0] for k in keys}) == ["good", "grayscale", "hd_1280x720", "two_faces", "vfr"]
