"""Readers for the public on-disk layouts the paper's benchmarks use, and the frames they point at.

A benchmark pair names its two frames by :class:`FrameRef`: which dataset root, a path relative to it, and a
frame index for videos. Each reader lists what a user's copy holds and raises :class:`LayoutError` naming the
folder it expected and the layout it wants when a copy is missing or laid out otherwise.

- FaceForensics++ (``ffpp``): ``original_sequences/youtube/c23/videos/<id>.mp4``; the official swap pairs from
  ``splits/{train,val,test}.json`` (the FF++ repository's ``dataset/splits``: ``[["953", "974"], ...]``) or, without
  them, from the names of the manipulated videos (``manipulated_sequences/<method>/c23/videos/<target>_<source>.mp4``).
- VoxCeleb1 test (``voxceleb1``): ``id<speaker>/<video>/<utterance>.mp4`` (under the root or its ``mp4/``), or
  extracted frames ``id<speaker>/<video>/<utterance>/<frame>.{jpg,png}``.
- FFHQ (``ffhq``): ``images1024x1024/**/<id>.png`` (the official 1000-image subfolders, or flat).
- any clips (``clips``): every ``.mp4`` under the root (e.g. held-out CelebV-HQ clips), for reconstruction.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facex_data.decode import ClipReader
from facex_model.inputs import load_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FFPP_VIDEOS = "original_sequences/youtube/c23/videos"
FFPP_MANIPULATED = "manipulated_sequences"
FFPP_SPLITS = ("train", "val", "test")
FFHQ_IMAGES = "images1024x1024"


class LayoutError(FileNotFoundError):
    """A dataset copy that is missing or not in the layout a benchmark reads; the message says which."""


@dataclass(frozen=True)
class FrameRef:
    """One frame of a dataset: `path` relative to the dataset's root; `frame` indexes a video (0 for an image)."""

    dataset: str
    path: str
    frame: int = 0
    identity: str = ""  # who it shows, as the dataset names them (FF++ video id, VoxCeleb speaker, FFHQ image id)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> FrameRef:
        return cls(**data)


def read_frame(roots: dict[str, Path], ref: FrameRef) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the frame a reference names."""
    path = Path(roots[ref.dataset]) / ref.path
    if not path.is_file():
        raise LayoutError(f"{path} not found: the benchmark's pair list names it; is --root {ref.dataset}= the copy "
                          "the pair list was made from?")  # fmt: skip
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return ClipReader(path).frames([ref.frame])[0]
    return load_image(path, ref.dataset)


def frame_count(path: Path) -> int:
    return ClipReader(path).info().n_frames


def spread(n: int, k: int) -> list[int]:
    """k frame indices evenly spread over 0..n-1 (all of them when n <= k)."""
    if n <= k:
        return list(range(n))
    return [int(i) for i in np.linspace(0, n - 1, k).round().astype(int)]


def relative(path: Path, root: Path) -> str:
    """A path inside a dataset root as the pair lists store it (posix, relative)."""
    return path.relative_to(root).as_posix()


def _require_dir(path: Path, dataset: str, layout: str) -> Path:
    if not path.is_dir():
        raise LayoutError(f"{dataset}: expected the folder {path} ({layout})")
    return path


# --- FaceForensics++ -----------------------------------------------------------------------------------------------
def ffpp_videos(root: Path) -> dict[str, Path]:
    """{video id: original c23 video} of an FF++ copy."""
    folder = _require_dir(Path(root) / FFPP_VIDEOS, "FaceForensics++", "FF++ layout: <root>/" + FFPP_VIDEOS +
                          "/000.mp4 ... 999.mp4, as the FF++ download script writes with -c c23 -t videos")  # fmt: skip
    videos = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES}
    if not videos:
        raise LayoutError(f"FaceForensics++: no videos in {folder} (expected 000.mp4 ... 999.mp4)")
    return videos


def ffpp_swap_pairs(root: Path) -> tuple[list[tuple[str, str]], str]:
    """The official (target, source) video pairs of an FF++ copy and where they were read.

    ``splits/{train,val,test}.json`` (the FaceForensics repository's ``dataset/splits``) list identity pairs [a, b];
    FF++ manipulates both ways (a_b: b's face on a's video, and b_a), so the three splits give one pair per original
    video (the FaceShifter protocol swaps every video). Without split files, every manipulated video's name
    <target>_<source> is a pair."""
    root = Path(root)
    split_files = [f for f in (root / "splits" / f"{name}.json" for name in FFPP_SPLITS) if f.is_file()]
    if split_files:
        pairs: set[tuple[str, str]] = set()
        for split_file in split_files:
            try:
                listed = json.loads(split_file.read_text())
                pairs |= {(str(a), str(b)) for x, y in listed for a, b in ((x, y), (y, x))}
            except (ValueError, TypeError) as err:
                raise LayoutError(f"{split_file}: not an FF++ split file ([[\"953\", \"974\"], ...]): {err}") from None
        return sorted(pairs), "splits/" + "+".join(f.name for f in split_files)
    manipulated = root / FFPP_MANIPULATED
    names = sorted({p.stem for p in manipulated.glob("*/c23/videos/*") if p.suffix.lower() in VIDEO_SUFFIXES})
    found = sorted({tuple(n.split("_")[:2]) for n in names if n.count("_") == 1})
    if not found:
        raise LayoutError(
            f"FaceForensics++: no official pair list in {root}: expected {root / 'splits'}/{{train,val,test}}.json "
            "(copy dataset/splits/ from the FaceForensics repository) or manipulated videos "
            f"{manipulated}/<method>/c23/videos/<target>_<source>.mp4"
        )
    return found, f"{FFPP_MANIPULATED}/*/c23/videos names"  # type: ignore[return-value]


# --- VoxCeleb1 -----------------------------------------------------------------------------------------------------
def voxceleb_sequences(root: Path) -> list[tuple[str, Path, list[Path] | None]]:
    """[(speaker, video file or frames folder, sorted frame files or None for a video)] of a VoxCeleb1 copy."""
    root = Path(root)
    base = root / "mp4" if (root / "mp4").is_dir() and not any(root.glob("id*")) else root
    speakers = sorted(p for p in base.glob("id*") if p.is_dir())
    if not speakers:
        raise LayoutError(
            f"VoxCeleb1: no id<speaker> folders in {base}: expected the test set as <root>/id10270/<video>/00001.mp4 "
            "(vox1_test_mp4, also under <root>/mp4/) or frames <root>/id10270/<video>/00001/<frame>.jpg"
        )
    sequences: list[tuple[str, Path, list[Path] | None]] = []
    for speaker in speakers:
        for video in sorted(p for p in speaker.iterdir() if p.is_dir()):
            for item in sorted(video.iterdir()):
                if item.is_file() and item.suffix.lower() in VIDEO_SUFFIXES:
                    sequences.append((speaker.name, item, None))
                elif item.is_dir():
                    frames = sorted(f for f in item.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
                    if frames:
                        sequences.append((speaker.name, item, frames))
    if not sequences:
        raise LayoutError(f"VoxCeleb1: {base} has speaker folders but no <video>/<utterance>.mp4 or frame folders")
    return sequences


# --- FFHQ ----------------------------------------------------------------------------------------------------------
def ffhq_images(root: Path) -> list[Path]:
    folder = _require_dir(Path(root) / FFHQ_IMAGES, "FFHQ", f"FFHQ layout: <root>/{FFHQ_IMAGES}/00000/00000.png "
                          "(or flat <root>/images1024x1024/00000.png)")  # fmt: skip
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise LayoutError(f"FFHQ: no .png images under {folder}")
    return images


# --- any clips -----------------------------------------------------------------------------------------------------
def clip_files(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"clips: expected a folder of videos at {root} (any <root>/**/*.mp4, e.g. held-out clips)")
    clips = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        raise LayoutError(f"clips: no videos (*.mp4) under {root}")
    return clips
