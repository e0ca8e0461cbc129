"""Images as people have them: phone orientation, decompression bombs, animations, 16-bit, palette, CMYK, HEIC.

Every input is built here from a real portrait shipped with matplotlib (Grace Hopper) or from synthetic pixels.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facex_model import inputs
from facex_model.inputs import FaceXInputError, load_image, load_mask

EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    from facex_data.demo_clips import builtin_portraits

    (hopper,) = builtin_portraits(("grace_hopper",))
    return np.asarray(Image.fromarray(hopper.image).resize((320, 375)))


def save_sideways(upright: np.ndarray, path: Path) -> Path:
    """A phone's portrait JPEG: pixels stored turned 90 degrees counter-clockwise, EXIF orientation 6 (rotate 90 CW)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(upright))).save(path, quality=95, exif=exif.tobytes())
    return path


def frame_landmarks(face) -> np.ndarray:
    from facex_model.video import to_frame_coords

    return to_frame_coords(face.features.detection.landmarks, face.features.detection.transform)


def test_exif_rotated_phone_photo_gives_the_same_detection_as_the_upright_one(pipe, portrait, tmp_path):
    upright = tmp_path / "upright.jpg"
    Image.fromarray(portrait).save(upright, quality=95)
    sideways = save_sideways(portrait, tmp_path / "phone.jpg")
    with Image.open(sideways) as im:
        assert im.size == (375, 320)  # stored sideways
    a, b = pipe.detect(upright, "target"), pipe.detect(sideways, "target")
    assert b.frame.shape == portrait.shape
    offset = np.linalg.norm(frame_landmarks(a) - frame_landmarks(b), axis=1)  # px; the two JPEGs differ slightly
    assert offset.mean() < 2.0 and offset.max() < 6.0


def test_exif_orientation_applies_to_masks_and_pil_images(portrait, tmp_path):
    sideways = save_sideways(portrait, tmp_path / "phone.jpg")
    with Image.open(sideways) as im:
        assert load_image(im).shape == portrait.shape
    mask = np.zeros(portrait.shape[:2], np.uint8)
    mask[:100] = 255  # the top of the upright picture
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(mask))).save(tmp_path / "mask.png", exif=exif.tobytes())
    loaded = load_mask(tmp_path / "mask.png", (portrait.shape[1], portrait.shape[0]))
    assert loaded[:100].all() and not loaded[100:].any()


def test_a_mask_is_scaled_to_the_target_but_one_of_another_shape_is_an_error(tmp_path):
    mask = np.zeros((60, 80), np.uint8)
    mask[:30] = 255  # the top half
    Image.fromarray(mask).save(tmp_path / "half.png")
    scaled = load_mask(tmp_path / "half.png", (160, 120))  # (W, H): the same shape, twice the size
    assert scaled.shape == (120, 160) and scaled[:60].all() and not scaled[60:].any()
    assert load_mask(tmp_path / "half.png", (161, 120)).shape == (120, 161)  # a pixel of rounding: the same shape
    with pytest.raises(FaceXInputError, match=r"mask is 80x60, the target 60x80: another shape"):
        load_mask(tmp_path / "half.png", (60, 80))  # a portrait target: stretching would move the painted area


def write_bomb_png(path: Path, side: int = 20_000) -> Path:
    """A valid side x side 1-bit grey PNG of zeros: a few hundred kB on disk, 400 M pixels decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_a_one_line_error_naming_file_pixels_and_limit(tmp_path):
    bomb = write_bomb_png(tmp_path / "huge.png")
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(FaceXInputError) as err:
        load_image(bomb, "target")
    message = str(err.value)
    assert "huge.png" in message and "400,000,000 pixels" in message and f"{Image.MAX_IMAGE_PIXELS:,}" in message
    assert "\n" not in message


def test_image_over_the_limit_but_under_pillows_error_is_refused_too(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    Image.new("RGB", (150, 100)).save(tmp_path / "wide.png")  # 1.5x the limit: Pillow itself only warns
    with pytest.raises(FaceXInputError, match=r"wide.png is 150x100 = 15,000 pixels, over the limit of 10,000"):
        load_image(tmp_path / "wide.png", "target")


def test_animated_gif_and_webp_give_the_first_frame_and_a_warning(tmp_path):
    colours = ((200, 0, 0), (0, 200, 0), (0, 0, 200))
    frames = [Image.new("RGB", (64, 48), c) for c in colours]
    for name in ("anim.gif", "anim.webp"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
        warned: list[str] = []
        array = load_image(tmp_path / name, "target", warn=warned.append)
        assert array.shape == (48, 64, 3)
        assert np.abs(array.astype(int) - colours[0]).max() <= 2
        assert len(warned) == 1 and "animated (3 frames)" in warned[0] and "first frame" in warned[0]


def test_16_bit_palette_transparent_and_cmyk_images_become_the_right_rgb(tmp_path):
    ramp = (np.arange(16 * 256).reshape(16, 256) * 16).astype(np.uint16)  # 0..65520
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as im:
        assert im.mode == "I;16"
    grey = load_image(tmp_path / "grey16.png")
    assert np.array_equal(grey[..., 0], np.round(ramp / 257).astype(np.uint8))  # scaled, not clipped to white
    assert np.array_equal(grey[..., 0], grey[..., 2])

    index = np.zeros((8, 8), np.uint8)
    index[:4] = 1
    palette = Image.fromarray(index, "P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.save(tmp_path / "palette.png", transparency=0)  # index 0 (red) is transparent
    rgb = load_image(tmp_path / "palette.png")
    assert tuple(rgb[0, 0]) == (0, 0, 255) and tuple(rgb[-1, -1]) == inputs.BACKGROUND

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[:, :4, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    rgb = load_image(tmp_path / "cutout.png")
    assert tuple(rgb[0, 0]) == (10, 200, 30) and tuple(rgb[0, -1]) == inputs.BACKGROUND

    colours = np.zeros((32, 32, 3), np.uint8)
    colours[:, :16], colours[:, 16:] = (200, 30, 40), (20, 180, 90)
    Image.fromarray(colours).convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    with Image.open(tmp_path / "print.jpg") as im:
        assert im.mode == "CMYK"
    rgb = load_image(tmp_path / "print.jpg").astype(int)
    assert np.abs(rgb[8:24, 4:12] - (200, 30, 40)).max() <= 6 and np.abs(rgb[8:24, 20:28] - (20, 180, 90)).max() <= 6


def test_heic_photo_reads_with_the_heif_extra_and_names_the_extra_without_it(tmp_path, monkeypatch, portrait):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    Image.fromarray(portrait).save(tmp_path / "phone.heic", quality=95)
    rgb = load_image(tmp_path / "phone.heic")
    assert rgb.shape == portrait.shape and np.abs(rgb.astype(int) - portrait).mean() < 4
    monkeypatch.setattr(inputs, "register_heif", lambda: False)
    with pytest.raises(FaceXInputError, match=r"phone.heic: HEIC/HEIF photos need .*facex-model\[heif\]"):
        load_image(tmp_path / "phone.heic", "target")


def test_unreadable_image_still_names_the_file(tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is not a picture\n")
    with pytest.raises(FaceXInputError, match="holiday.jpg: not a readable image"):
        load_image(fake, "target")
