"""What users hand FaceX, read into what it works on: image and mask files, a video's frames, clear errors.

Images are read the way a viewer shows them: EXIF orientation applied (phones store portrait shots sideways and
tag them), the first frame of an animation, 16-bit, palette, CMYK and transparent images turned into 8-bit RGB.
HEIC/HEIF photos need the optional ``heif`` extra (pillow-heif).

Every input error a user can cause is a :class:`FaceXInputError` whose message names the input and the fix;
the command line prints it as one line.
"""

from __future__ import annotations

import contextlib
import functools
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

HEIF_SUFFIXES = (".heic", ".heif")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", *HEIF_SUFFIXES)
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v")
ImageInput = str | Path | Image.Image | np.ndarray
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
BACKGROUND = (255, 255, 255)  # what transparent pixels show: a page's white, as a browser shows a cut-out


class FaceXInputError(ValueError):
    """Something wrong with an input the user gave; the message names the input and the fix."""


class NoFaceError(FaceXInputError):
    """No human face found in an input image."""


def load_image(image: ImageInput, name: str = "image", max_side: int = 2048, warn: Callable[[str], None] | None = None):
    """A path (an image, or a video: its first frame), PIL image or array -> (H, W, 3) uint8 RGB as a viewer shows it.

    Images with a side over `max_side` are downscaled (aspect kept) with a warning.
    """
    warn = warn or warn_user
    if isinstance(image, (str, Path)):
        path = Path(image)
        label = f"{name} {path}"
        if not path.is_file():
            raise FaceXInputError(f"{label}: file not found")
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            array = first_frame(path)
        elif suffix not in IMAGE_SUFFIXES:
            raise FaceXInputError(
                f"{label}: not an image or video ({suffix or 'no extension'}); use .jpg, .png, .webp, .heic or .mp4"
            )
        else:
            with open_image(path, label, "re-save it as .jpg or .png") as im:
                array = viewed(im, label, warn)
    elif isinstance(image, Image.Image):
        label = name
        array = viewed(image, label, warn)
    else:
        array, label = np.asarray(image), name
        if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise FaceXInputError(f"{name}: expected an (H, W, 3) uint8 RGB array, got {array.shape} {array.dtype}")
    h, w = array.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        warn(f"{label} is {w}x{h}, larger than {max_side} px: downscaled to {size[0]}x{size[1]}")
        array = np.asarray(Image.fromarray(array).resize(size, Image.LANCZOS))
    return np.ascontiguousarray(array, dtype=np.uint8)


def load_mask(mask: ImageInput, size: tuple[int, int], name: str = "mask") -> np.ndarray:
    """A user mask (white = repaint) -> (H, W) float32 {0, 1} at the image's `size` (W, H).

    A mask of another size is scaled to it (the target may have been shrunk on loading); one of another shape is an
    error, not stretched over the face."""
    if isinstance(mask, (str, Path)):
        path = Path(mask)
        if not path.is_file():
            raise FaceXInputError(f"{name} {path}: file not found")
        with open_image(path, f"{name} {path}", "give a black/white .png") as im:
            m = ImageOps.exif_transpose(im).convert("L")
    elif isinstance(mask, Image.Image):
        m = ImageOps.exif_transpose(mask).convert("L")
    else:
        arr = np.asarray(mask)
        if arr.ndim == 3:
            arr = arr.max(axis=-1)
        m = Image.fromarray((arr > (0.5 if arr.dtype.kind == "f" else 127)).astype(np.uint8) * 255)
    if m.size != size:
        (mw, mh), (w, h) = m.size, size
        if abs(mw / mh - w / h) > 0.01 * w / h:
            raise FaceXInputError(
                f"{name} is {mw}x{mh}, the target {w}x{h}: another shape; paint the mask over the target image itself "
                "(the same size, or the same shape scaled)"
            )
        m = m.resize(size, Image.NEAREST)
    out = (np.asarray(m) > 127).astype(np.float32)
    if not out.any():
        raise FaceXInputError(f"{name}: the mask is empty; paint the area to repaint white")
    return out


@contextlib.contextmanager
def open_image(path: Path, label: str, fix: str) -> Iterator[Image.Image]:
    """Image.open with the errors a user's file can cause as FaceXInputError: unreadable, too many pixels, HEIC
    without its plugin."""
    if not register_heif() and path.suffix.lower() in HEIF_SUFFIXES:
        raise FaceXInputError(
            f"{label}: HEIC/HEIF photos need the pillow-heif plugin: pip install 'facex-model[heif]' "
            "(or export the photo as .jpg)"
        )
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below with the file's name
            with Image.open(path) as im:
                if limit and im.width * im.height > limit:
                    raise FaceXInputError(_too_many_pixels(label, im.width * im.height, limit, im.size))
                yield im
    except FaceXInputError:
        raise
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        raise FaceXInputError(_too_many_pixels(label, int(found[1]) if found else None, limit)) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise FaceXInputError(f"{label}: not a readable image ({err}); {fix}") from None


def _too_many_pixels(label: str, pixels: int | None, limit: int, size: tuple[int, int] | None = None) -> str:
    shown = f"{size[0]}x{size[1]} = {pixels:,} pixels" if size else f"{pixels:,} pixels" if pixels else "too large"
    side = int(limit**0.5)
    return (
        f"{label} is {shown}, over the limit of {limit:,} pixels (PIL.Image.MAX_IMAGE_PIXELS, a guard against "
        f"decompression bombs); downscale it (e.g. to {side}x{side} or less) and retry"
    )


def viewed(im: Image.Image, label: str, warn: Callable[[str], None]) -> np.ndarray:
    """A PIL image -> (H, W, 3) uint8 RGB as a viewer shows it: EXIF orientation applied, an animation's first frame."""
    frames = getattr(im, "n_frames", 1)
    if getattr(im, "is_animated", False) and frames > 1:
        warn(f"{label} is animated ({frames} frames): using the first frame")
        im.seek(0)
    return to_rgb(ImageOps.exif_transpose(im))


def to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8 RGB: 16-bit scaled down (not clipped), transparency over white, palette and
    CMYK converted."""
    if im.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(im).astype(np.float32)
        if im.mode != "I" or values.max() > 255:  # mode I holds 16-bit PNG/TIFF samples, or already 8-bit ones
            values = values / 257
        grey = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        page = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return np.asarray(Image.alpha_composite(page, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


@functools.cache
def register_heif() -> bool:
    """Let Pillow open HEIC/HEIF (phone photos) when the ``heif`` extra (pillow-heif) is installed; -> installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def warn_user(message: str) -> None:
    """The default way to tell a library user about a changed input: a Python warning."""
    warnings.warn(message, stacklevel=3)


def open_video(path: Path):
    """(reader, info) of a video file: ``facex_data.decode.ClipReader`` and its ``VideoInfo`` (frames upright)."""
    from facex_data.decode import ClipReader, DecodeError

    try:
        reader = ClipReader(Path(path))
        return reader, reader.info()
    except DecodeError as err:
        raise FaceXInputError(f"video {err}") from None


def first_frame(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB first frame of a video (a video given where one image is wanted)."""
    reader, _ = open_video(Path(path))
    return reader.frames([0])[0]
