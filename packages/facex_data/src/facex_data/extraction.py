"""Extraction: clips -> decoded frames -> the extractor backend -> WebDataset shards.

Two runners share every step but the scheduling: ``ray`` (decode in Ray tasks, extractors in a pool
of restartable actors, bounded in-flight batches) and ``local`` (one process, a plain loop; the
benchmark's baseline). Complete shards (stats file present) are skipped, incomplete ones redone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facex_data import schema
from facex_data.config import ExtractConfig
from facex_data.decode import ClipReader, DecodeError, VideoInfo
from facex_data.extractors import ExtractorSet, FaceFeatures, build_extractors
from facex_data.layout import SHARD_GLOB
from facex_data.manifest import Clip, ClipManifest, FrameSelection, ShardPlan
from facex_data.shards import (
    ShardWriter,
    append_run_log,
    encode_jpg,
    encode_json,
    encode_npy,
    encode_png,
    write_ledger,
)


@dataclass
class ChunkResult:
    samples: list[dict]
    no_face: int
    multi_face: int


class FrameExtractor:
    """Runs an ExtractorSet on decoded frames and encodes shard samples (one per frame with a face)."""

    def __init__(self, cfg: ExtractConfig, weights_dir: Path | None = None) -> None:
        import cv2

        cv2.setNumThreads(1)  # parallelism comes from actors; OpenCV threads would oversubscribe the cores
        self.cfg = cfg
        self.extractors: ExtractorSet = build_extractors(cfg.extractors, cfg.extractor_options(weights_dir))
        self.description = self.extractors.describe()
        self.latents = None
        if cfg.latents_vae is not None:
            from facex_data.latents import LatentEncoder

            self.latents = LatentEncoder(cfg.latents_vae, cfg.latents_resolution, cfg.device)

    def ready(self) -> bool:
        return True

    def __call__(self, clip: Clip, video: VideoInfo, indices: list[int], frames: np.ndarray) -> ChunkResult:
        features = self.extractors.features(frames)
        samples = [self.encode(clip, video, idx, f) for idx, f in zip(indices, features) if f is not None]
        if self.latents is not None and samples:
            for sample, latent in zip(samples, self.latents([s[schema.JPG] for s in samples])):
                sample[schema.LATENT] = encode_npy(latent)  # of the stored JPEG, as training decodes it
        multi = sum(1 for f in features if f is not None and f.detection.n_faces > 1)
        return ChunkResult(samples, sum(1 for f in features if f is None), multi)

    def encode(self, clip: Clip, video: VideoInfo, frame_index: int, f: FaceFeatures) -> dict:
        meta = {
            "clip_id": clip.clip_id,
            "frame_index": frame_index,
            "fps": round(video.fps, 4),
            "time_sec": round(frame_index / video.fps, 4) if video.fps > 0 else None,
            "frame_size": [video.width, video.height],
            "bbox": list(f.detection.bbox),
            "n_faces": f.detection.n_faces,
            "align_transform": np.round(f.detection.transform, 6).tolist(),
            "crop_size": self.cfg.crop_size,
            "extractors": self.description,
            "attributes": clip.info.get("attributes"),
            "ytb_id": clip.info.get("ytb_id"),
            "schema_version": schema.SCHEMA_VERSION,
            **({"latents": self.latents.description} if self.latents is not None else {}),
        }
        return {
            "__key__": schema.sample_key(clip.clip_id, frame_index),
            schema.JPG: encode_jpg(f.detection.crop, self.cfg.jpeg_quality),
            schema.PARSING: encode_png(f.parsing),
            schema.IDENTITY: encode_npy(f.identity),
            schema.TDMM: encode_npy(f.tdmm),
            schema.GAZE: encode_npy(f.gaze),
            schema.LANDMARKS: encode_npy(f.detection.landmarks),
            schema.META: encode_json(meta),
            **({schema.IDMAP: encode_npy(f.idmap)} if getattr(f, "idmap", None) is not None else {}),
        }


def plan_clip(reader: ClipReader, policy: FrameSelection) -> tuple[VideoInfo, list[int]]:
    """Probe a clip and choose its frames; DecodeError with the reason if it cannot be used."""
    video = reader.info()
    indices = policy.indices(video.n_frames, video.fps)
    if not indices:
        raise DecodeError(
            f"{reader.path}: clip has {video.n_frames} frames, shorter than the sampling window "
            f"(extract.frames.min_clip_frames = {policy.min_clip_frames}); skipped"
        )
    return video, indices


class ClipDecoder:
    """A decoder process for the Ray runner: one clip at a time, its reader kept open between batches.

    It runs as a restartable actor so that a clip that hangs or crashes decord costs one actor
    restart (the driver kills it on timeout), never the job.
    """

    def __init__(self) -> None:
        self.reader: ClipReader | None = None

    def ready(self) -> bool:
        return True

    def probe(self, path: Path, policy: FrameSelection) -> tuple[VideoInfo, list[int]]:
        self.reader = None
        self.reader = ClipReader(path)
        return plan_clip(self.reader, policy)

    def decode(self, path: Path, indices: list[int]) -> np.ndarray:
        if self.reader is None or self.reader.path != Path(path):
            self.reader = ClipReader(path)
        return self.reader.frames(indices)


# glibc settings for decoder processes. In a Ray worker (many threads) the decoder's frame-sized buffers
# fragment the heap and its private memory creeps up clip after clip (about 80 -> 220 MiB over 24 clips
# of 512 px in one actor); served by mmap and trimmed at once, it stays flat (about 72 MiB).
DECODER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def chunks(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i:i + size] for i in range(0, len(indices), size)]


@dataclass
class ClipState:
    """A clip in flight: its chunks' results as they arrive, or the reason it was skipped."""

    clip: Clip
    shard: str
    video: VideoInfo | None = None
    n_chunks: int = -1
    done: dict[int, ChunkResult] = field(default_factory=dict)
    reason: str | None = None
    settled: bool = False

    @property
    def finished(self) -> bool:
        return self.reason is not None or (self.n_chunks >= 0 and len(self.done) == self.n_chunks)

    def record(self) -> dict:
        rec: dict = {"clip_id": self.clip.clip_id, "file": self.clip.path.name}
        if self.video is not None:
            rec.update(n_frames=self.video.n_frames, fps=round(self.video.fps, 4),
                       size=[self.video.width, self.video.height])
        results = list(self.done.values())
        samples = sum(len(r.samples) for r in results)
        no_face = sum(r.no_face for r in results)
        rec.update(sampled=samples + no_face, no_face_frames=no_face,
                   multi_face_frames=sum(r.multi_face for r in results))
        if self.reason is None and samples == 0:
            self.reason = (f"{self.clip.path}: no face found in any of the {no_face} sampled frames "
                           "(no human face, or faces too small: raise extract.detector_upsample)")
        if self.reason is not None:
            rec.update(status="skipped", frames=0, reason=self.reason)
        else:
            rec.update(status="written", frames=samples)
            if rec["multi_face_frames"]:
                rec["note"] = f"{rec['multi_face_frames']} frames showed several faces; the largest was kept"
        return rec

    def samples(self) -> list[dict]:
        if self.reason is not None:
            return []
        return [s for i in sorted(self.done) for s in self.done[i].samples]


@dataclass
class RunSummary:
    shards_total: int
    shards_skipped_complete: int
    shards_written: int
    clips_written: int
    clips_skipped: int
    samples: int
    seconds: float
    frames_processed: int
    ledger: dict

    @property
    def frames_per_second(self) -> float:
        return self.frames_processed / self.seconds if self.seconds > 0 else 0.0

    def table(self) -> str:
        rows = [
            ("shards", f"{self.shards_total} ({self.shards_written} written, "
                       f"{self.shards_skipped_complete} already complete)"),
            ("clips written", str(self.clips_written)),
            ("clips skipped", str(self.clips_skipped)),
            ("samples (frames with a face)", str(self.samples)),
            ("frames processed this run", str(self.frames_processed)),
            ("wall time", f"{self.seconds:.1f} s"),
            ("throughput", f"{self.frames_per_second:.2f} frames/s"),
        ]
        reasons: dict[str, int] = {}
        for c in self.ledger["clips"]:
            if c["status"] == "skipped":
                reasons[c["reason"].split(": ", 1)[-1][:70]] = reasons.get(c["reason"].split(": ", 1)[-1][:70], 0) + 1
        rows += [(f"  skipped: {r}", str(n)) for r, n in sorted(reasons.items())]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


class _Progress:
    def __init__(self, total_clips: int, enabled: bool) -> None:
        self.bar = tqdm(total=total_clips, unit="clip", desc="extract", disable=not enabled, dynamic_ncols=True)
        self.frames = 0
        self.start = time.monotonic()

    def clip_done(self) -> None:
        self.bar.update(1)

    def frames_done(self, n: int) -> None:
        self.frames += n
        rate = self.frames / max(time.monotonic() - self.start, 1e-6)
        self.bar.set_postfix(frames=self.frames, fps=f"{rate:.1f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


class _ShardAssembler:
    """Collects finished clips per shard and writes each shard once all its clips are in."""

    def __init__(self, writer: ShardWriter, plans: list[ShardPlan]) -> None:
        self.writer = writer
        self.waiting = {p.name: {c.clip_id for c in p.clips} for p in plans}
        self.states: dict[str, list[ClipState]] = {p.name: [] for p in plans}
        self.stats: list[dict] = []

    def add(self, state: ClipState) -> None:
        self.states[state.shard].append(state)
        self.waiting[state.shard].discard(state.clip.clip_id)
        if not self.waiting[state.shard]:
            states = self.states.pop(state.shard)
            records = [s.record() for s in states]
            samples = [x for s in states for x in s.samples()]
            self.stats.append(self.writer.write(state.shard, samples, records))


def _prepare(cfg: ExtractConfig) -> tuple[ShardWriter, list[ShardPlan], list[ShardPlan], list[dict]]:
    manifest = ClipManifest.scan(cfg.input_dir)
    writer = ShardWriter(cfg.out_dir)
    plans = manifest.shards(cfg.clips_per_shard)
    expected = {f"shard-{p.index:06d}" for p in plans}
    for stale in cfg.out_dir.glob(SHARD_GLOB):  # shards of an earlier, larger input
        if stale.name.removesuffix(".tar") not in expected:
            writer.discard(stale.name.removesuffix(".tar"))
    done_stats, todo = [], []
    for plan in plans:
        if writer.is_complete(plan.name):
            done_stats.append(writer.read_stats(plan.name))
        else:
            writer.discard(plan.name)
            todo.append(plan)
    return writer, plans, todo, done_stats


def _finish(cfg: ExtractConfig, plans: list[ShardPlan], todo: list[ShardPlan], done_stats: list[dict],
            assembler: _ShardAssembler, start: float, frames: int) -> RunSummary:
    all_stats = sorted(done_stats + assembler.stats, key=lambda s: s["shard"])
    seconds = time.monotonic() - start
    # ledger.json holds only what the shards depend on, so an identical re-run leaves the folder (and its
    # DVC hash) unchanged; this run's own facts are appended to runs.jsonl (which .dvcignore excludes)
    ledger = write_ledger(cfg.out_dir, all_stats, {"runner": cfg.runner, "extractors": cfg.extractors})
    this_run = {
        "input_dir": str(cfg.input_dir), "shards_written_this_run": [s["shard"] for s in assembler.stats],
        "frames_processed_this_run": frames, "seconds": round(seconds, 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    append_run_log(cfg.out_dir, {**ledger["run"], **this_run})
    ledger["run"].update(this_run)
    totals = ledger["totals"]
    return RunSummary(len(plans), len(plans) - len(todo), len(assembler.stats), totals["clips_written"],
                      totals["clips_skipped"], totals["samples"], seconds, frames, ledger)


def run_local(cfg: ExtractConfig, weights_dir: Path | None = None) -> RunSummary:
    """The whole extraction in this process, one clip after another (no Ray, no decoder isolation)."""
    start = time.monotonic()
    writer, plans, todo, done_stats = _prepare(cfg)
    assembler = _ShardAssembler(writer, todo)
    extractor = FrameExtractor(cfg, weights_dir) if todo else None
    progress = _Progress(sum(len(p.clips) for p in todo), cfg.progress)
    for plan in todo:
        for clip in plan.clips:
            state = ClipState(clip, plan.name)
            try:
                reader = ClipReader(clip.path)
                state.video, indices = plan_clip(reader, cfg.frames)
                parts = chunks(indices, cfg.batch_size)
                state.n_chunks = len(parts)
                for i, part in enumerate(parts):
                    state.done[i] = extractor(clip, state.video, part, reader.frames(part))
                    progress.frames_done(len(part))
            except DecodeError as err:
                state.reason = str(err)
            assembler.add(state)
            progress.clip_done()
    progress.close()
    return _finish(cfg, plans, todo, done_stats, assembler, start, progress.frames)


def run_extraction(cfg: ExtractConfig, weights_dir: Path | None = None) -> RunSummary:
    """Extract ``cfg.input_dir`` into shards in ``cfg.out_dir`` with the configured runner.

    ``weights_dir``: where the paper backend's weights are (the stage passes ``weights.dir``; None:
    ``$FACEX_WEIGHTS_DIR``, else ``./weights``, see :func:`facex_data.weights.resolve_weights_dir`)."""
    from facex_data.weights import paper_extract_keys, require_weights, resolve_weights_dir

    weights_dir = resolve_weights_dir(weights_dir)
    if cfg.extractors == "paper":  # a missing weight fails here, before any clip is decoded
        require_weights(weights_dir, paper_extract_keys(cfg.detector), "extract")
    if cfg.runner == "local":
        return run_local(cfg, weights_dir)
    try:
        import ray
    except ModuleNotFoundError as err:
        raise ValueError(
            "extract.runner is ray but Ray is not installed: pip install 'facex-data[ray]', or set "
            "extract.runner: local (one process)"
        ) from err

    started_here = not ray.is_initialized()
    if started_here:
        # on a cluster (ray job submit sets RAY_ADDRESS) this connects; otherwise it starts a local Ray, also where a
        # `ray start` cluster runs on this machine (a plain ray.init() would join that one)
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=cfg.ray_num_cpus or None, include_dashboard=False, log_to_driver=False)
    try:
        return _run_ray(cfg, weights_dir)
    finally:
        if started_here:
            ray.shutdown()


def _reason(err: Exception, clip: Clip, what: str) -> str:
    import ray.exceptions as rex

    if isinstance(err, rex.RayTaskError) and isinstance(err.cause, DecodeError):
        return str(err.cause)
    if isinstance(err, DecodeError):
        return str(err)
    if isinstance(err, (rex.WorkerCrashedError, rex.NodeDiedError, rex.RayActorError)):
        return f"{clip.path}: the {what} process crashed on this clip (corrupt file?); re-download or remove it"
    if isinstance(err, rex.TaskCancelledError):
        return f"{clip.path}: {what} was cancelled"
    text = str(getattr(err, "cause", err)).strip().splitlines()
    return f"{clip.path}: {what} failed: {text[-1] if text else type(err).__name__}"


def _run_ray(cfg: ExtractConfig, weights_dir: Path) -> RunSummary:
    import ray

    start = time.monotonic()
    writer, plans, todo, done_stats = _prepare(cfg)
    assembler = _ShardAssembler(writer, todo)
    queue = [ClipState(c, p.name) for p in todo for c in p.clips]
    progress = _Progress(len(queue), cfg.progress)
    if not queue:
        progress.close()
        return _finish(cfg, plans, todo, done_stats, assembler, start, 0)

    # long-lived actors, not tasks: on a small node Ray kills idle task workers and restarting them costs CPU
    decoder_cls = ray.remote(
        num_cpus=cfg.decode_num_cpus, max_restarts=-1, max_task_retries=0, runtime_env={"env_vars": DECODER_MALLOC_ENV}
    )(ClipDecoder)
    extractor_cls = ray.remote(
        num_cpus=cfg.actor_num_cpus, num_gpus=cfg.actor_num_gpus, max_restarts=-1, max_task_retries=-1
    )(FrameExtractor)
    decoders = [decoder_cls.remote() for _ in range(cfg.num_decoders)]
    actors = [extractor_cls.remote(cfg, weights_dir) for _ in range(cfg.num_actors)]
    load = dict.fromkeys(range(len(actors)), 0)

    current: list[ClipState | None] = [None] * len(decoders)  # the clip each decoder works on
    pending: list[list] = [[] for _ in decoders]  # its (chunk index, indices) not decoded yet
    calls: dict = {}  # decoder call ref -> (decoder index, "probe" | chunk index, indices, submitted at)
    extracts: dict = {}  # extractor call ref -> (state, chunk index, actor index, n frames)
    ready_frames: list = []  # (state, chunk index, indices, frames ref) waiting for an extractor
    busy: set[int] = set()  # decoders with a call in flight (never more than one each)
    served = [0] * len(decoders)  # clips each decoder has opened

    def start_decoder(d: int) -> None:
        # the decode timeout runs from the first call after "ready": actor start-up is not a hang
        calls[decoders[d].ready.remote()] = (d, "ready", [], time.monotonic())
        busy.add(d)

    def replace_decoder(d: int) -> None:
        # a fresh actor, not a restart: a call sent right after ray.kill could still reach the dying one
        ray.kill(decoders[d], no_restart=True)
        decoders[d] = decoder_cls.remote()
        served[d] = 0
        start_decoder(d)

    for d in range(len(decoders)):
        start_decoder(d)
    next_clip = 0

    def settle(state: ClipState) -> None:
        if state.finished and not state.settled:
            state.settled = True
            assembler.add(state)
            progress.clip_done()

    def fail(d: int, reason: str) -> None:
        state = current[d]
        current[d], pending[d] = None, []
        if state is not None and state.reason is None:
            state.reason = reason
            settle(state)

    def batches_in_flight() -> int:
        return sum(1 for v in calls.values() if v[1] not in ("probe", "ready")) + len(extracts) + len(ready_frames)

    try:
        while next_clip < len(queue) or any(v[1] != "ready" for v in calls.values()) or extracts or ready_frames \
                or any(pending):
            for d in range(len(decoders)):
                if d in busy:
                    continue
                if pending[d]:
                    if batches_in_flight() < cfg.max_inflight_batches:
                        i, part = pending[d].pop(0)
                        ref = decoders[d].decode.remote(current[d].clip.path, part)
                        calls[ref] = (d, i, part, time.monotonic())
                        busy.add(d)
                elif next_clip < len(queue) and batches_in_flight() < cfg.max_inflight_batches:
                    if served[d] >= cfg.decoder_max_clips:
                        # the fresh decoder takes the next clip once it answers "ready": one call in flight
                        # per decoder, so a finished "ready" never marks a decoder with a probe running as free
                        replace_decoder(d)
                        continue
                    served[d] += 1
                    current[d] = queue[next_clip]
                    next_clip += 1
                    calls[decoders[d].probe.remote(current[d].clip.path, cfg.frames)] = (d, "probe", [],
                                                                                            time.monotonic())
                    busy.add(d)
            while ready_frames and min(load.values()) < 2:
                state, i, idx, ref = ready_frames.pop(0)
                a = min(load, key=load.get)
                load[a] += 1
                extracts[actors[a].__call__.remote(state.clip, state.video, idx, ref)] = (state, i, a, len(idx))
            refs = list(calls) + list(extracts)
            if not refs:  # nothing in flight and nothing could be sent: a scheduling bug, not a slow clip
                waiting = [s.clip.clip_id for s in queue[:next_clip] if not s.settled]
                raise RuntimeError(f"extraction stalled with clips unfinished ({', '.join(waiting[:5])}); "
                                   "please report this with the ledger")
            done, _ = ray.wait(refs, num_returns=1, timeout=1.0)
            for ref in done:
                if ref in calls:
                    d, what, part, _ = calls.pop(ref)
                    busy.discard(d)
                    state = current[d]
                    try:
                        result = ray.get(ref)
                    except Exception as err:
                        if state is not None:
                            fail(d, _reason(err, state.clip, "decoder"))
                        if not isinstance(err, ray.exceptions.RayTaskError):
                            replace_decoder(d)  # the decoder process died (a crash on this clip)
                        continue
                    if what == "ready":
                        continue
                    if what == "probe":
                        state.video, indices = result
                        parts = chunks(indices, cfg.batch_size)
                        state.n_chunks = len(parts)
                        pending[d] = list(enumerate(parts))
                    else:
                        ready_frames.append((state, what, part, ref))
                    if what != "probe" and not pending[d]:
                        current[d] = None  # all its batches decoded: the decoder takes the next clip
                else:
                    state, i, a, n = extracts.pop(ref)
                    load[a] -= 1
                    try:
                        result = ray.get(ref)
                    except Exception as err:
                        if state.reason is None:
                            state.reason = _reason(err, state.clip, "extractor")
                            settle(state)
                        continue
                    progress.frames_done(n)
                    if state.reason is None:
                        state.done[i] = result
                        settle(state)
            now = time.monotonic()
            for ref, (d, what, _, started) in list(calls.items()):
                if what != "ready" and now - started > cfg.decode_timeout_s:
                    del calls[ref]
                    busy.discard(d)
                    replace_decoder(d)  # the hung clip is given up
                    fail(d, f"{current[d].clip.path}: decoder hung (no result in {cfg.decode_timeout_s:.0f} s); "
                            "the file is probably corrupt: re-download or remove it")
    finally:
        progress.close()
        for actor in actors + decoders:
            ray.kill(actor)
    return _finish(cfg, plans, todo, done_stats, assembler, start, progress.frames)
