"""FaceX as an MLflow pyfunc model: what the register stage logs and what `models:/facex-swap@champion` resolves to.

The logged artifacts are the model folder (config.json + facex_trainable.safetensors); the frozen SD backbone is
referenced by the path in config.json, never copied. `predict` takes a DataFrame (or a dict / list of dicts) with
one row per request:

    task     swap | headswap | reenact | edit | inpaint | animate
    source   path or base64 image (not needed for inpaint)
    target   path or base64 image
    optional: reference, mask (path or base64), regions (list or "eyes,nose"), steps, cfg_scale, seed, scheduler

and returns a DataFrame with one base64 PNG per row ("image"), watermarked and tagged synthetic/FaceX. Rows of
swap / headswap / reenact / animate with the same settings go through the U-Net `batch_size` at a time (each with its
own seed: the images are those of one row at a time, up to float rounding).

Where the model is loaded on another machine than the one that trained it, the backbone's path in config.json may
not exist there: MLflow's model config says where it is instead (keys in `LOAD_OPTIONS`), at load time or through
the MLFLOW_PYFUNC_INFERENCE_CONFIG environment variable (json; `mlflow models serve` reads it too):

    mlflow.pyfunc.load_model("models:/facex-swap@champion",
                             model_config={"backbone_path": "/models/stable-diffusion-v1-5", "device": "cuda"})
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from PIL import Image

from facex_model.pipeline import find_model_dir

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
        requests = [_request(row, params or {}) for row in _rows(model_input)]
        images: list[Image.Image | None] = [None] * len(requests)
        batches: dict[tuple, list[int]] = defaultdict(list)  # same task and settings -> the rows
        for i, r in enumerate(requests):
            if r["task"] in BATCHED_TASKS and r["source"] is not None and r["target"] is not None:
                batches[(r["task"], r["steps"], r["cfg_scale"], r["scheduler"], tuple(r["regions"] or ()))].append(i)
            else:
                images[i] = self.pipeline(**r, watermark=True).image
        for rows in batches.values():
            for first in range(0, len(rows), self.batch_size):
                chunk = [requests[i] for i in rows[first : first + self.batch_size]]
                pairs = [(self.pipeline.detect(r["source"], "source"), self.pipeline.detect(r["target"], "target"))
                         for r in chunk]  # fmt: skip
                head = chunk[0]
                outputs = self.pipeline.generate_many(
                    head["task"], pairs, regions=head["regions"], steps=head["steps"], cfg_scale=head["cfg_scale"],
                    scheduler=head["scheduler"], seeds=[r["seed"] for r in chunk],
                )  # fmt: skip
                for i, out in zip(rows[first : first + self.batch_size], outputs, strict=True):
                    images[i] = self.pipeline.finish(out, watermark=True).image
        return pd.DataFrame({"image": [encode_png(image) for image in images]})


def _request(row: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """One row (its values first, then `params`, then the defaults) -> FaceXPipeline's arguments."""

    def arg(name: str, default: Any = None) -> Any:
        value = row.get(name, params.get(name, default))
        return default if _missing(value) else value

    regions = arg("regions")
    if isinstance(regions, str):
        regions = [r.strip() for r in regions.split(",") if r.strip()]
    return {
        "task": str(arg("task", "swap")),
        "source": _image(arg("source")),
        "target": _image(arg("target")),
        "reference": _image(arg("reference")),
        "mask": _image(arg("mask"), mode="L"),
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


def _image(value: Any, mode: str = "RGB") -> Any:
    """A path stays a path (the pipeline reports missing files); anything else is decoded as base64."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return Image.open(io.BytesIO(value)).convert(mode)
    text = str(value)
    if len(text) < 4096 and Path(text).suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".mp4"):
        return Path(text)
    try:
        raw = base64.b64decode(text, validate=True)
        return Image.open(io.BytesIO(raw)).convert(mode)
    except (ValueError, OSError) as err:
        raise ValueError(f"input {text[:40]!r}...: neither an image path nor a base64-encoded image ({err})") from None


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
    """Log a saved FaceX model folder as a pyfunc model in the active run (registering it when a name is given)."""
    model_dir = find_model_dir(Path(model_dir))
    import diffusers
    import torch

    return mlflow.pyfunc.log_model(
        name=artifact_path,
        python_model=FaceXPyfunc(),
        artifacts={ARTIFACT_KEY: str(model_dir)},
        registered_model_name=registered_model_name,
        model_config=dict(LOAD_OPTIONS),  # declared here, so that a loader may set them (MLflow ignores others)
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"diffusers=={diffusers.__version__}",
            f"mlflow=={mlflow.__version__}",
            "facex-model",
            "facex-data",
        ],
    )
