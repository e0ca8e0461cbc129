"""Provenance: the invisible FaceX watermark survives JPEG q90 and is absent from untouched photos; metadata says
synthetic/FaceX; `facex detect-watermark` reports both."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facex_data.cli import load_commands
from facex_model import watermark

app = load_commands()


def jpeg(array: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def smooth_image(seed: int = 0, size: tuple[int, int] = (192, 256)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 225, (size[0] // 32, size[1] // 32, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize(size[::-1], Image.BICUBIC))


def test_watermark_survives_jpeg_q90_on_a_generated_image():
    marked = watermark.embed(smooth_image())
    found, bits = watermark.detect(jpeg(marked, 90))
    assert found and bits >= 44


def test_watermark_is_invisible_to_the_eye():
    image = smooth_image(1)
    marked = watermark.embed(image).astype(np.float64)
    psnr = 10 * np.log10(255**2 / np.mean((marked - image) ** 2))
    assert psnr > 38


@pytest.mark.real
@pytest.mark.parametrize("name", ["portrait_02.jpg", "painting_01.jpg", "dog_01.jpg"])
def test_absent_from_untouched_photos_present_after_marking_and_jpeg(real_data, name):
    photo = np.asarray(Image.open(real_data / "images" / name).convert("RGB"))
    assert not watermark.detect(photo)[0]
    assert not watermark.detect(jpeg(photo, 90))[0]
    assert watermark.detect(jpeg(watermark.embed(photo), 90))[0]


def test_too_small_images_are_refused_with_the_size():
    with pytest.raises(ValueError, match="32x32 is too small"):
        watermark.embed(np.zeros((32, 32, 3), np.uint8))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_saved_outputs_carry_metadata_unless_disabled(tmp_path, suffix):
    path = watermark.save_image(smooth_image(), tmp_path / f"out{suffix}")
    with Image.open(path) as im:
        report = watermark.inspect_image(im)
    assert report.found and report.metadata["Software"] == "FaceX"
    plain = watermark.save_image(smooth_image(), tmp_path / f"plain{suffix}", watermark=False)
    with Image.open(plain) as im:
        report = watermark.inspect_image(im)
    assert not report.found and report.metadata == {}


def test_detect_watermark_cli_reports_and_exits_by_result(tmp_path):
    marked = watermark.save_image(smooth_image(), tmp_path / "marked.jpg")
    plain = tmp_path / "plain.jpg"
    Image.fromarray(smooth_image()).save(plain, quality=90)
    runner = CliRunner()
    found = runner.invoke(app, ["detect-watermark", str(marked)])
    assert found.exit_code == 0 and "watermark found" in found.output and "Synthetic" in found.output
    absent = runner.invoke(app, ["detect-watermark", str(plain)])
    assert absent.exit_code == 1 and "not found" in absent.output and "no FaceX metadata" in absent.output
    missing = runner.invoke(app, ["detect-watermark", str(tmp_path / "nope.png")])
    assert missing.exit_code == 2 and "file not found" in missing.output and "Traceback" not in missing.output
