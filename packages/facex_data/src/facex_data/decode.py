"""Video decoding with decord: probe a clip, then decode its sampled frames in small batches, upright.

Phones store portrait videos sideways with a display rotation (a display-matrix side datum) that players apply;
:class:`ClipReader` returns frames as a player shows them.

These functions run inside a Ray task (or a subprocess), never in the driver: decord can hang or
crash on corrupt files, and the caller isolates that with a timeout / worker restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DecodeError(RuntimeError):
    """A clip that cannot be decoded; the message names the file and what to do."""


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int
    fps: float
    width: int
    height: int


def _reader(path: Path):
    import decord

    path = Path(path)
    if not path.exists() or path.is_dir():
        raise DecodeError(f"{path}: file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise DecodeError(f"{path}: empty file (0 bytes); re-download or remove the clip")
    try:
        # one thread: Ray already runs several decodes side by side
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as err:  # decord raises its own DECORDError / RuntimeError with C++ text
        raise DecodeError(f"{path}: not a readable video ({_short(err)}); re-download or remove the clip") from None


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def upright(frames: np.ndarray, rotation: int) -> np.ndarray:
    """(..., H, W, C) frames turned `rotation` degrees counter-clockwise (a multiple of 90), as a player shows them."""
    return np.rot90(frames, rotation // 90 % 4, axes=(-3, -2))


def stored_first_frame(path: Path) -> tuple[np.ndarray, int] | None:
    """(a video's first frame as stored, the degrees a player turns it counter-clockwise: its display-matrix side
    datum, 0, 90, 180 or 270) read with PyAV, or None where PyAV cannot read the file."""
    import av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0), None)
            if frame is None:
                return None
            return frame.to_ndarray(format="rgb24"), round(frame.rotation / 90) % 4 * 90
    except (av.FFmpegError, OSError, ValueError, IndexError):
        return None


class ClipReader:
    """One open clip: probe it once, then decode batches of sampled frames in order (no reopen per batch)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.vr = _reader(self.path)
        self.rotation = self._rotation_left()

    def _rotation_left(self) -> int:
        """Degrees counter-clockwise decord's frames still need to be upright. decord 0.6 applies a display rotation
        itself; whether this build did is checked on the first frame against PyAV's stored one turned upright."""
        first = stored_first_frame(self.path)
        if first is None or first[1] == 0:
            return 0
        stored, rotation = first
        want = upright(stored, rotation).astype(np.float32)
        try:
            got = self.vr[0].asnumpy()
        except Exception:  # info() reports an unreadable first frame
            return 0
        error = {}
        for turn in (0, 90, 180, 270):
            turned = upright(got, turn)
            if turned.shape == want.shape:
                error[turn] = float(np.abs(turned - want).mean())
        if not error:
            return 0
        best = min(error, key=error.get)
        # a first frame that looks the same every way round (a black fade-in) cannot tell: trust decord then
        return best if error.get(0, np.inf) - error[best] > 1.0 else 0

    def info(self) -> VideoInfo:
        n = len(self.vr)
        if n == 0:
            raise DecodeError(f"{self.path}: no video frames; re-download or remove the clip")
        try:
            h, w = upright(self.vr[0].asnumpy(), self.rotation).shape[:2]
        except Exception as err:
            raise DecodeError(f"{self.path}: first frame unreadable ({_short(err)}); re-download or remove") from None
        return VideoInfo(n, float(self.vr.get_avg_fps()), int(w), int(h))

    def frames(self, indices: list[int]) -> np.ndarray:
        """(len(indices), H, W, 3) uint8 RGB frames, upright (grayscale clips come back as 3 equal channels)."""
        try:
            frames = self.vr.get_batch(list(indices)).asnumpy()
        except Exception as err:
            raise DecodeError(
                f"{self.path}: decoding frames {indices[0]}..{indices[-1]} failed ({_short(err)}); "
                "the file is probably truncated: re-download or remove it"
            ) from None
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise DecodeError(f"{self.path}: decoder returned frames of shape {frames.shape}, expected (N, H, W, 3)")
        return np.ascontiguousarray(upright(frames, self.rotation), dtype=np.uint8)


def probe(path: Path) -> VideoInfo:
    return ClipReader(path).info()


def decode_frames(path: Path, indices: list[int]) -> np.ndarray:
    return ClipReader(path).frames(indices)
