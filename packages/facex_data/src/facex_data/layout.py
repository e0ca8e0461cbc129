"""What FaceX's folders look like on disk, and the rules read off them: each defined here once.

- Input clips, CelebV-HQ's layout: ``<root>/35666/<clip_id>.mp4`` and ``<root>/celebvhq_info.json``.
- A shard folder (the extract stage's output): ``shard-%06d.tar``, each with ``shard-%06d.stats.json``
  written last (its presence = the shard is complete), ``ledger.json`` (every clip: written or skipped
  with why; the backend that wrote them) and ``runs.jsonl`` (one line of timings per run).
- The held-out split (:func:`holdout_clips`) and the person a clip shows (:func:`person_of`): training
  skips the held-out clips, evaluation reads only them, and cross-identity pairs never pair a person
  with themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

CLIP_DIR = "35666"  # CelebV-HQ ships its clips in a folder of this name
INFO_FILE = "celebvhq_info.json"
LEDGER = "ledger.json"
RUN_LOG = "runs.jsonl"  # excluded from DVC hashing by .dvcignore: timings are not data
SHARD_GLOB = "shard-*.tar"


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def shard_tar(shard_dir: Path, name: str) -> Path:
    return Path(shard_dir) / f"{name}.tar"


def shard_stats(shard_dir: Path, name: str) -> Path:
    return Path(shard_dir) / f"{name}.stats.json"


def complete_shards(shard_dir: Path) -> list[str]:
    """Paths of the complete shards (those with a stats file) in a folder, in name order."""
    shard_dir = Path(shard_dir)
    urls = [str(shard_tar(shard_dir, p.name.removesuffix(".stats.json")))
            for p in sorted(shard_dir.glob("shard-*.stats.json"))]  # fmt: skip
    if not urls:
        raise FileNotFoundError(f"{shard_dir}: no complete shards (shard-*.stats.json); run the extract stage first")
    return urls


def read_ledger(shard_dir: Path) -> dict[str, Any]:
    """A shard folder's ``ledger.json``, or a FileNotFoundError that says how to make it."""
    path = Path(shard_dir) / LEDGER
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the extract stage first (dvc repro extract)")
    return json.loads(path.read_text())


def written_clips(shard_dir: Path) -> list[str]:
    """Clip ids the extract stage wrote into a shard folder, sorted."""
    return sorted(c["clip_id"] for c in read_ledger(shard_dir).get("clips", []) if c.get("status") == "written")


def shards_of_clips(shard_dir: Path, clips: Iterable[str]) -> list[str]:
    """The complete shards holding any of ``clips`` (the ledger says which), so the rest are never read."""
    wanted = set(clips)
    named = {c.get("shard") for c in read_ledger(shard_dir).get("clips", []) if c.get("clip_id") in wanted}
    urls = complete_shards(shard_dir)
    if None in named:  # a ledger without shard names: read them all
        return urls
    return [u for u in urls if Path(u).name.removesuffix(".tar") in named]


def shard_backend(shard_dir: Path) -> str:
    """The extractor backend that wrote a shard folder, as its ledger records it."""
    backend = read_ledger(shard_dir).get("run", {}).get("extractors")
    if not isinstance(backend, str) or not backend:
        raise ValueError(f"{Path(shard_dir) / LEDGER} records no extractor backend (run.extractors): re-extract")
    return backend


def sample_backend(meta: Mapping[str, Any]) -> str:
    """The extractor backend that wrote one shard sample, as its json records it."""
    extractors = meta.get("extractors")
    backend = extractors.get("backend") if isinstance(extractors, Mapping) else None
    if not isinstance(backend, str) or not backend:
        raise ValueError(f"sample {meta.get('clip_id')!r}: its json records no extractors.backend; re-extract")
    return backend


def holdout_clips(clip_ids: Iterable[str], every: int) -> set[str]:
    """The held-out split: of the clips sorted by id, every `every`-th one (indices every-1, 2*every-1, ...).

    Training skips these and evaluation uses only these, so the two never share a clip. ``every <= 0``
    holds nothing out; ``every == 1`` would hold out everything and is refused.
    """
    if every == 1:
        raise ValueError("split.holdout_every = 1 would hold out every clip and leave nothing to train on")
    if every <= 0:
        return set()
    ordered = sorted(set(clip_ids))
    return {clip for i, clip in enumerate(ordered) if i % every == every - 1}


def person_of(clip_id: str, info: Mapping[str, Any] | None = None) -> str:
    """Who a clip shows: its ``ytb_id`` (CelebV-HQ: one YouTube video = one person) when the clip's info
    (a sample json or a ``celebvhq_info.json`` entry) has one, else the clip id without its ``_<k>``."""
    ytb = (info or {}).get("ytb_id")
    return str(ytb) if ytb else re.sub(r"_\d+$", "", clip_id)
