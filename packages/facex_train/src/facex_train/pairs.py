"""Training pairs from the extract stage's WebDataset shards.

FaceX trains by self-reconstruction (paper §3.5): source and target are two frames of the same clip,
so the model must take identity and appearance from the source and motion from the target to
reproduce the target. :class:`PairStream` reads the shards with ``webdataset`` (any ``s3://``,
``gs://`` or local URL it accepts), groups each clip's frames (the writer keeps a clip's frames
together in one shard), and draws source/target pairs whose frame gap lies in ``[min_gap, max_gap]``.

Distribution: readers = Ray Train ranks x DataLoader workers. With at least as many shards as
readers, each reader gets its own shards; with fewer (the embedded profile), every reader reads all
shards and keeps its own clips. Held-out clips (``facex_data.layout.holdout_clips``) are skipped.

Determinism and resume: the stream is a pure function of (seed, epoch, reader); an epoch shuffles
shard order, clips within a shuffle buffer and the pairs, with ``random.Random`` seeded from those.
``start_epoch``/``skip`` resume mid-epoch: skipped pairs are drawn but not decoded, so resuming costs
reading, not decoding, the samples already trained on.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from facex_data import schema
from facex_data.layout import complete_shards
from facex_data.shards import decode_arrays, iter_clips
from facex_model import features

POSITION = "__position__"
_DECODED = "__inputs__"  # a kept raw frame's decoded model inputs (never a bytes member: not counted as shard bytes)
_KEPT = "__kept__"  # marks the raw frames of a shard held in memory: only theirs are worth decoding once


@dataclass(frozen=True)
class PairConfig:
    resolution: int = 64
    min_gap: int = 1  # frames (video frame indices) between source and target, at least
    max_gap: int = 0  # at most (0 = any)
    pairs_per_clip: int = 4  # pairs drawn from a clip each time it comes up in an epoch
    clip_buffer: int = 64  # clips shuffled together
    seed: int = 0
    with_reference: bool = False  # also a third frame (edit training): another frame of the same clip
    cache_mb: int = 512  # keep a reader's raw shard bytes in memory across epochs when they fit (0 = always re-read)
    decoded_cache_mb: float = 256  # and, of those kept shards' frames, the decoded model inputs (0 = decode every time)


def shard_urls(shards: str | Path | Sequence[str]) -> list[str]:
    """Complete shard paths of a folder (those with a stats marker), or a list given as is."""
    if isinstance(shards, (str, Path)) and not str(shards).endswith(".tar"):
        return complete_shards(Path(shards))
    return [str(shards)] if isinstance(shards, (str, Path)) else [str(s) for s in shards]


class PairStream(IterableDataset):
    """An endless, seeded stream of ``{"source": inputs, "target": inputs[, "reference": inputs]}`` pairs."""

    def __init__(
        self,
        shards: str | Path | Sequence[str],
        config: PairConfig,
        holdout: set[str] | frozenset[str] = frozenset(),
        rank: int = 0,
        world_size: int = 1,
        start_epoch: int = 0,
        skip: int = 0,
        include: set[str] | frozenset[str] | None = None,
    ) -> None:
        self.urls = shard_urls(shards)
        self.config = config
        self.holdout = frozenset(holdout)
        self.include = None if include is None else frozenset(include)  # only these clips (evaluation)
        self.rank, self.world_size = rank, world_size
        self.start_epoch, self.skip = start_epoch, skip
        self._cache: dict[str, list[tuple[str, list[dict]]]] = {}
        self._cached_bytes = 0
        self._decoded_bytes = 0

    def _reader(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        return self.rank * workers + worker, self.world_size * workers

    def epoch_pairs(self, epoch: int) -> Iterator[tuple[str, dict, dict, dict | None]]:
        """Raw (undecoded) pairs of one epoch for this reader: (clip_id, source, target, reference)."""
        reader, readers = self._reader()
        cfg = self.config
        rng = random.Random(f"{cfg.seed}/{epoch}/{reader}")
        by_shard = len(self.urls) >= readers
        urls = self.urls[reader::readers] if by_shard else list(self.urls)
        rng.shuffle(urls)
        clip_index = 0
        buffer: list[tuple[str, list[dict]]] = []

        def drain(limit: int) -> Iterator[tuple[str, dict, dict, dict | None]]:
            while len(buffer) > limit:
                clip_id, frames = buffer.pop(rng.randrange(len(buffer)))
                yield from self._pairs(rng, clip_id, frames)

        for url in urls:
            for clip_id, frames in self._clips(url):
                mine = by_shard or clip_index % readers == reader
                clip_index += 1
                if not mine or clip_id in self.holdout or (self.include is not None and clip_id not in self.include):
                    continue
                buffer.append((clip_id, frames))
                yield from drain(cfg.clip_buffer)
        yield from drain(0)

    def _clips(self, url: str) -> Iterator[tuple[str, list[dict]]]:
        """A shard's clips, from memory when an earlier epoch read all of it and it fit in ``cache_mb``.

        Small datasets (the embedded profile, a specialist's finetuning set) then cost one tar read per
        run instead of one per epoch; large ones stream as before. Either way the stream is the same.
        """
        if url in self._cache:
            yield from self._cache[url]
            return
        room = self.config.cache_mb * 2**20 - self._cached_bytes
        kept: list[tuple[str, list[dict]]] | None = [] if room > 0 else None
        size = 0
        for clip_id, frames in iter_clips(url):
            for raw in frames:
                raw["__frame__"] = int(json.loads(raw[schema.META])["frame_index"])
            if kept is not None:
                size += sum(len(v) for frame in frames for v in frame.values() if isinstance(v, bytes))
                if size <= room:
                    kept.append((clip_id, frames))
                else:
                    kept = None  # does not fit: stream this shard every epoch
            yield clip_id, frames
        if kept is not None:
            for _clip_id, frames in kept:
                for raw in frames:
                    raw[_KEPT] = True
            self._cache[url] = kept
            self._cached_bytes += size

    def _pairs(self, rng: random.Random, clip_id: str, frames: list[dict]):
        cfg = self.config
        candidates = [
            (i, j)
            for i, a in enumerate(frames)
            for j, b in enumerate(frames)
            if abs(a["__frame__"] - b["__frame__"]) >= cfg.min_gap
            and (cfg.max_gap <= 0 or abs(a["__frame__"] - b["__frame__"]) <= cfg.max_gap)
        ]
        if not candidates:
            return
        for _ in range(cfg.pairs_per_clip):
            i, j = candidates[rng.randrange(len(candidates))]
            ref = None
            if cfg.with_reference:
                ref = frames[rng.randrange(len(frames))]
            yield clip_id, frames[i], frames[j], ref

    def __iter__(self) -> Iterator[dict]:
        epoch = self.start_epoch
        empty_epochs = 0
        while True:
            index = -1
            for index, (_clip, src, tgt, ref) in enumerate(self.epoch_pairs(epoch)):
                if epoch == self.start_epoch and index < self.skip:
                    continue
                item = {"source": self._decode(src), "target": self._decode(tgt), POSITION: (epoch, index)}
                if ref is not None:
                    item["reference"] = self._decode(ref)
                yield item
            empty_epochs = empty_epochs + 1 if index < 0 else 0
            if empty_epochs >= 2:
                raise RuntimeError(
                    f"no training pairs for reader {self._reader()[0]} from {len(self.urls)} shard(s): every "
                    f"clip is held out, has no two frames {self.config.min_gap}+ frames apart, or there are more "
                    "readers (workers x DataLoader workers) than clips; extract more frames/clips or use fewer workers"
                )
            epoch += 1

    def _decode(self, raw: dict) -> dict[str, torch.Tensor]:
        """The frame's model inputs. A frame of a shard kept in memory is decoded once while its inputs fit in
        ``decoded_cache_mb`` (decoding took 20 s of the demo generalist's 362 s of steps; 4.5 s so): the inputs handed
        out are then the same tensors each time, which collation copies and nothing writes to."""
        inputs = raw.get(_DECODED)
        if inputs is not None:
            return inputs
        inputs = features.sample_inputs(decode_arrays(raw), self.config.resolution)
        if raw.get(_KEPT):
            size = sum(t.numel() * t.element_size() for t in inputs.values())
            if self._decoded_bytes + size <= self.config.decoded_cache_mb * 2**20:
                raw[_DECODED] = inputs
                self._decoded_bytes += size
        return inputs

    def pairs_per_epoch(self) -> int:
        """How many pairs one epoch of this reader yields (read, not decoded)."""
        return sum(1 for _ in self.epoch_pairs(0))


@dataclass(frozen=True)
class DataPosition:
    """Where a reader stands: the last pair it handed out. Resuming after it continues the identical stream."""

    epoch: int = 0
    index: int = -1  # index of the last consumed pair within `epoch` (-1: nothing consumed yet)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def collate_pairs(items: list[dict]) -> dict:
    """Pairs -> the model's batch ({f"{side}_{name}": tensor}) plus ``POSITION``: the last pair's DataPosition."""
    batch = features.collate_sides([{k: v for k, v in item.items() if k != POSITION} for item in items])
    epoch, index = max(item[POSITION] for item in items)
    batch[POSITION] = DataPosition(epoch, index)
    return batch


def pair_loader(
    shards: str | Path | Sequence[str],
    config: PairConfig,
    batch_size: int,
    holdout: set[str] | frozenset[str] = frozenset(),
    rank: int = 0,
    world_size: int = 1,
    position: DataPosition | None = None,
    prefetch: bool = False,
) -> DataLoader:
    """A DataLoader of pair batches for one rank, starting right after `position` (None: the beginning).

    One reader per rank keeps the resume position exact. ``prefetch`` moves that reader into one
    DataLoader worker process (spawned, a few batches ahead), so reading and JPEG decoding overlap
    the training step; the stream is the same either way.
    """
    position = position or DataPosition()
    dataset = PairStream(shards, config, holdout, rank, world_size, start_epoch=position.epoch, skip=position.index + 1)
    if not prefetch:
        return DataLoader(dataset, batch_size=batch_size, num_workers=0, collate_fn=collate_pairs)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=1,
        collate_fn=collate_pairs,
        prefetch_factor=4,
        multiprocessing_context="spawn",  # a fork of a Ray worker (threads, gRPC) is not safe
        persistent_workers=False,
    )
