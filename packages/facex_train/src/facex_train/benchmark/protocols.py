"""The benchmarks as data: each protocol names its datasets, the task it runs, how its pair list is drawn from the
datasets' public layout, and the columns of its table, in order.

A pair list is a pure function of (the dataset copy's file names, the protocol's version, the seed): the same copy
and seed give the same bytes (:func:`pair_list_bytes`), and its sha256 goes into every result built from it.
FF++'s pairs are the official ones (``datasets.ffpp_swap_pairs``); the seed only draws the others.

The published rows of the paper's tables are reference data (``paper_tables.json`` beside this module, labelled
with their source), never computed here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from facex_train.benchmark import datasets as ds
from facex_train.benchmark.datasets import FrameRef, LayoutError


@dataclass(frozen=True)
class Column:
    key: str  # the metric's key in metrics.json
    label: str  # the header as the paper prints it
    higher_is_better: bool


@dataclass(frozen=True)
class PairSettings:
    seed: int = 0
    max_pairs: int | None = None  # None: the protocol's own count
    frames_per_video: int = 10


@dataclass(frozen=True)
class Protocol:
    name: str
    table: str  # the paper's table it reproduces
    task: str  # the FaceX task every pair runs
    datasets: tuple[str, ...]  # names of the --root folders it reads
    columns: tuple[Column, ...]
    build: Callable[[dict[str, Path], PairSettings], tuple[list[dict], dict]]  # -> (pairs, what they came from)
    default_pairs: int | None = None  # None: every pair the layout defines
    version: int = 1  # bumped whenever the way pairs are drawn changes (it is in every pair list and result)
    description: str = ""


ID = Column("id_similarity", "ID↑", True)
RETRIEVAL1 = Column("id_retrieval_top1", "ID ret. top-1↑", True)
RETRIEVAL5 = Column("id_retrieval_top5", "ID ret. top-5↑", True)
POSE = Column("pose_l2", "Pose↓", False)
EXPRESSION = Column("expression_l2", "Exp↓", False)
GAZE = Column("gaze_l2", "Gaze↓", False)
FID = Column("fid", "FID↓", False)
DETECTED = Column("face_detection_rate", "Det.↑", True)  # ours: the share of outputs that hold a findable face


def _pair(source: FrameRef, target: FrameRef) -> dict:
    return {"source": source.to_json(), "target": target.to_json()}


def _ffpp_swap(roots: dict[str, Path], settings: PairSettings) -> tuple[list[dict], dict]:
    root = Path(roots["ffpp"])
    videos = ds.ffpp_videos(root)
    official, listed_in = ds.ffpp_swap_pairs(root)
    missing = sorted({v for pair in official for v in pair} - set(videos))
    if missing:
        raise LayoutError(f"FaceForensics++: the pair list ({listed_in}) names videos not in {root / ds.FFPP_VIDEOS}: "
                          f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")  # fmt: skip
    counts: dict[str, int] = {}
    pairs: list[dict] = []
    k = settings.frames_per_video
    for target_id, source_id in official:
        for vid in (target_id, source_id):
            counts.setdefault(vid, ds.frame_count(videos[vid]))
        target_frames, source_frames = ds.spread(counts[target_id], k), ds.spread(counts[source_id], k)
        for j, t in enumerate(target_frames):
            s = source_frames[j % len(source_frames)]
            pairs.append(_pair(FrameRef("ffpp", ds.relative(videos[source_id], root), s, source_id),
                               FrameRef("ffpp", ds.relative(videos[target_id], root), t, target_id)))  # fmt: skip
    return pairs, {"ffpp": f"{len(official)} official (target, source) pairs from {listed_in}, {k} frames each"}


def _vox_sequences(root: Path) -> list[tuple[str, str, list[str] | None, int]]:
    out = []
    for speaker, item, frames in ds.voxceleb_sequences(root):
        if frames is None:
            out.append((speaker, ds.relative(item, root), None, ds.frame_count(item)))
        else:
            out.append((speaker, ds.relative(item, root), [ds.relative(f, root) for f in frames], len(frames)))
    return out


def _vox_ffhq_reenact(roots: dict[str, Path], settings: PairSettings) -> tuple[list[dict], dict]:
    vox, ffhq = Path(roots["voxceleb1"]), Path(roots["ffhq"])
    sequences = _vox_sequences(vox)
    images = [ds.relative(p, ffhq) for p in ds.ffhq_images(ffhq)]
    rng = random.Random(settings.seed)
    pairs = []
    for _ in range(settings.max_pairs):
        speaker, path, frames, count = sequences[rng.randrange(len(sequences))]
        index = rng.randrange(count)
        driving = FrameRef("voxceleb1", frames[index], 0, speaker) if frames else FrameRef("voxceleb1", path, index,
                                                                                               speaker)  # fmt: skip
        image = images[rng.randrange(len(images))]
        pairs.append(_pair(FrameRef("ffhq", image, 0, Path(image).stem), driving))
    return pairs, {"voxceleb1": f"{len(sequences)} test sequences (driving frames)",
                   "ffhq": f"{len(images)} images (sources)"}  # fmt: skip


def _ffhq_headswap(roots: dict[str, Path], settings: PairSettings) -> tuple[list[dict], dict]:
    ffhq = Path(roots["ffhq"])
    images = [ds.relative(p, ffhq) for p in ds.ffhq_images(ffhq)]
    if len(images) < 2:
        raise LayoutError(f"FFHQ: head swap needs two images; {ffhq / ds.FFHQ_IMAGES} holds {len(images)}")
    rng = random.Random(settings.seed)
    pairs = []
    for _ in range(settings.max_pairs):
        a, b = rng.sample(images, 2)
        pairs.append(_pair(FrameRef("ffhq", a, 0, Path(a).stem), FrameRef("ffhq", b, 0, Path(b).stem)))
    return pairs, {"ffhq": f"{len(images)} images"}


def _reconstruction(roots: dict[str, Path], settings: PairSettings) -> tuple[list[dict], dict]:
    root = Path(roots["clips"])
    clips = ds.clip_files(root)
    rng = random.Random(settings.seed)
    order = list(range(len(clips)))
    rng.shuffle(order)
    pairs = []
    for i in order:
        if len(pairs) == (settings.max_pairs or len(clips)):
            break
        count = ds.frame_count(clips[i])
        if count < 2:
            continue
        s, t = rng.sample(range(count), 2)
        rel = ds.relative(clips[i], root)
        pairs.append(_pair(FrameRef("clips", rel, s, rel), FrameRef("clips", rel, t, rel)))
    return pairs, {"clips": f"{len(clips)} clips, two frames of one clip per pair"}


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("ffpp-swap", "Table 2", "swap", ("ffpp",),
                 (RETRIEVAL1, RETRIEVAL5, ID, POSE, EXPRESSION, FID, DETECTED), _ffpp_swap,
                 description="face swap on FaceForensics++: every video with its official source, 10 evenly spread "
                 "frames each (FaceShifter's protocol)"),
        Protocol("vox-ffhq-reenact", "Table 1", "reenact", ("voxceleb1", "ffhq"),
                 (ID, EXPRESSION, POSE, GAZE, FID, DETECTED), _vox_ffhq_reenact, default_pairs=1000,
                 description="cross-identity reenactment: VoxCeleb1 test frames drive FFHQ images"),
        Protocol("ffhq-headswap", "Table 2 (head swap)", "headswap", ("ffhq",),
                 (ID, RETRIEVAL1, POSE, EXPRESSION, FID, DETECTED), _ffhq_headswap, default_pairs=1000,
                 description="head swap between FFHQ images"),
        Protocol("reconstruction", "Table 3", "headswap", ("clips",),
                 (Column("ssim", "SSIM↑", True), Column("psnr", "PSNR↑", True), Column("rmse", "RMSE↓", False),
                  Column("lpips", "LPIPS↓", False)),  # ours, as the community reports it: the paper's Table 3 has none
                 _reconstruction,
                 description="self-reconstruction: two frames of one held-out clip, the target is the ground truth"),
    )
}  # fmt: skip


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise KeyError(f"unknown benchmark {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def parse_roots(protocol: Protocol, values: list[str]) -> dict[str, Path]:
    """--root values (``DIR``, ``name=DIR``, or several joined by commas) -> {dataset: folder}."""
    roots: dict[str, Path] = {}
    for value in (v for text in values for v in text.split(",") if v):
        name, sep, folder = value.partition("=")
        if not sep:
            if len(protocol.datasets) != 1:
                raise ValueError(f"{protocol.name} reads {len(protocol.datasets)} datasets: give each as "
                                 f"--root NAME=DIR ({', '.join(protocol.datasets)})")  # fmt: skip
            name, folder = protocol.datasets[0], value
        if name not in protocol.datasets:
            raise ValueError(f"{protocol.name} reads no dataset {name!r}; its datasets: {', '.join(protocol.datasets)}")
        roots[name] = Path(folder).expanduser()
    missing = [d for d in protocol.datasets if d not in roots]
    if missing:
        raise ValueError(f"{protocol.name} needs --root for {', '.join(missing)} "
                         f"(e.g. --root {missing[0]}=/data/{missing[0]})")  # fmt: skip
    return roots


def build_pair_list(protocol: Protocol, roots: dict[str, Path], settings: PairSettings) -> dict[str, Any]:
    settings = dataclasses.replace(settings, max_pairs=settings.max_pairs or protocol.default_pairs)
    pairs, built_from = protocol.build(roots, settings)
    if settings.max_pairs is not None:
        pairs = pairs[: settings.max_pairs]
    if not pairs:
        raise LayoutError(f"{protocol.name}: the datasets at {', '.join(map(str, roots.values()))} give no pairs")
    return {
        "protocol": protocol.name, "version": protocol.version, "task": protocol.task, "seed": settings.seed,
        "frames_per_video": settings.frames_per_video, "built_from": built_from,
        "pairs": [{"pair": i} | p for i, p in enumerate(pairs)],
    }  # fmt: skip


def pair_list_bytes(pair_list: dict[str, Any]) -> bytes:
    """The canonical bytes of a pair list (one pair per line): what is written, hashed and compared."""
    head = {k: v for k, v in pair_list.items() if k != "pairs"}
    lines = [json.dumps(head, sort_keys=True)] + [json.dumps(p, sort_keys=True) for p in pair_list["pairs"]]
    return ("\n".join(lines) + "\n").encode()


def read_pair_list(path: Path) -> dict[str, Any]:
    lines = Path(path).read_text().splitlines()
    head = json.loads(lines[0])
    return head | {"pairs": [json.loads(line) for line in lines[1:] if line.strip()]}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def published_tables() -> dict[str, Any]:
    """The paper's published rows (reference data shipped with the package; see its "source" and "status")."""
    return json.loads(resources.files("facex_train.benchmark").joinpath("paper_tables.json").read_text())
