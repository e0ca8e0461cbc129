"""Run one benchmark protocol on one model: generate every pair through the inference pipeline users run, measure
each output the same way, and write the results in the paper's layout.

One measurement path for every protocol (paper §4 "Metrics"): the output frame is re-detected by the model's
extractor backend; pose / expression = L2 of its 3DMM angle / expression coefficients against the target's, gaze =
L2 of the gaze estimates, ID similarity = cosine of the *evaluation* identity model's embeddings of output and
source (configurable apart from the backend's, which trained the model), ID retrieval = top-k among the benchmark's
source identities, FID on the aligned face crops (output vs target, torchmetrics), SSIM / PSNR / RMSE on the same
crops for reconstruction, and LPIPS there where the weights dir holds its AlexNet (``facex_train.lpips``). An
output without a detectable face is a miss: it counts in the detection rate, fails retrieval, and adds no pose /
expression / gaze / ID value. Pairs that read a clip the model trained on (by clip id, the file name without its
extension, against the ``clips.trained_on`` list of the model's train_metrics.json) are counted and the table says
so: such a score is not a held-out one.

Resumable: each finished pair leaves ``rows/<pair>.json`` (written last, atomically), its output frame and its
embeddings; a rerun skips finished pairs and ends with the same metrics file.

    <out>/<protocol>/<model>/
        run.json          settings, model, pair-list hash (a rerun with other settings is refused)
        pairs.jsonl       the pinned pair list (first line: how it was drawn)
        pairs.csv         one row per pair
        metrics.json      the aggregate metrics and the protocol
        table.md          the paper's table layout: published rows, then ours
        grid.png          source | target | output for the first pairs
        outputs/, crops/, rows/, embeddings/   per-pair files (resume): output frame, output|target face crops,
                          the row, identity embeddings
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from facex_data.extractors import AlignedFaces, ExtractorSet, FaceFeatures
from facex_data.shards import write_atomic
from facex_data.weights import BY_KEY, weight_path
from facex_model.features import image_tensor, tdmm_parts
from facex_model.inputs import FaceXInputError, NoFaceError
from facex_model.mlflow_server import ServerUnreachableError, check_server
from facex_model.model import TRAIN_METRICS
from facex_model.pipeline import FaceXPipeline, image_grid, resolve_model
from facex_train.benchmark.datasets import FrameRef, LayoutError, read_frame
from facex_train.benchmark.protocols import (
    PairSettings,
    Protocol,
    build_pair_list,
    pair_list_bytes,
    published_tables,
    sha256,
)
from facex_train.metrics import (
    build_fid,
    id_retrieval,
    id_similarity,
    l2_distance,
    reconstruction_metrics,
    to_unit,
)

GRID_PAIRS = 8
LPIPS_BATCH = 32
PER_PAIR = ("rows", "outputs", "crops", "embeddings")  # per-pair files, kept across a resume
BACKEND_IDENTITY = "backend"
DLIB_IDENTITY = "dlib"


class BenchmarkError(Exception):
    """Something the user can fix (data, settings, model); the command prints it as one `error:` line."""


BATCH_SIZE = 8  # pairs per denoising batch unless told (`--batch-size`)


@dataclass(frozen=True)
class RunSettings:
    steps: int = 20
    cfg_scale: float = 3.0
    scheduler: str = "ddim"
    seed: int = 0  # pair i is generated with seed + i
    identity_model: str = BACKEND_IDENTITY  # "backend", "dlib" or an ArcFace/CosFace iresnet .pth/.onnx file
    fid_features: str = "inception"  # a folder under the weights dir holding the FID Inception, or "standin"
    watermark: bool = True  # outputs as users get them


class EvaluationIdentity:
    """The face-recognition model ID similarity and retrieval are measured with (L2-normalised embeddings).

    "backend": the extractor backend's own network, the one whose features trained the model (the report says
    so); "dlib": dlib's shipped ResNet descriptor; a file: an iresnet ArcFace / CosFace checkpoint (.pth in
    arcface_torch's keys, or .onnx), looked up as given or under the weights dir."""

    def __init__(self, spec: str, extractors: ExtractorSet, weights_dir: Path | None) -> None:
        options = extractors.options
        if spec == BACKEND_IDENTITY:
            self.net = extractors.identity
            self.name = f"backend {extractors.backend}: {self.net.name} (the training features' network)"
        elif spec == DLIB_IDENTITY:
            from facex_data.extractors.offline import DlibIdentity

            self.net = DlibIdentity(options)
            self.name = self.net.name
        else:
            from facex_data.extractors.nets import CheckpointError
            from facex_data.extractors.paper import ArcFaceIdentity

            path = Path(spec).expanduser()
            if not path.is_file() and weights_dir is not None and (Path(weights_dir) / spec).is_file():
                path = Path(weights_dir) / spec
            if not path.is_file():
                raise BenchmarkError(f"--id-model {spec}: no such file (looked as given and under {weights_dir}); "
                                     "give an iresnet .pth/.onnx, or 'backend' / 'dlib'")  # fmt: skip
            try:
                self.net = ArcFaceIdentity(options, path)
            except CheckpointError as err:
                raise BenchmarkError(f"--id-model {path}: {err}") from None
            self.name = f"iresnet {path.name} sha256 {next(iter(self.net.weights.values()))[:12]}"
        self.is_backend = spec == BACKEND_IDENTITY

    def __call__(self, faces: list[FaceFeatures]) -> np.ndarray:
        """(N, D) L2-normalised embeddings of detected faces (the backend's own, already computed, are reused)."""
        if self.is_backend:
            embedding = np.stack([np.asarray(f.identity, np.float32).ravel() for f in faces])
        else:
            embedding, _ = self.net(AlignedFaces.from_detections([f.detection for f in faces]))
        embedding = np.asarray(embedding, np.float32)
        return embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)


def aligned_crop(frame: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """The face crop a (2, 3) frame->crop similarity cuts out of a frame."""
    return cv2.warpAffine(frame, transform, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _tensor(crop: np.ndarray) -> torch.Tensor:
    return image_tensor(crop, crop.shape[0])[None]


def _one(metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: Any, b: Any) -> float:
    """A batched metric on one pair of vectors."""
    return float(metric(torch.as_tensor(np.asarray(a))[None], torch.as_tensor(np.asarray(b))[None])[0])


def _clip_id(ref: dict) -> str:
    """A pair side's clip id as extraction names clips: the file name without its extension."""
    return Path(FrameRef.from_json(ref).path).stem


def model_training_clips(folder: Path) -> frozenset[str] | None:
    """The clip ids a model folder's train_metrics.json says it learned from (None: the file records none)."""
    path = Path(folder) / TRAIN_METRICS
    clips = json.loads(path.read_text()).get("clips") if path.is_file() else None
    return None if clips is None else frozenset(clips.get("trained_on", []))


def _ref_text(ref: FrameRef) -> str:
    return f"{ref.path}#{ref.frame}" if ref.frame else ref.path


class BenchmarkRun:
    """One (protocol, model) run in `out_dir`."""

    def __init__(
        self,
        protocol: Protocol,
        roots: dict[str, Path],
        pipe: FaceXPipeline,
        model_name: str,
        out_dir: Path,
        settings: RunSettings,
        pair_settings: PairSettings,
        weights_dir: Path | None = None,
        overwrite: bool = False,
        published: dict[str, Any] | None = None,
        trained_on: frozenset[str] | None = None,
        pair_list: dict[str, Any] | None = None,
    ) -> None:
        """`trained_on`: the clip ids the model learned from (:func:`model_training_clips`; None: not recorded).
        `pair_list`: :func:`build_pair_list`'s answer for these roots and settings, if the caller has it already."""
        self.protocol, self.roots, self.pipe = protocol, roots, pipe
        self.trained_on = trained_on
        self.published = published if published is not None else published_tables()
        self.model_name, self.out_dir, self.settings = model_name, Path(out_dir), settings
        self.weights_dir = weights_dir
        self.pair_list = pair_list if pair_list is not None else _pair_list(protocol, roots, pair_settings)
        self.pair_bytes = pair_list_bytes(self.pair_list)
        self.training_pairs = {p["pair"] for p in self.pair_list["pairs"]
                               if {_clip_id(p["source"]), _clip_id(p["target"])} & (trained_on or set())}  # fmt: skip
        self.identity = EvaluationIdentity(settings.identity_model, pipe.extractors, weights_dir)
        self.crop_size = pipe.extractors.options.crop_size
        self.record = {
            "protocol": protocol.name, "protocol_version": protocol.version, "task": protocol.task,
            "model": model_name, "pair_list_sha256": sha256(self.pair_bytes), "settings": asdict(settings),
            "pairs": len(self.pair_list["pairs"]), "identity_model": self.identity.name,
            "extractors": pipe.model.config.extractors, "crop_size": self.crop_size,
        }  # fmt: skip
        self._prepare(overwrite)

    def _prepare(self, overwrite: bool) -> None:
        run_file = self.out_dir / "run.json"
        if run_file.is_file() and not overwrite:
            before = json.loads(run_file.read_text())
            changed = sorted(k for k in set(before) | set(self.record) if before.get(k) != self.record.get(k))
            if changed:
                raise BenchmarkError(
                    f"{self.out_dir} holds a run made with other {', '.join(changed)}: pass --overwrite to redo it, "
                    "or choose another --out"
                )
        elif overwrite and self.out_dir.exists():
            for sub in PER_PAIR:
                for f in (self.out_dir / sub).glob("*") if (self.out_dir / sub).is_dir() else []:
                    f.unlink()
        for sub in PER_PAIR:
            (self.out_dir / sub).mkdir(parents=True, exist_ok=True)
        write_atomic(self.out_dir / "pairs.jsonl", self.pair_bytes)
        write_atomic(run_file, (json.dumps(self.record, indent=2, sort_keys=True) + "\n").encode())

    # --- per pair -------------------------------------------------------------------------------------------------
    def _row_path(self, index: int) -> Path:
        return self.out_dir / "rows" / f"{index:06d}.json"

    def finished(self) -> set[int]:
        return {int(p.stem) for p in (self.out_dir / "rows").glob("*.json")}

    def run(
        self, progress: bool = True, on_pair: Callable[[int], None] | None = None, batch_size: int = BATCH_SIZE
    ) -> dict[str, Any]:
        """Every pair not yet done, `batch_size` pairs per denoising batch (outputs as with 1, up to float
        rounding, so a run may resume with another batch size) -> the summary."""
        if batch_size < 1:
            raise BenchmarkError(f"--batch-size must be at least 1, got {batch_size}")
        pairs = self.pair_list["pairs"]
        done = self.finished()
        todo = [p for p in pairs if p["pair"] not in done]
        with tqdm(total=len(pairs), initial=len(pairs) - len(todo), unit="pair", disable=not progress,
                  desc=f"{self.protocol.name} {self.model_name}") as bar:  # fmt: skip
            for first in range(0, len(todo), batch_size):
                chunk = todo[first : first + batch_size]
                self.run_pairs(chunk)
                bar.update(len(chunk))
                for pair in chunk if on_pair is not None else ():
                    on_pair(pair["pair"])
        return self.summarize()

    def run_pair(self, pair: dict) -> dict[str, Any]:
        return self.run_pairs([pair])[0]

    def run_pairs(self, pairs: list[dict]) -> list[dict[str, Any]]:
        """Generate and score `pairs` (one denoising batch); a pair whose input cannot be read or shows no face is
        recorded as such and the others go on. -> their rows, in order."""
        rows: dict[int, dict[str, Any]] = {}
        ready = []  # (index, row, source face, target face, target frame)
        for pair in pairs:
            index = pair["pair"]
            source_ref, target_ref = FrameRef.from_json(pair["source"]), FrameRef.from_json(pair["target"])
            row: dict[str, Any] = {"pair": index, "source": _ref_text(source_ref), "target": _ref_text(target_ref),
                                   "source_identity": source_ref.identity, "status": "ok"}  # fmt: skip
            try:
                source_frame, target_frame = read_frame(self.roots, source_ref), read_frame(self.roots, target_ref)
            except (LayoutError, FaceXInputError, RuntimeError) as err:
                rows[index] = self._finish(index, row | {"status": f"unreadable input: {err}"})
                continue
            try:
                source = self.pipe.detect(source_frame, f"source {row['source']}", 0)
                target = self.pipe.detect(target_frame, f"target {row['target']}", 0)
            except NoFaceError as err:
                rows[index] = self._finish(index, row | {"status": f"no face in input: {err}"})
                continue
            ready.append((index, row, source, target, target_frame))
        s = self.settings
        outs = self.pipe.generate_many(
            self.protocol.task, [(source, target) for _, _, source, target, _ in ready], steps=s.steps,
            cfg_scale=s.cfg_scale, scheduler=s.scheduler, seeds=[s.seed + index for index, *_ in ready],
        )  # fmt: skip
        for (index, row, source, target, target_frame), out in zip(ready, outs, strict=True):
            output = np.asarray(self.pipe.finish(out, s.watermark).image.convert("RGB"))
            Image.fromarray(output).save(self.out_dir / "outputs" / f"{index:06d}.png")
            rows[index] = self._finish(index, row | self.measure(index, output, source, target, target_frame))
        return [rows[p["pair"]] for p in pairs]

    def measure(self, index: int, output: np.ndarray, source: Any, target: Any, target_frame: np.ndarray) -> dict:
        backend = self.pipe.model.config.extractors
        found = self.pipe.extractors.features(output[None])[0]
        source_id = self.identity([source.features])[0]
        target_id = self.identity([target.features])[0]
        values: dict[str, Any] = {"face_detected": int(found is not None)}
        out_id = np.zeros(0, np.float32)
        if found is not None:
            out_id = self.identity([found])[0]
            o, t = tdmm_parts(found.tdmm, backend), tdmm_parts(target.features.tdmm, backend)
            values |= {
                "id_similarity": _one(id_similarity, out_id, source_id),
                "id_to_target": _one(id_similarity, out_id, target_id),
                "pose_l2": _one(l2_distance, o["angles"], t["angles"]),
                "expression_l2": _one(l2_distance, o["expression"], t["expression"]),
                "gaze_l2": _one(l2_distance, found.gaze, target.features.gaze),
            }
        transform = target.features.detection.transform
        crops = [aligned_crop(im, transform, self.crop_size) for im in (output, target_frame)]
        values |= {k: float(v[0]) for k, v in reconstruction_metrics(_tensor(crops[0]), _tensor(crops[1])).items()}
        # output | target face crops side by side: what FID reads at the end, without decoding the target again
        Image.fromarray(np.concatenate(crops, axis=1)).save(self.out_dir / "crops" / f"{index:06d}.png")
        np.savez(self.out_dir / "embeddings" / f"{index:06d}.npz", output=out_id, source=source_id, target=target_id)
        return values

    def _finish(self, index: int, row: dict[str, Any]) -> dict[str, Any]:
        write_atomic(self._row_path(index), (json.dumps(row, sort_keys=True) + "\n").encode())
        return row

    # --- aggregate ------------------------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(self._row_path(p["pair"]).read_text()) for p in self.pair_list["pairs"]
                if self._row_path(p["pair"]).is_file()]  # fmt: skip

    def summarize(self) -> dict[str, Any]:
        rows = self.rows()
        ok = [r for r in rows if r["status"] == "ok"]
        if not ok:
            raise BenchmarkError(f"{self.protocol.name}: no pair could be run (every input unreadable or faceless); "
                                 f"see {self.out_dir / 'pairs.csv'}")  # fmt: skip
        lpips, lpips_note = self._lpips(ok)
        rows = [r | {"lpips": lpips[r["pair"]]} if r["pair"] in lpips else r for r in rows]
        self._write_csv(rows)
        detected = [r for r in ok if r["face_detected"]]

        def mean(key: str, among: list[dict]) -> float | None:
            return float(np.mean([r[key] for r in among])) if among else None

        metrics: dict[str, Any] = {
            "pairs": len(rows), "evaluated": len(ok), "skipped_inputs": len(rows) - len(ok),
            "face_detection_rate": len(detected) / len(ok),
        }  # fmt: skip
        for key in ("id_similarity", "id_to_target", "pose_l2", "expression_l2", "gaze_l2"):
            metrics[key] = mean(key, detected)
        for key in ("ssim", "psnr", "rmse"):
            metrics[key] = mean(key, ok)
        if lpips_note is not None:
            metrics["lpips"] = float(np.mean(list(lpips.values()))) if lpips else None
        if self.trained_on is not None:
            metrics["pairs_from_training_clips"] = len(self.training_pairs & {r["pair"] for r in rows})
        metrics |= self._retrieval(ok)
        metrics |= self._fid(ok)
        result = {"protocol": self.record | {"description": self.protocol.description, "table": self.protocol.table,
                                             "built_from": self.pair_list["built_from"]},
                  "metrics": metrics, "held_out": self.held_out_note(metrics)}  # fmt: skip
        if lpips_note is not None:
            result["lpips"] = lpips_note
        (self.out_dir / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        (self.out_dir / "table.md").write_text(markdown_table(self.protocol, {self.model_name: metrics}, result,
                                                                 self.published))
        self._grid(ok)
        return result

    def held_out_note(self, metrics: dict[str, Any]) -> str:
        """Whether the score is a held-out one: how many pairs read a clip the model trained on."""
        if self.trained_on is None:
            return "held out: unknown (the model's train_metrics.json lists no training clips)"
        count = metrics.get("pairs_from_training_clips", 0)
        if count == 0:
            return f"held out: no pair reads one of the {len(self.trained_on)} clips the model trained on"
        return (f"NOT HELD OUT: {count} of {metrics['pairs']} pairs read clips the model trained on (its "
                "train_metrics.json, clips.trained_on): point --root at clips it did not train on (clips.held_out)")

    def _embeddings(self, index: int) -> dict[str, np.ndarray]:
        with np.load(self.out_dir / "embeddings" / f"{index:06d}.npz") as f:
            return {k: f[k] for k in f.files}

    def _retrieval(self, ok: list[dict]) -> dict[str, Any]:
        """Top-1 / top-5 among the benchmark's source identities (each the mean of its source embeddings)."""
        by_identity: dict[str, list[np.ndarray]] = {}
        queries, labels, found = [], [], []
        for r in ok:
            e = self._embeddings(r["pair"])
            by_identity.setdefault(r["source_identity"], []).append(e["source"])
            found.append(e["output"].size > 0)
            queries.append(e["output"] if e["output"].size else np.zeros_like(e["source"]))
            labels.append(r["source_identity"])
        gallery_labels = sorted(by_identity)
        gallery = torch.from_numpy(np.stack([np.mean(by_identity[k], axis=0) for k in gallery_labels]))
        rates = id_retrieval(torch.from_numpy(np.stack(queries)), labels, gallery, gallery_labels, (1, 5),
                             torch.tensor(found))  # fmt: skip
        return {"id_retrieval_top1": rates[1], "id_retrieval_top5": rates[5], "id_gallery_size": len(gallery_labels)}

    def _fid(self, ok: list[dict]) -> dict[str, Any]:
        if len(ok) < 2:
            return {"fid": None}
        try:
            name, fid = build_fid(self.settings.fid_features, self.weights_dir)
        except (FileNotFoundError, ValueError) as err:
            features = self.settings.fid_features
            raise BenchmarkError(f"FID features {features!r}: {err} (or pass --fid standin)") from None
        for r in ok:
            output, target = self._crops(r["pair"])
            fid.update(output, real=False)
            fid.update(target, real=True)
        value = float(fid.compute())
        out = {"fid": value if name == "fid" else None}
        if name != "fid":
            out[name] = value  # stand-in features: never reported as a published-comparable FID
        return out

    def _crops(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The output and target face crops saved at measure time, (1, 3, S, S) in [0, 1] each."""
        crops = np.asarray(Image.open(self.out_dir / "crops" / f"{index:06d}.png"))
        output, target = np.split(crops, 2, axis=1)
        return to_unit(_tensor(output)), to_unit(_tensor(target))

    def _lpips(self, ok: list[dict]) -> tuple[dict[int, float], str | None]:
        """({pair: LPIPS of its output crop vs the target crop}, what was used or why the column is empty) for
        protocols with an LPIPS column; ({}, None) for the others."""
        if "lpips" not in {c.key for c in self.protocol.columns}:
            return {}, None
        from facex_train.lpips import WEIGHTS_KEY, load_lpips

        trunk = None if self.weights_dir is None else weight_path(self.weights_dir, WEIGHTS_KEY)
        if trunk is None or not trunk.is_file():
            where = trunk or f"<weights dir>/{BY_KEY[WEIGHTS_KEY].path} (no --weights-dir given)"
            return {}, f"LPIPS column empty: no AlexNet at {where}; get it from {BY_KEY[WEIGHTS_KEY].source}"
        try:
            network = load_lpips(trunk)
        except ValueError as err:
            raise BenchmarkError(f"LPIPS: {err}") from None
        values: dict[int, float] = {}
        with torch.inference_mode():
            for start in range(0, len(ok), LPIPS_BATCH):
                chunk = [r["pair"] for r in ok[start : start + LPIPS_BATCH]]
                outputs, targets = zip(*(self._crops(i) for i in chunk), strict=True)
                distances = network(torch.cat(outputs), torch.cat(targets))
                values |= {i: float(d) for i, d in zip(chunk, distances, strict=True)}
        return values, f"LPIPS: AlexNet {trunk.name} with LPIPS v0.1 heads (torchmetrics' copy), output vs target crop"

    def _write_csv(self, rows: list[dict[str, Any]]) -> None:
        keys = ["pair", "source", "target", "source_identity", "status", "face_detected", "id_similarity",
                "id_to_target", "pose_l2", "expression_l2", "gaze_l2", "ssim", "psnr", "rmse", "lpips"]  # fmt: skip
        with (self.out_dir / "pairs.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def _grid(self, ok: list[dict]) -> None:
        pairs = {p["pair"]: p for p in self.pair_list["pairs"]}
        lines = []
        for r in ok[:GRID_PAIRS]:
            p = pairs[r["pair"]]
            frames = [read_frame(self.roots, FrameRef.from_json(p[side])) for side in ("source", "target")]
            output = Image.open(self.out_dir / "outputs" / f"{r['pair']:06d}.png")
            lines.append(np.asarray(image_grid([*frames, output], tile=128)))
        Image.fromarray(np.concatenate(lines, axis=0)).save(self.out_dir / "grid.png")


def _cell(value: Any, column_key: str) -> str:
    if value is None:
        return "–"
    if column_key.startswith(("id_retrieval", "face_detection")):
        return f"{100 * value:.2f}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def markdown_table(
    protocol: Protocol, ours: dict[str, dict[str, Any]], result: dict[str, Any], reference: dict[str, Any]
) -> str:
    """The paper's table layout: its published rows (reference data, with their source), then ours."""
    published = reference["protocols"].get(protocol.name, {}).get("rows", [])
    columns = list(protocol.columns)
    head = "| Method | " + " | ".join(c.label for c in columns) + " |"
    lines = [f"# {protocol.name}: paper {protocol.table}", "", protocol.description, "", head,
             "|---|" + "---|" * len(columns)]  # fmt: skip
    for row in published:
        values = row.get("values", {})
        lines.append(f"| {row['method']} (published) | " + " | ".join(
            _cell(values.get(c.key), c.key) for c in columns) + " |")  # fmt: skip
    for name, metrics in ours.items():
        lines.append(f"| FaceX (this implementation: {name}) | " + " | ".join(
            _cell(metrics.get(c.key), c.key) for c in columns) + " |")  # fmt: skip
    p = result["protocol"]
    m = next(iter(ours.values()))
    fid_note = ("FID: Inception features" if m.get("fid") is not None
                else "FID column empty: stand-in features (fid_standin = "
                     f"{m.get('fid_standin', float('nan')):.4f}) are not comparable with a published FID")  # fmt: skip
    lines += [
        "",
        f"- pairs: {m['pairs']} ({m['evaluated']} evaluated, {m['skipped_inputs']} skipped: no face or unreadable "
        f"input); outputs with a findable face: {100 * m['face_detection_rate']:.1f} % (ID / pose / exp / gaze are "
        "means over those; a miss fails ID retrieval)",
        f"- identity model for ID: {p['identity_model']}; pose / expression / gaze: the {p['extractors']} backend",
        f"- {fid_note}; retrieval rates and detection in %",
        *([f"- {result['lpips']}"] if "lpips" in result else []),
        f"- {result['held_out']}",
        f"- pair list: {p['pairs']} pairs, sha256 {p['pair_list_sha256'][:16]}…, drawn from "
        + "; ".join(f"{k}: {v}" for k, v in p["built_from"].items()),
        f"- generation: {p['settings']['steps']} {p['settings']['scheduler']} steps, CFG {p['settings']['cfg_scale']}, "
        f"seed {p['settings']['seed']} + pair index, watermark {'on' if p['settings']['watermark'] else 'off'}",
        f"- published rows: {reference['source']}"
        + ("" if published else f" — none on record: {reference['status']}"),
    ]
    return "\n".join(lines) + "\n"


def log_to_mlflow(
    result: dict[str, Any],
    out_dir: Path,
    model_ref: str,
    tracking_uri: str | None,
    run_id: str | None = None,
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    experiment_id: str | None = None,
) -> str | None:
    """Log the metrics (``benchmark.<protocol>.<key>``) and table/metrics/grid files to the model's MLflow run: the
    run that registered a `models:/` model, the run given, else a new run named after the benchmark (in
    `experiment_id`, default the "facex-benchmarks" experiment). Returns the run id (None without a tracking URI)."""
    if not tracking_uri:
        say("not logged to MLflow: no tracking URI (--tracking-uri or MLFLOW_TRACKING_URI)")
        return None
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if run_id is None and model_ref.startswith("models:/"):
        name, _, which = model_ref.removeprefix("models:/").partition("@")
        if which:
            version = client.get_model_version_by_alias(name, which)
        else:
            name, _, number = name.partition("/")
            version = client.get_model_version(name, number)
        run_id = version.tags.get("run_id") or version.run_id
    protocol = result["protocol"]["protocol"]
    if run_id is None:
        if experiment_id is None:
            experiment = client.get_experiment_by_name("facex-benchmarks")
            experiment_id = experiment.experiment_id if experiment else client.create_experiment("facex-benchmarks")
        run_id = client.create_run(experiment_id, run_name=f"benchmark-{protocol}-{result['protocol']['model']}",
                                   tags={"facex.model": model_ref}).info.run_id  # fmt: skip
        client.set_terminated(run_id)
    numbers = {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float)) and v is not None}
    import mlflow.entities

    client.log_batch(run_id, metrics=[mlflow.entities.Metric(f"benchmark.{protocol}.{k}", float(v), 0, 0)
                                      for k, v in numbers.items()])  # fmt: skip
    for name in ("metrics.json", "table.md", "grid.png", "pairs.csv"):
        if (out_dir / name).is_file():
            client.log_artifact(run_id, str(out_dir / name), artifact_path=f"benchmarks/{protocol}")
    return run_id


def run_benchmark(
    protocol_name: str,
    roots: dict[str, Path],
    model: str,
    out_dir: Path,
    settings: RunSettings,
    pair_settings: PairSettings,
    *,
    weights_dir: Path | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    published: dict[str, Any] | None = None,
    progress: bool = True,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    experiment_id: str | None = None,
    batch_size: int = BATCH_SIZE,
) -> dict[str, Any]:
    """Load the model (a folder or a `models:/` URI), run the protocol into `out_dir`, log to MLflow; what
    ``facex benchmark run`` and the ``benchmark`` DVC stage both call. Raises BenchmarkError for what a user can fix.
    `batch_size`: pairs per denoising batch (:meth:`BenchmarkRun.run`)."""
    from facex_train.benchmark.protocols import get_protocol

    try:
        protocol = get_protocol(protocol_name)
    except KeyError as err:
        raise BenchmarkError(str(err).strip('"')) from None
    missing = [d for d in protocol.datasets if d not in roots]
    if missing:
        raise BenchmarkError(f"{protocol.name} needs a root for {', '.join(missing)}")
    pair_list = _pair_list(protocol, roots, pair_settings)  # a root in the wrong layout fails before the model loads
    if tracking_uri:
        import mlflow

        try:  # before hours of pairs, not after: the results are logged there at the end
            check_server(tracking_uri)
        except ServerUnreachableError as err:
            raise BenchmarkError(str(err)) from None
        mlflow.set_tracking_uri(tracking_uri)
    try:
        folder = resolve_model(model)
        pipe = FaceXPipeline.from_pretrained(folder, device=device, weights_dir=weights_dir)
    except (FaceXInputError, FileNotFoundError, ValueError) as err:
        raise BenchmarkError(f"model {model}: {err}") from None
    name = model_name(model)
    try:
        job = BenchmarkRun(protocol, roots, pipe, name, out_dir, settings, pair_settings, weights_dir, overwrite,
                           published, model_training_clips(folder), pair_list)  # fmt: skip
        if job.training_pairs:
            counts = {"pairs_from_training_clips": len(job.training_pairs), "pairs": len(job.pair_list["pairs"])}
            say(f"warning: {job.held_out_note(counts)}")
        result = job.run(progress=progress, batch_size=batch_size)
    except (FaceXInputError, FileNotFoundError) as err:
        raise BenchmarkError(str(err)) from None
    log_to_mlflow(result, out_dir, model, tracking_uri, run_id, say=say, experiment_id=experiment_id)
    return result


def _pair_list(protocol: Protocol, roots: dict[str, Path], pair_settings: PairSettings) -> dict[str, Any]:
    try:
        return build_pair_list(protocol, roots, pair_settings)
    except LayoutError as err:
        raise BenchmarkError(str(err)) from None


def model_name(model: str) -> str:
    """What a model is called in results: its folder's name, or NAME@ALIAS (NAME-VERSION) of a registry URI."""
    return model.removeprefix("models:/").replace("/", "-") if model.startswith("models:/") else Path(model).name
