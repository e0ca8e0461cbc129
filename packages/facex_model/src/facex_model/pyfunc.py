"""FaceX as an MLflow pyfunc model: what the register stage logs and what `models:/facex-swap@champion` resolves to.

The logged artifacts are the model folder (config.json + facex_trainable.safetensors); the frozen SD backbone is
referenced by the path in config.json, never copied (a folder whose config.json names it relative to itself, as
the pipeline's training stages write them, is logged with that path made absolute). `predict` takes a DataFrame
(or a dict / list of dicts) with one row per request:

    task     swap | headswap | reenact | edit | inpaint | animate
    source   path or base64 image (not needed for inpaint)
    target   path or base64 image
    optional: reference, mask (path or base64), regions (list or "eyes,nose"), steps, cfg_scale, seed, scheduler

and returns a DataFrame with one row per request: "image", a base64 PNG watermarked and tagged synthetic/FaceX, and
"error", empty (null) or why that row has no image (no face found in its target, an input that is not an image, an
unknown region, ...: the other rows are made all the same). Rows of swap / headswap / reenact / animate with the same
settings go through the U-Net `batch_size` at a time (each with its own seed: the images are those of one row at a
time, up to float rounding); an image that several rows share is decoded and its face detected once per call.

Where the model is loaded on another machine than the one that trained it, the backbone's path in config.json may
not exist there: MLflow's model config says where it is instead (keys in `LOAD_OPTIONS`), at load time or through
the MLFLOW_PYFUNC_INFERENCE_CONFIG environment variable (json; `mlflow models serve` reads it too):

    mlflow.pyfunc.load_model("models:/facex-swap@champion",
                             model_config={"backbone_path": "/models/stable-diffusion-v1-5", "device": "cuda"})
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from PIL import Image

from facex_model.pipeline import FaceMemo, find_model_dir

ARTIFACT_KEY = "model_dir"
DEFAULT_STEPS = 20
# what a loader may set through MLflow's model_config (None: what the model folder's config.json says)
LOAD_OPTIONS = {
    "backbone_path": None,  # the SD-1.5-layout folder (unet/, vae/, scheduler/) on this machine
    "clip_path": None,  # the CLIP vision folder, if not <backbone_path>/clip_vision
    "weights_dir": None,  # the extractors' weights (paper profile); else $FACEX_WEIGHTS_DIR, else ./weights
    "device": "cpu",  # cpu | cuda | cuda:N | auto
    "batch_size": 8,  # rows per denoising batch (on a GPU: as many as its memory holds)
}
BATCHED_TASKS = ("swap", "headswap", "reenact", "animate")  # the rows that can share a denoising batch


class FaceXPyfunc(mlflow.pyfunc.PythonModel):
    """Loads a FaceXPipeline from the logged model folder; one output image per input row.

    `predict` has no type hints on purpose: MLflow would turn them into an input schema that cannot express rows
    mixing paths, base64 strings and numbers (it says so with a warning when this module is imported).
    """

    def load_context(self, context: Any) -> None:
        from facex_model.model import FaceXModel
        from facex_model.pipeline import FaceXPipeline

        options = {**LOAD_OPTIONS, **(context.model_config or {})}  # older versions declared none
        folder = find_model_dir(Path(context.artifacts[ARTIFACT_KEY]))
        try:
            model = FaceXModel.from_pretrained(folder, backbone_path=options["backbone_path"],
                                               clip_path=options["clip_path"])  # fmt: skip
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{err} Through MLflow, say where it is on this machine: mlflow.pyfunc.load_model(uri, "
                "model_config={'backbone_path': ..., 'clip_path': ...}) or MLFLOW_PYFUNC_INFERENCE_CONFIG (json)."
            ) from err
        self.pipeline = FaceXPipeline(model, device=options["device"], weights_dir=options["weights_dir"])
        self.batch_size = max(1, int(options["batch_size"]))

    # no type hints on context / model_input: MLflow would turn them into a (wrong) input schema
    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:  # noqa: ANN001
        from facex_model.inputs import FaceXInputError

        decoded: dict[tuple[Any, str], Image.Image] = {}  # one decoding per distinct base64 input
        requests: list[dict[str, Any] | None] = []
        errors: list[str | None] = []
        for row in _rows(model_input):
            try:
                requests.append(_request(row, params or {}, decoded))
                errors.append(None)
            except ValueError as err:  # a value that is not an image, a number that is not one
                requests.append(None)
                errors.append(str(err))
        images: list[Image.Image | None] = [None] * len(requests)
        batches: dict[tuple, list[int]] = defaultdict(list)  # same task and settings -> the rows
        for i, r in enumerate(requests):
            if r is None:
                continue
            if r["task"] in BATCHED_TASKS and r["source"] is not None and r["target"] is not None:
                batches[(r["task"], r["steps"], r["cfg_scale"], r["scheduler"], tuple(r["regions"] or ()))].append(i)
                continue
            try:
                images[i] = self.pipeline(**r, watermark=True).image
            except FaceXInputError as err:
                errors[i] = str(err)
        faces = FaceMemo(self.pipeline)  # one detection per distinct image and role: its Face, or its error
        for rows in batches.values():
            for first in range(0, len(rows), self.batch_size):
                chunk = rows[first : first + self.batch_size]
                for i, result in zip(chunk, self._generate(requests, chunk, faces), strict=True):
                    if isinstance(result, Exception):
                        errors[i] = str(result)
                    else:
                        images[i] = result
        return pd.DataFrame({"image": [None if im is None else encode_png(im) for im in images], "error": errors})

    def _generate(self, requests: list[dict[str, Any]], rows: list[int], faces: FaceMemo) -> list[Any]:
        """One denoising batch of rows with the same settings: each row's watermarked image, or the input error that
        dropped it from the batch (the others go on)."""
        from facex_model.inputs import FaceXInputError

        def detect(image: Any, name: str) -> Any:
            return faces.detect((str(image) if isinstance(image, Path) else id(image), name), image, name)

        results: list[Any] = [None] * len(rows)
        ready, pairs = [], []
        for k, i in enumerate(rows):
            try:
                pairs.append((detect(requests[i]["source"], "source"), detect(requests[i]["target"], "target")))
                ready.append(k)
            except FaceXInputError as err:
                results[k] = err
        if not ready:
            return results
        head = requests[rows[ready[0]]]
        try:
            outputs = self.pipeline.generate_many(
                head["task"], pairs, regions=head["regions"], steps=head["steps"], cfg_scale=head["cfg_scale"],
                scheduler=head["scheduler"], seeds=[requests[rows[k]]["seed"] for k in ready],
            )  # fmt: skip
        except FaceXInputError as err:  # a setting these rows share (an unknown region, say)
            outputs = [err] * len(ready)
        for k, out in zip(ready, outputs, strict=True):
            results[k] = out if isinstance(out, Exception) else self.pipeline.finish(out, watermark=True).image
        return results


def _request(
    row: Mapping[str, Any], params: Mapping[str, Any], decoded: dict[tuple[Any, str], Image.Image] | None = None
) -> dict[str, Any]:
    """One row (its values first, then `params`, then the defaults) -> FaceXPipeline's arguments (`decoded` keeps
    each base64 image decoded once)."""

    def arg(name: str, default: Any = None) -> Any:
        value = row.get(name, params.get(name, default))
        return default if _missing(value) else value

    regions = arg("regions")
    if isinstance(regions, str):
        regions = [r.strip() for r in regions.split(",") if r.strip()]
    return {
        "task": str(arg("task", "swap")),
        "source": _image(arg("source"), decoded=decoded),
        "target": _image(arg("target"), decoded=decoded),
        "reference": _image(arg("reference"), decoded=decoded),
        "mask": _image(arg("mask"), mode="L", decoded=decoded),
        "regions": list(regions) if regions is not None else None,
        "steps": int(arg("steps", DEFAULT_STEPS)),
        "cfg_scale": float(arg("cfg_scale", 3.0)),
        "scheduler": str(arg("scheduler", "ddim")),
        "seed": int(arg("seed", 0)),
    }


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _rows(model_input: Any) -> list[dict[str, Any]]:
    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict(orient="records")
    if isinstance(model_input, Mapping):
        values = dict(model_input)
        if all(isinstance(v, (list, tuple)) for v in values.values()) and values:
            n = len(next(iter(values.values())))
            return [{k: v[i] for k, v in values.items()} for i in range(n)]
        return [values]
    if isinstance(model_input, list):
        return [dict(r) for r in model_input]
    raise TypeError(f"FaceX predict takes a DataFrame, a dict or a list of dicts, not {type(model_input).__name__}")


def _image(value: Any, mode: str = "RGB", decoded: dict[tuple[Any, str], Image.Image] | None = None) -> Any:
    """A path stays a path (the pipeline reports missing files); bytes are an encoded image, any other text base64.
    With `decoded`, each distinct value is decoded once per mode: rows that share an image share one object."""
    from facex_model.inputs import FaceXInputError

    if value is None:
        return None
    key = bytes(value) if isinstance(value, (bytes, bytearray)) else str(value)
    if isinstance(key, str) and len(key) < 4096 and Path(key).suffix.lower() in (".jpg", ".jpeg", ".png", ".webp",
                                                                                 ".mp4"):  # fmt: skip
        return Path(key)
    if decoded is not None and (key, mode) in decoded:
        return decoded[key, mode]
    try:
        raw = key if isinstance(key, bytes) else base64.b64decode(key, validate=True)
        image = Image.open(io.BytesIO(raw)).convert(mode)
    except (ValueError, OSError) as err:
        shown = key[:40] if isinstance(key, str) else f"{len(key)} bytes"
        raise FaceXInputError(f"input {shown!r}...: neither an image path nor a base64-encoded image ({err})") from None
    if decoded is not None:
        decoded[key, mode] = image
    return image


def encode_png(image: Image.Image) -> str:
    """base64 PNG with the synthetic/FaceX text chunks (the pixels are already watermarked)."""
    from facex_model.watermark import png_info

    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=png_info())
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def log_model(
    model_dir: Path, artifact_path: str, registered_model_name: str | None = None
) -> mlflow.models.model.ModelInfo:
    """Log a saved FaceX model folder as a pyfunc model in the active run (registering it when a name is given).

    A folder whose config.json names its backbone relative to itself is logged as a copy naming it by its absolute
    path: the logged copy lies elsewhere, and on this machine it still finds the backbone without a model_config."""
    from facex_model.model import CONFIG_NAME, PATH_FIELDS, FaceXModel, write_config

    model_dir = find_model_dir(Path(model_dir))
    written = json.loads((model_dir / CONFIG_NAME).read_text())
    if not any(written.get(key) is not None and not Path(written[key]).is_absolute() for key in PATH_FIELDS):
        return _log_folder(model_dir, artifact_path, registered_model_name)
    with tempfile.TemporaryDirectory(prefix="facex-log-") as tmp:
        copy = Path(tmp) / model_dir.name
        shutil.copytree(model_dir, copy)
        write_config(copy, FaceXModel.read_config(model_dir))
        return _log_folder(copy, artifact_path, registered_model_name)


def _log_folder(model_dir: Path, artifact_path: str, name: str | None) -> mlflow.models.model.ModelInfo:
    import diffusers
    import torch

    return mlflow.pyfunc.log_model(
        name=artifact_path,
        python_model=FaceXPyfunc(),
        artifacts={ARTIFACT_KEY: str(model_dir)},
        registered_model_name=name,
        model_config=dict(LOAD_OPTIONS),  # declared here, so that a loader may set them (MLflow ignores others)
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"diffusers=={diffusers.__version__}",
            f"mlflow=={mlflow.__version__}",
            "facex-model",
            "facex-data",
        ],
    )
