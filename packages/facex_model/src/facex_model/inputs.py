"""What users hand FaceX, read into what it works on: image and mask files, a video's frames, clear errors.

Every input error a user can cause is a :class:`FaceXInputError` whose message names the input and the fix;
the command line prints it as one line.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_SUFFIXES = (".mp4",)
ImageInput = str | Path | Image.Image | np.ndarray


class FaceXInputError(ValueError):
    """Something wrong with an input the user gave; the message names the input and the fix."""


class NoFaceError(FaceXInputError):
    """No human face found in an input image."""


def load_image(image: ImageInput, name: str = "image", max_side: int = 2048, warn: Callable[[str], None] | None = None):
    """A path (jpg/png/webp, or mp4: its first frame), PIL image or array -> (H, W, 3) uint8 RGB.

    Images with a side over `max_side` are downscaled (aspect kept) with a warning.
    """
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FaceXInputError(f"{name} {path}: file not found")
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            array = first_frame(path)
        elif suffix not in IMAGE_SUFFIXES:
            raise FaceXInputError(
                f"{name} {path}: not an image or video ({suffix or 'no extension'}); use .jpg, .png, .webp or .mp4"
            )
        else:
            try:
                with Image.open(path) as im:
                    array = np.asarray(im.convert("RGB"))
            except (OSError, SyntaxError, ValueError) as err:
                raise FaceXInputError(
                    f"{name} {path}: not a readable image ({err}); re-save it as .jpg or .png"
                ) from None
        label = f"{name} {path}"
    elif isinstance(image, Image.Image):
        array, label = np.asarray(image.convert("RGB")), name
    else:
        array, label = np.asarray(image), name
        if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise FaceXInputError(f"{name}: expected an (H, W, 3) uint8 RGB array, got {array.shape} {array.dtype}")
    h, w = array.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        (warn or warn_user)(f"{label} is {w}x{h}, larger than {max_side} px: downscaled to {size[0]}x{size[1]}")
        array = np.asarray(Image.fromarray(array).resize(size, Image.LANCZOS))
    return np.ascontiguousarray(array, dtype=np.uint8)


def load_mask(mask: ImageInput, size: tuple[int, int], name: str = "mask") -> np.ndarray:
    """A user mask (white = repaint) -> (H, W) float32 {0, 1} at the image's `size` (W, H)."""
    if isinstance(mask, (str, Path)):
        path = Path(mask)
        if not path.is_file():
            raise FaceXInputError(f"{name} {path}: file not found")
        try:
            with Image.open(path) as im:
                m = im.convert("L")
        except (OSError, SyntaxError, ValueError) as err:
            raise FaceXInputError(f"{name} {path}: not a readable image ({err}); give a black/white .png") from None
    elif isinstance(mask, Image.Image):
        m = mask.convert("L")
    else:
        arr = np.asarray(mask)
        if arr.ndim == 3:
            arr = arr.max(axis=-1)
        m = Image.fromarray((arr > (0.5 if arr.dtype.kind == "f" else 127)).astype(np.uint8) * 255)
    if m.size != size:
        m = m.resize(size, Image.NEAREST)
    out = (np.asarray(m) > 127).astype(np.float32)
    if not out.any():
        raise FaceXInputError(f"{name}: the mask is empty; paint the area to repaint white")
    return out


def warn_user(message: str) -> None:
    """The default way to tell a library user about a changed input: a Python warning."""
    warnings.warn(message, stacklevel=3)


def open_video(path: Path):
    """(reader, info) of a video file: ``facex_data.decode.ClipReader`` and its ``VideoInfo``."""
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
