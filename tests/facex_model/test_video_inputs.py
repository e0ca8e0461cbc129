"""Video tasks on videos as people have them: a phone clip with a display rotation, and two people in every frame
with a reference saying which one to change (followed frame to frame, not the largest face)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image

from facex_data.decode import ClipReader
from facex_model.video import run_video
from tests.facex_model.test_face_like import ASTRONAUT_LEFT, reference, two_people
from tests.helpers import write_phone_clip


def decoded(path: Path) -> tuple[list[np.ndarray], list[int]]:
    """(frames as stored, their display rotations) by PyAV."""
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return [f.to_ndarray(format="rgb24") for f in frames], [f.rotation for f in frames]


def test_rotated_phone_video_is_processed_upright_and_plays_upright(pipe, sample_frames, tmp_path):
    face = np.asarray(Image.open(reference(sample_frames, "grace")).convert("RGB").resize((192, 192)))
    frames = []
    for i in range(3):
        canvas = np.full((256, 208, 3), 100, np.uint8)  # portrait format, as a phone holds it
        canvas[32 + i : 224 + i, 8:200] = face
        frames.append(canvas)
    clip = write_phone_clip(tmp_path / "phone.mp4", frames, rotation=-90)  # stored landscape, face sideways
    assert decoded(clip)[0][0].shape == (208, 256, 3)
    result = run_video(pipe, "swap", reference(sample_frames, "astronaut"), clip, tmp_path / "out.mp4", steps=1,
                       progress=False, watermark=False)  # fmt: skip
    assert result.frames_without_face == 0  # a sideways face is not found: every frame was seen upright
    out, rotations = decoded(tmp_path / "out.mp4")
    assert len(out) == 3 and out[0].shape == (256, 208, 3) and set(rotations) == {0}


def test_reference_face_is_followed_in_every_frame_not_the_largest(pipe, sample_frames, tmp_path):
    pair = two_people()
    frames = [np.roll(pair, 2 * i, axis=1) for i in range(4)]
    clip = write_phone_clip(tmp_path / "two.mp4", frames)
    written: dict[int, np.ndarray] = {}
    run_video(pipe, "swap", reference(sample_frames, "grace"), clip, tmp_path / "out.mp4", steps=1, progress=False,
              watermark=False, target_face_like=reference(sample_frames, "astronaut"),
              on_frame=lambda i, f: written.__setitem__(i, f))  # fmt: skip
    source = ClipReader(clip).frames(list(range(4)))
    assert sorted(written) == [0, 1, 2, 3]
    for i, frame in written.items():
        change = np.abs(frame.astype(np.int16) - source[i]).max(axis=(0, 2))
        assert change[: ASTRONAUT_LEFT - 20].max() > 30, f"frame {i}: the astronaut's face was not changed"
        assert change[ASTRONAUT_LEFT + 30 :].max() == 0, f"frame {i}: Grace Hopper's (larger) face was changed"
