"""The clip manifest: which clips a run reads, which frames it takes from each, and which shard each clip lands in.

Input is CelebV-HQ's layout: ``<input_dir>/35666/*.mp4`` (or mp4 files directly in ``input_dir``)
and an optional ``<input_dir>/celebvhq_info.json`` whose ``clips[clip_id]`` entries give attributes.
Clips are sorted by id and cut into consecutive groups of ``clips_per_shard``: the same input and
params always give the same shard names and contents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from facex_data.layout import CLIP_DIR, INFO_FILE, shard_name


@dataclass(frozen=True)
class FrameSelection:
    """Which frames of a clip become shard samples (the ``extract.frames`` params section).

    ``per_clip``: ``frames_per_clip`` frames spread evenly over the clip; ``every_k``: frames 0, k, 2k, ...;
    ``fps``: about ``fps`` frames per second. A clip with fewer than ``min_clip_frames`` frames is
    shorter than the sampling window and is skipped. ``max_frames_per_clip`` > 0 caps every mode.
    """

    mode: Literal["per_clip", "every_k", "fps"] = "per_clip"
    frames_per_clip: int = 4
    every_k: int = 10
    fps: float = 2.0
    min_clip_frames: int = 4
    max_frames_per_clip: int = 0

    def __post_init__(self) -> None:
        if self.frames_per_clip < 1 or self.every_k < 1 or self.fps <= 0 or self.min_clip_frames < 1:
            raise ValueError("extract.frames: frames_per_clip, every_k, min_clip_frames must be >= 1 and fps > 0")

    def indices(self, n_frames: int, clip_fps: float) -> list[int]:
        """Frame indices to take from a clip of ``n_frames`` at ``clip_fps`` (empty if too short)."""
        if n_frames < self.min_clip_frames or n_frames < 1:
            return []
        if self.mode == "per_clip":
            n = min(self.frames_per_clip, n_frames)
            # centres of n equal segments: spread over the clip, never the very first/last frame only
            idx = [int((2 * i + 1) * n_frames // (2 * n)) for i in range(n)]
        elif self.mode == "every_k":
            idx = list(range(0, n_frames, self.every_k))
        else:
            step = max(clip_fps / self.fps, 1.0) if clip_fps > 0 else 1.0
            idx = sorted({int(round(i * step)) for i in range(int(n_frames / step) + 1)} - {n_frames})
            idx = [i for i in idx if i < n_frames]
        if self.max_frames_per_clip > 0:
            idx = idx[: self.max_frames_per_clip]
        return idx


@dataclass(frozen=True)
class Clip:
    clip_id: str
    path: Path
    info: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ShardPlan:
    index: int
    clips: tuple[Clip, ...]

    @property
    def name(self) -> str:
        return shard_name(self.index)


@dataclass(frozen=True)
class ClipManifest:
    """All clips of an input folder, their info-json entries, and their assignment to shards."""

    input_dir: Path
    clips: tuple[Clip, ...]
    info_file: Path | None
    meta_info: dict = field(default_factory=dict, compare=False)

    @classmethod
    def scan(cls, input_dir: Path) -> ClipManifest:
        input_dir = Path(input_dir)
        if not input_dir.is_dir():
            raise FileNotFoundError(f"{input_dir}: input folder not found; set extract.input_dir in the params file")
        clip_dir = input_dir / CLIP_DIR if (input_dir / CLIP_DIR).is_dir() else input_dir
        info_path = input_dir / INFO_FILE
        entries: dict = {}
        meta: dict = {}
        if info_path.is_file():
            try:
                info = json.loads(info_path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{info_path}: not valid JSON ({err}); fix or remove the file") from err
            entries, meta = info.get("clips", {}), info.get("meta_info", {})
        else:
            info_path = None
        paths = sorted(clip_dir.glob("*.mp4"))
        if not paths:
            raise FileNotFoundError(
                f"{clip_dir}: no .mp4 clips found; expected CelebV-HQ layout <input>/{CLIP_DIR}/*.mp4"
            )
        clips = tuple(Clip(p.stem, p, entries.get(p.stem, {})) for p in paths)
        return cls(input_dir, clips, info_path, meta)

    def shards(self, clips_per_shard: int) -> list[ShardPlan]:
        if clips_per_shard < 1:
            raise ValueError("extract.clips_per_shard must be >= 1")
        return [
            ShardPlan(i, self.clips[start:start + clips_per_shard])
            for i, start in enumerate(range(0, len(self.clips), clips_per_shard))
        ]
