"""The face the user means: `target_face_like` / `--target-face-like` picks the face most like a reference person.

The two-person picture puts skimage's astronaut (smaller face, left) beside matplotlib's Grace Hopper (larger face,
right); each reference is another picture of the same person: a frame of the embedded sample's clip of them (moved,
relit, another expression).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facex_data.cli import load_commands
from facex_model.pipeline import FaceXInputError

ASTRONAUT_LEFT = 360  # the astronaut fills x < 360 of the pair, Grace Hopper x >= 380


def two_people() -> np.ndarray:
    """(360, 640, 3): the astronaut left (the smaller face), Grace Hopper right (the larger one)."""
    from facex_data.demo_clips import builtin_portraits

    people = {p.name: p.image for p in builtin_portraits(("astronaut", "grace_hopper"))}
    astronaut = np.asarray(Image.fromarray(people["astronaut"]).resize((360, 360)))
    hopper = np.asarray(Image.fromarray(people["grace_hopper"]).resize((260, 305)))
    canvas = np.full((360, 640, 3), 90, np.uint8)
    canvas[:, :360] = astronaut
    canvas[:305, 380:] = hopper
    return canvas


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pair") / "pair.png"
    Image.fromarray(two_people()).save(path)
    return path


def reference(sample_frames, person: str) -> Path:
    return next(path for name, path in sample_frames.items() if person in name)


def centre_x(box) -> float:
    return (box[0] + box[2]) / 2


@pytest.mark.parametrize("person, left", [("astronaut", True), ("grace_hopper", False)])
def test_reference_picks_that_persons_face_not_the_largest(pipe, pair, sample_frames, person, left):
    like = pipe.identity(reference(sample_frames, person))
    face = pipe.detect(pair, "target", like=like)
    assert face.n_faces == 2
    assert (centre_x(face.features.detection.bbox) < ASTRONAUT_LEFT) is left
    with pytest.warns(UserWarning, match="2 faces: using the largest"):
        largest = pipe.detect(pair, "target")
    assert centre_x(largest.features.detection.bbox) > ASTRONAUT_LEFT


def test_swap_with_target_face_like_changes_only_that_persons_face(pipe, pair, sample_frames):
    out = pipe("swap", reference(sample_frames, "grace"), pair, steps=1, watermark=False,
               target_face_like=reference(sample_frames, "astronaut"))  # fmt: skip
    columns = np.nonzero(out.mask.max(axis=0) > 0)[0]
    assert columns.max() < ASTRONAUT_LEFT
    with pytest.raises(FaceXInputError, match="not both"):
        pipe("swap", reference(sample_frames, "grace"), pair, steps=1, face_index=0,
             target_face_like=reference(sample_frames, "astronaut"))  # fmt: skip


def test_target_face_like_on_the_command_line(model_dir, pair, sample_frames, tmp_path):
    app = load_commands()
    out = tmp_path / "out.png"
    like = reference(sample_frames, "astronaut")
    args = ["swap", "--source", reference(sample_frames, "grace"), "--target", pair, "--out", out, "--model",
            model_dir, "--steps", "1", "--no-watermark", "--target-face-like", like]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    changed = np.abs(np.asarray(Image.open(out).convert("RGB"), np.int16) - two_people()).max(axis=(0, 2))
    assert changed[:ASTRONAUT_LEFT].max() > 30 and changed[ASTRONAUT_LEFT:].max() == 0
    result = CliRunner().invoke(app, [str(a) for a in args + ["--face-index", "1"]])
    assert result.exit_code == 2 and "error: choose the target face by --face-index or by --target-face-like" in (
        result.output
    )
