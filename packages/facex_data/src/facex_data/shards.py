"""WebDataset shards: a deterministic writer with completion markers, the run ledger, and the one reader.

A shard is ``shard-%06d.tar`` (written to a temp name, then renamed) plus ``shard-%06d.stats.json``
written last: the stats file's presence means the shard is complete. Tar members carry fixed
mtime/uid/gid/mode and samples are sorted by key, so the same samples give the same bytes.
``ledger.json`` lists every input clip of the run: written with its frame count, or skipped with why;
``runs.jsonl`` gets a line per run (its timings and the shards it wrote). Folder layout: :mod:`facex_data.layout`.

Reading: :func:`iter_samples` (one shard's raw samples in file order, any URL webdataset opens:
a path, ``s3://``, ``gs://``, ``pipe:``) and :func:`iter_clips` (the same, grouped by clip) are the
reader that training, evaluation and the tests all use; :func:`decode_arrays` decodes one sample.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from facex_data import schema
from facex_data.layout import LEDGER, RUN_LOG, shard_stats, shard_tar


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


@functools.lru_cache(maxsize=256)
def _npy_header(prefix: bytes) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """Parse an .npy header (numpy's own parser, which evaluates it as a literal: slow, hence the cache)."""
    f = io.BytesIO(prefix)
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed in shards")
    return dtype, shape, fortran, f.tell()


def decode_npy(data: bytes) -> np.ndarray:
    """``np.load`` of one .npy member, with the header parse cached (shards repeat a few headers)."""
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not an .npy member (bad magic)")
    length = int.from_bytes(data[8:10], "little") + 10 if data[6] == 1 else int.from_bytes(data[8:12], "little") + 12
    dtype, shape, fortran, offset = _npy_header(bytes(data[:length]))
    count = int(np.prod(shape, dtype=np.int64))
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran else "C").copy()


def encode_jpg(rgb: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def encode_png(mask: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", mask)
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


def encode_json(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: a temporary file beside it, flushed to disk, then renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ShardWriter:
    """Writes complete shards into ``out_dir`` and tells which shards are already complete."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def is_complete(self, name: str) -> bool:
        return shard_stats(self.out_dir, name).is_file() and shard_tar(self.out_dir, name).is_file()

    def read_stats(self, name: str) -> dict:
        return json.loads(shard_stats(self.out_dir, name).read_text())

    def discard(self, name: str) -> None:
        """Remove what an interrupted run left of a shard (it is redone from scratch)."""
        for path in (shard_stats(self.out_dir, name), shard_tar(self.out_dir, name)):
            path.unlink(missing_ok=True)
        for tmp in self.out_dir.glob(f".{name}.*tmp"):
            tmp.unlink()

    def write(self, name: str, samples: Iterable[dict[str, bytes | str]], clips: list[dict]) -> dict:
        """Write ``name``.tar from samples (each with ``__key__``), then its stats file; returns the stats."""
        ordered = sorted(samples, key=lambda s: s["__key__"])
        keys = [s["__key__"] for s in ordered]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{name}: duplicate sample keys")
        tar_path = shard_tar(self.out_dir, name)
        tmp = tar_path.with_name(f".{tar_path.name}.tmp")
        digest = hashlib.sha256()
        with open(tmp, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for sample in ordered:
                    for ext in schema.SAMPLE_KEYS + tuple(k for k in schema.OPTIONAL_SAMPLE_KEYS if k in sample):
                        data = sample[ext]
                        info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                        info.size, info.mtime, info.mode = len(data), 0, 0o644
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        digest.update(tmp.read_bytes())
        os.replace(tmp, tar_path)
        stats = {
            "shard": name,
            "schema_version": schema.SCHEMA_VERSION,
            "samples": len(ordered),
            "bytes": tar_path.stat().st_size,
            "sha256": digest.hexdigest(),
            "clips": sorted(clips, key=lambda c: c["clip_id"]),
        }
        write_atomic(shard_stats(self.out_dir, name), (json.dumps(stats, indent=1, sort_keys=True) + "\n").encode())
        return stats


def append_run_log(out_dir: Path, entry: dict) -> None:
    """One line per extraction run in ``runs.jsonl`` (timings, shards written by that run)."""
    with open(Path(out_dir) / RUN_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


def write_ledger(out_dir: Path, shard_stats_list: list[dict], run: dict) -> dict:
    """``ledger.json``: every clip (written / skipped + reason), the shards and totals, and ``run``.

    It is rewritten whole by every run and must depend only on the input and the settings (no
    timings): the same extraction then leaves identical bytes. Per-run facts go to ``runs.jsonl``."""
    clips = [dict(c, shard=s["shard"]) for s in shard_stats_list for c in s["clips"]]
    clips.sort(key=lambda c: c["clip_id"])
    written = [c for c in clips if c["status"] == "written"]
    ledger = {
        "clips": clips,
        "shards": [{k: s[k] for k in ("shard", "samples", "bytes", "sha256")} for s in shard_stats_list],
        "totals": {
            "clips": len(clips),
            "clips_written": len(written),
            "clips_skipped": len(clips) - len(written),
            "samples": sum(c["frames"] for c in written),
            "shards": len(shard_stats_list),
        },
        "run": run,
    }
    write_atomic(Path(out_dir) / LEDGER, (json.dumps(ledger, indent=1, sort_keys=True) + "\n").encode())
    return ledger


def decode_arrays(sample: dict) -> dict:
    """Raw WebDataset sample (bytes per member) -> numpy: ``image`` uint8 (H,W,3) RGB, ``parsing`` uint8
    (H,W), ``id``/``tdmm``/``gaze``/``lmk`` float32, ``meta`` dict, ``__key__``; ``idmap`` float16
    (512, 8, 8) and ``latent`` float16 (2C, h, w) when the shard has them. The cheap form for loaders that resize
    next."""
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(sample[schema.JPG], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    parsing = cv2.imdecode(np.frombuffer(sample[schema.PARSING], np.uint8), cv2.IMREAD_UNCHANGED)

    def npy(key: str) -> np.ndarray:
        return decode_npy(sample[key])

    optional = {name: npy(key) for name, key in (("idmap", schema.IDMAP), ("latent", schema.LATENT)) if key in sample}
    return {
        **optional,
        "__key__": sample["__key__"],
        "image": rgb,
        "parsing": parsing,
        "id": npy(schema.IDENTITY),
        "tdmm": npy(schema.TDMM),
        "gaze": npy(schema.GAZE),
        "lmk": npy(schema.LANDMARKS),
        "meta": json.loads(sample[schema.META]),
    }


def iter_samples(url: str) -> Iterator[dict[str, bytes | str]]:
    """Raw samples of one shard (``__key__`` + one bytes value per member), in file order, read with
    webdataset so that every URL it opens works (local path, ``s3://``, ``gs://``, ``pipe:``)."""
    import webdataset as wds

    for sample in wds.WebDataset(str(url), shardshuffle=False, empty_check=False, nodesplitter=None,
                                 workersplitter=None):  # fmt: skip
        yield {k: v for k, v in sample.items() if k == "__key__" or not k.startswith("__")}  # no __url__ etc.


def iter_clips(url: str) -> Iterator[tuple[str, list[dict[str, bytes | str]]]]:
    """(clip_id, its raw samples in frame order) for each clip of one shard: the writer keeps a clip's
    frames together and in key order, so one pass groups them."""
    clip, frames = None, []
    for raw in iter_samples(url):
        meta = json.loads(raw[schema.META])
        if clip is not None and meta["clip_id"] != clip:
            yield clip, frames
            frames = []
        clip = meta["clip_id"]
        frames.append(raw)
    if clip is not None:
        yield clip, frames
