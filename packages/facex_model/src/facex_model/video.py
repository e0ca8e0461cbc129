"""Reenactment and face swap over a video: decord in, H.264 mp4 out (original fps, audio copied), one face per frame.

Frames are decoded upright (a phone video's display rotation applied), so the output plays upright everywhere.
Stability: the per-frame alignments are smoothed over time (a centred moving average of the frame -> crop similarity
and of the landmarks), the source is encoded once, and every frame starts from the same initial noise. With a
reference face, each frame's face is the one most like that person (not the largest), so the same person is followed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from facex_model import denoising
from facex_model.inputs import FaceXInputError, ImageInput, open_video
from facex_model.pipeline import Face, FaceXPipeline

VIDEO_TASKS = ("reenact", "swap", "animate")


@dataclass
class VideoResult:
    path: Path
    frames: int
    fps: float
    frames_without_face: int
    audio: bool


def smooth(values: np.ndarray, valid: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over time (axis 0) of the frames where `valid`; window 1 = no smoothing."""
    if window <= 1:
        return values
    out = values.copy()
    half = window // 2
    for i in np.flatnonzero(valid):
        lo, hi = max(0, i - half), min(len(values), i + half + 1)
        keep = valid[lo:hi]
        out[i] = values[lo:hi][keep].mean(axis=0)
    return out


def realign(
    pipe: FaceXPipeline, frame: np.ndarray, detection, transform: np.ndarray, landmarks: np.ndarray, points5: np.ndarray
):
    """A frame's features measured on the crop a smoothed transform gives (landmarks and 5 points in frame space)."""
    ex = pipe.extractors
    size = ex.options.crop_size
    crop = cv2.warpAffine(frame, transform, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
    lmk = (landmarks @ transform[:, :2].T + transform[:, 2]).astype(np.float32)
    pts = (points5 @ transform[:, :2].T + transform[:, 2]).astype(np.float32)
    return ex.measured([dataclasses.replace(detection, crop=crop, landmarks=lmk, transform=transform, points5=pts)])[0]


def to_frame_coords(landmarks: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Crop-space points -> frame space through the inverse of a (2, 3) frame -> crop similarity."""
    inv = cv2.invertAffineTransform(transform)
    return landmarks @ inv[:, :2].T + inv[:, 2]


def run_video(
    pipe: FaceXPipeline,
    task: str,
    source: Path | str | np.ndarray,
    target_video: Path,
    out_path: Path,
    *,
    steps: int = 20,
    cfg_scale: float = 3.0,
    scheduler: str = "ddim",
    seed: int = 0,
    face_index: int | None = None,
    source_face_index: int | None = None,
    target_face_like: ImageInput | None = None,
    smooth_window: int = 5,
    batch_frames: int = 16,
    batch_size: int = 8,
    watermark: bool = True,
    progress: bool = True,
    resume: bool = False,
    on_frame: Callable[[int, np.ndarray], None] | None = None,
) -> VideoResult:
    """`task` over every frame of `target_video` (the driving video for reenact) -> an H.264 mp4 at `out_path`.

    With `resume`, generated frames are also kept in `<out>.frames.partial/` (lossless PNG) until the video is
    complete, and a re-run with the same settings generates only the frames that are not there yet.
    `target_face_like` (an image of the person): in every frame, the face most like that person is the one changed.
    Frames are decoded `batch_frames` at a time and generated `batch_size` at a time (one denoising batch; on a GPU
    the larger, the faster, as far as its memory allows).
    """
    if batch_size < 1 or batch_frames < 1:
        raise FaceXInputError(f"batch_size and batch_frames must be at least 1, got {batch_size} and {batch_frames}")
    if task not in VIDEO_TASKS:
        raise FaceXInputError(f"{task} on a video: only {', '.join(VIDEO_TASKS)} take a target video")
    target_video, out_path = Path(target_video), Path(out_path)
    if out_path.suffix.lower() != ".mp4":
        raise FaceXInputError(f"--out {out_path}: a video task writes .mp4")
    if face_index is not None and target_face_like is not None:
        raise FaceXInputError("choose the target face by --face-index or by --target-face-like, not both")
    reader, info = open_video(target_video)
    if out_path.resolve() == target_video.resolve():
        raise FaceXInputError(f"--out {out_path} is the input video; write to another file")
    source_face = pipe.detect(source, "source", source_face_index)
    source_inputs = pipe.face_inputs(source_face)
    like = pipe.identity(target_face_like, "--target-face-like") if target_face_like is not None else None
    r = pipe.resolution
    noise = denoising.initial_noise(pipe.model, 1, r, r, torch.Generator().manual_seed(seed))

    # pass 1: detect and align every frame, then smooth the tracks
    detections: list = []
    for start in _tqdm(range(0, info.n_frames, batch_frames), progress, "detect", unit="batch"):
        idx = list(range(start, min(info.n_frames, start + batch_frames)))
        frames = reader.frames(idx)
        if face_index or like is not None:
            for i, f in zip(idx, frames):
                try:
                    detections.append(pipe.select_face(f, f"{target_video} frame {i}", face_index, like)[0])
                except FaceXInputError:
                    detections.append(None)
        else:
            detections.extend(pipe.extractors.features(frames))
    valid = np.array([d is not None for d in detections])
    if not valid.any():
        raise FaceXInputError(f"no face found in any frame of {target_video}; use a video with a visible face")
    transforms = np.stack([d.detection.transform if d is not None else np.zeros((2, 3)) for d in detections])
    landmarks = np.stack(
        [to_frame_coords(d.detection.landmarks, d.detection.transform) if d is not None else np.zeros((68, 2))
         for d in detections]
    )  # fmt: skip
    points5 = np.stack(
        [to_frame_coords(d.detection.points5, d.detection.transform) if d is not None else np.zeros((5, 2))
         for d in detections]
    )  # fmt: skip
    transforms = smooth(transforms, valid, smooth_window)
    landmarks = smooth(landmarks, valid, smooth_window)
    points5 = smooth(points5, valid, smooth_window)

    # pass 2: generate `batch_size` frames at a time, write in order as we go
    from facex_model.watermark import embed

    settings = {
        "task": task, "source": str(source) if not isinstance(source, np.ndarray) else "array",
        "target": str(target_video.resolve()), "target_bytes": target_video.stat().st_size, "steps": steps,
        "cfg_scale": cfg_scale, "scheduler": scheduler, "seed": seed, "face_index": face_index,
        "target_face_like": None if like is None else like.round(4).tolist(),
        "smooth_window": smooth_window, "model": pipe.model.config.to_json(),
    }  # fmt: skip
    cache = FrameCache(out_path.with_suffix(".frames.partial"), settings) if resume else None

    fps = _fps(target_video, info.fps)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    import av

    with av.open(str(out_path), "w") as out, av.open(str(target_video)) as src:
        if watermark:  # container metadata goes in the header, written with the first packet
            out.metadata["comment"] = "Synthetic video generated by FaceX; frames carry an invisible FaceX watermark."
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = info.width - info.width % 2, info.height - info.height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "17"}
        audio_in = next(iter(src.streams.audio), None)
        audio_out = out.add_stream_from_template(audio_in) if audio_in is not None else None
        chunk = max(batch_frames, batch_size)
        from tqdm import tqdm

        bar = tqdm(total=info.n_frames, desc=task, unit="frame", disable=not progress)
        for start in range(0, info.n_frames, chunk):
            idx = list(range(start, min(info.n_frames, start + chunk)))
            frames = dict(zip(idx, reader.frames(idx)))
            todo = []
            for i in idx:
                done = cache.get(i) if cache is not None and valid[i] else None
                if done is not None:
                    frames[i] = done
                elif valid[i]:
                    todo.append(i)
            for first in range(0, len(todo), batch_size):
                rows = todo[first : first + batch_size]
                targets = [
                    Face(frames[i], realign(pipe, frames[i], detections[i].detection, transforms[i], landmarks[i],
                                            points5[i]), f"{target_video} frame {i}")
                    for i in rows
                ]  # fmt: skip
                results = pipe.generate_many(
                    task, [(source_face, t) for t in targets], steps=steps, cfg_scale=cfg_scale, scheduler=scheduler,
                    seeds=[seed] * len(rows), noise=noise, source_inputs=source_inputs,
                )  # fmt: skip
                for i, result in zip(rows, results, strict=True):
                    frames[i] = np.asarray(result.image)
                    if cache is not None:
                        cache.put(i, frames[i])
            for i in idx:
                frame = embed(frames[i]) if watermark else frames[i]
                if on_frame is not None:
                    on_frame(i, frame)
                picture = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(frame[: stream.height, : stream.width]), format="rgb24"
                )
                for packet in stream.encode(picture):
                    out.mux(packet)
                bar.update(1)
        bar.close()
        for packet in stream.encode():
            out.mux(packet)
        if audio_in is not None:
            for packet in src.demux(audio_in):
                if packet.dts is None:
                    continue
                packet.stream = audio_out
                out.mux(packet)
    if cache is not None:
        cache.clear()
    return VideoResult(out_path, info.n_frames, float(fps), int((~valid).sum()), audio_in is not None)


class FrameCache:
    """Generated frames of an unfinished video, as lossless PNGs beside the output; reset when settings change."""

    def __init__(self, folder: Path, settings: dict) -> None:
        self.folder = folder
        stamp = folder / "settings.json"
        text = json.dumps(settings, sort_keys=True, default=str)
        if folder.is_dir() and (not stamp.is_file() or stamp.read_text() != text):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stamp.write_text(text)

    def path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.png"

    def get(self, index: int) -> np.ndarray | None:
        path = self.path(index)
        if not path.is_file():
            return None
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    def put(self, index: int, frame: np.ndarray) -> None:
        tmp = self.folder / f"{index:06d}.tmp.png"
        Image.fromarray(frame).save(tmp)
        tmp.replace(self.path(index))  # atomic: a killed run never leaves a half-written frame

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _fps(path: Path, fallback: float) -> Fraction:
    """The container's exact average frame rate (e.g. 30000/1001), else decord's float."""
    import av

    try:
        with av.open(str(path)) as c:
            rate = c.streams.video[0].average_rate
            if rate:
                return Fraction(rate)
    except (av.FFmpegError, IndexError):
        pass
    return Fraction(fallback).limit_denominator(1001)


def _tqdm(iterable, enabled: bool, desc: str, unit: str, total: int | None = None):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit=unit, total=total)
