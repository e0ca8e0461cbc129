"""FaceXPipeline: images in, the task's output frame out (paper §3.3-3.5, Fig 1, 6, 9).

One callable object, diffusers-style:

    pipe = FaceXPipeline.from_pretrained("data/models/swap")            # or "models:/facex-swap@champion"
    out = pipe("swap", source="me.jpg", target="them.jpg", steps=20, seed=0)
    out.image.save("swapped.png")

Per call: detect and align the faces with the model's extractor backend, assemble the task's inputs (which image
gives which representation: the task table in fors.py), encode f_SD once, denoise, decode, and paste the generated
crop back into the full target frame through a dilated, feathered mask (pixels outside it are the target's, exactly).

User-facing sides vs the model's: the model's task rows name the image the output is built on. For `edit` and
`inpaint` that is the model's "source" side; here the image being changed is always the user's *target* (so every
task's output has the target's size), and `edit`'s regions come from the user's *source* (the model's "reference").
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from facex_model import denoising
from facex_model.features import batch_to, collate_sides, features_inputs, to_uint8
from facex_model.fors import TASK_TABLE, TaskSpec, dilate, edit_row, get_task, pixels
from facex_model.inputs import FaceXInputError, ImageInput, NoFaceError, load_image, load_mask, warn_user
from facex_model.model import CONFIG_NAME, WEIGHTS_NAME, FaceXModel
from facex_model.regions import ALL_REGIONS, FACE_REGIONS, HEAD_REGIONS, union_mask

TASKS = ("swap", "headswap", "reenact", "edit", "inpaint", "animate")


@dataclass(frozen=True)
class Edit:
    """One region edit: take `regions` (e.g. ("hair",), ("eyes", "brows")) from the `reference` image."""

    regions: tuple[str, ...]
    reference: ImageInput


@dataclass
class Face:
    """One aligned face in a frame: the frame, the extractor's features, and the input's name for messages."""

    frame: np.ndarray  # (H, W, 3) uint8 RGB
    features: Any  # facex_data.extractors.FaceFeatures (transform / bbox in `frame` coordinates)
    name: str
    n_faces: int = 1


@dataclass
class FaceXOutput:
    """What one call produced. `image` has the target's size; the rest show how it was made."""

    image: Image.Image  # the full target frame with the generated face pasted in
    crop: Image.Image  # the model's output in the target face's aligned crop
    mask: np.ndarray  # (H, W) float32 paste-back alpha in the frame; 0 = the target's pixel, exactly
    inpaint_reference: Image.Image  # I_R, the Region Assembler's inpainting reference image
    hole: np.ndarray  # (R, R) float32 hole of I_R in crop space
    task: str
    seed: int | None = None
    steps: list[FaceXOutput] = field(default_factory=list)  # progressive editing: every intermediate output

    @property
    def images(self) -> list[Image.Image]:
        return [self.image]

    def grid(
        self, source: Image.Image | np.ndarray | None, target: Image.Image | np.ndarray, tile: int = 256
    ) -> Image.Image:
        """source | target | I_R | result, each letterboxed into a `tile` square."""
        panels = [p for p in (source, target, self.inpaint_reference, self.image) if p is not None]
        return image_grid(panels, tile)


class FaceMemo:
    """Faces detected once per input over a run (a batch of jobs, one pyfunc call): `detect(key, ...)` gives the Face
    found the first time `key` was asked for, or raises again the error that detection raised (no face, not an
    image). `limit` keeps only the latest that many."""

    def __init__(self, pipe: FaceXPipeline, limit: int | None = None) -> None:
        self.pipe, self.limit = pipe, limit
        self.found: dict[Any, Face | Exception] = {}

    def detect(self, key: Any, image: ImageInput, name: str, face_index: int | None = None) -> Face:
        if key not in self.found:
            if self.limit is not None and len(self.found) >= self.limit:
                self.found.pop(next(iter(self.found)))
            try:
                self.found[key] = self.pipe.detect(image, name, face_index)
            except Exception as err:  # the same answer for every use of this input
                self.found[key] = err
        found = self.found[key]
        if isinstance(found, Exception):
            raise found
        return found


def image_grid(panels: Sequence[Image.Image | np.ndarray], tile: int = 256) -> Image.Image:
    """Images side by side, each letterboxed (aspect kept) into a `tile` x `tile` square on black."""
    grid = Image.new("RGB", (tile * len(panels), tile))
    for i, panel in enumerate(panels):
        img = panel if isinstance(panel, Image.Image) else Image.fromarray(np.asarray(panel, dtype=np.uint8))
        img = img.convert("RGB")
        scale = tile / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
        grid.paste(img, (i * tile + (tile - img.width) // 2, (tile - img.height) // 2))
    return grid


# --- the pipeline --------------------------------------------------------------------------------------------------
class FaceXPipeline:
    """Every FaceX task on one model: call it with a task name and images."""

    def __init__(
        self,
        model: FaceXModel,
        *,
        device: str | torch.device = "cpu",
        crop_size: int = 256,
        max_side: int = 2048,
        paste_dilate: float = 0.02,
        paste_feather: float = 0.03,
        extractor_options: Any | None = None,
        weights_dir: str | Path | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.device = torch.device(resolve_device(device))
        self.model = model.to(self.device).eval()
        self.crop_size = crop_size
        self.max_side = max_side
        self.paste_dilate = paste_dilate
        self.paste_feather = paste_feather
        self.warn = warn or warn_user
        self.extractor_options = extractor_options  # facex_data ExtractorOptions (default: crop_size, weights_dir)
        self.weights_dir = weights_dir
        self._extractors = None

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path,
        *,
        backbone_path: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> FaceXPipeline:
        """Load a model folder (FaceXModel.save_pretrained) or a registry URI `models:/<name>@<alias>` (MLflow).

        `backbone_path` puts another SD-1.5-architecture U-Net/VAE under the trained part (animation/stylisation), or
        says where the model's own backbone is on this machine when config.json's path does not lead to it (a path
        relative to the model folder, as the pipeline writes them, leads there while the two move together).
        """
        folder = resolve_model(model)
        if backbone_path is None:
            named = Path(FaceXModel.read_config(folder).backbone_path)
            if not (named / "unet").is_dir():
                raise FileNotFoundError(
                    f"{folder / CONFIG_NAME} names {named} as the model's backbone, and it has no unet/ there; if the "
                    "model folder was moved or pulled into another checkout, say where that backbone folder is now: "
                    "--backbone DIR (command line) or backbone_path=DIR (FaceXPipeline.from_pretrained); the demo's "
                    "is data/backbone"
                )
        loaded = FaceXModel.from_pretrained(folder, backbone_path=backbone_path)
        if dtype is not None:
            loaded = loaded.to(dtype)
        return cls(loaded, device=device, **kwargs)

    @property
    def extractors(self):
        """The model's extractor backend (the one its training shards were written with), built on first use.

        The paper backend reads its weights from the weights dir: `weights_dir`, else $FACEX_WEIGHTS_DIR, else
        ./weights (facex_data.weights.resolve_weights_dir).
        """
        if self._extractors is None:
            from facex_data.extractors import ExtractorOptions, build_extractors
            from facex_data.weights import resolve_weights_dir

            options = self.extractor_options or ExtractorOptions(
                crop_size=self.crop_size, weights_dir=resolve_weights_dir(self.weights_dir), device=self.device.type
            )
            self._extractors = build_extractors(self.model.config.extractors, options)
        return self._extractors

    @property
    def resolution(self) -> int:
        return self.model.config.resolution

    # --- faces ------------------------------------------------------------------------------------------------
    def detect(
        self, image: ImageInput, name: str = "image", face_index: int | None = None, like: np.ndarray | None = None
    ) -> Face:
        """Load an input and align one face: the largest, the `face_index`-th by size (0 = largest), or the one most
        like a reference (`like`: an identity embedding from :meth:`identity`)."""
        frame = load_image(image, name, self.max_side, self.warn)
        label = f"{name} {image}" if isinstance(image, (str, Path)) else name
        features, n_faces = self.select_face(frame, label, face_index, like, fallback=True)
        return Face(frame, features, label, n_faces)

    def identity(self, image: ImageInput, name: str = "reference face") -> np.ndarray:
        """The identity embedding of the (largest) face in an image: what `target_face_like` compares faces by.

        A 1-D array is taken as an embedding already computed (reuse one over many calls)."""
        if isinstance(image, np.ndarray) and image.ndim == 1:
            return image.astype(np.float32)
        return np.asarray(self.detect(image, name).features.identity, dtype=np.float32).ravel()

    def select_face(
        self,
        frame: np.ndarray,
        label: str,
        face_index: int | None = None,
        like: np.ndarray | None = None,
        fallback: bool = False,
    ) -> tuple[Any, int]:
        """(features of the chosen face, faces found) in an (H, W, 3) uint8 RGB frame, as :meth:`detect` chooses.

        `fallback`: where the backend's dlib HOG detector finds no face, look again with dlib's CNN detector
        (facex_data.cnn_faces; seconds, not milliseconds: for the images a user hands in, not every video frame)."""
        if face_index is not None and like is not None:
            raise FaceXInputError(f"{label}: choose the face by --face-index or by --target-face-like, not both")
        no_face = f"no face found in {label}; use a photo with a clearly visible, roughly frontal face"
        if face_index is not None and face_index > 0:  # the boxes count the faces: the largest is never extracted
            boxes = self._face_boxes(frame, fallback)
            if not boxes:
                raise NoFaceError(no_face)
            if face_index >= len(boxes):
                raise FaceXInputError(f"{label} shows {len(boxes)} face(s): --face-index must be 0..{len(boxes) - 1}")
            return self._align_in_window(frame, boxes, face_index, label, fallback), len(boxes)
        features = self._features(frame, fallback)
        if features is None:
            raise NoFaceError(no_face)
        n_faces = features.detection.n_faces
        if like is not None:
            return (self._most_like(frame, features, like, label, fallback) if n_faces > 1 else features), n_faces
        if face_index is None:
            if n_faces > 1:
                self.warn(
                    f"{label} shows {n_faces} faces: using the largest (choose another with --face-index or "
                    "--target-face-like)"
                )
            return features, n_faces
        if face_index != 0:
            raise FaceXInputError(f"{label} shows {n_faces} face(s): --face-index must be 0..{n_faces - 1}")
        return features, n_faces

    def _features(self, image: np.ndarray, fallback: bool) -> Any:
        """The backend's features of the largest face in `image`, else (`fallback`) dlib CNN's, else None."""
        features = self.extractors.features(image[None])[0]
        if features is None and fallback:
            from facex_data.cnn_faces import features_cnn

            features = features_cnn(self.extractors, image)
        return features

    def _most_like(self, frame: np.ndarray, largest: Any, like: np.ndarray, label: str, fallback: bool) -> Any:
        """Of the faces in `frame`, the one whose identity embedding is closest (cosine) to `like`."""
        boxes = self._face_boxes(frame, fallback)
        candidates = [largest]
        for index in range(1, len(boxes)):
            with contextlib.suppress(NoFaceError):
                candidates.append(self._align_in_window(frame, boxes, index, label, fallback))
        return max(candidates, key=lambda f: identity_similarity(f.identity, like))

    def _face_boxes(self, frame: np.ndarray, fallback: bool) -> list[tuple[int, int, int, int]]:
        """The faces' boxes in the backend detector's order (the first is the face it aligns), or (`fallback`,
        where it finds none) dlib CNN's, largest first."""
        boxes = self.extractors.aligner.boxes(frame)
        if not boxes and fallback:
            from facex_data.cnn_faces import detect_faces_cnn, supports

            boxes = detect_faces_cnn(frame) if supports(self.extractors) else []
        return boxes

    def _align_in_window(
        self, frame: np.ndarray, boxes: Sequence[tuple[int, int, int, int]], index: int, label: str, fallback: bool
    ):
        """Align the face in `boxes[index]`: extract from a window around it with the other faces greyed out."""
        left, top, right, bottom = boxes[index]
        h, w = frame.shape[:2]
        pad = max(right - left, bottom - top)
        x0, y0, x1, y1 = max(0, left - pad), max(0, top - pad), min(w, right + pad), min(h, bottom + pad)
        window = frame[y0:y1, x0:x1].copy()
        for j, (l2, t2, r2, b2) in enumerate(boxes):
            if j != index:
                window[max(0, t2 - y0) : max(0, b2 - y0), max(0, l2 - x0) : max(0, r2 - x0)] = 127
        features = self._features(window, fallback)
        if features is None:
            raise NoFaceError(f"face {index} of {label} could not be aligned; try another --face-index")
        det = features.detection
        transform = det.transform.copy()
        transform[:, 2] -= transform[:, :2] @ np.array([x0, y0], dtype=np.float64)  # window -> frame coordinates
        l3, t3, r3, b3 = det.bbox
        detection = dataclasses.replace(det, transform=transform, bbox=(l3 + x0, t3 + y0, r3 + x0, b3 + y0))
        return dataclasses.replace(features, detection=detection)

    def face_inputs(self, face: Face) -> dict[str, torch.Tensor]:
        return features_inputs(face.features, self.model.config.extractors, self.resolution)

    # --- calling ----------------------------------------------------------------------------------------------
    def __call__(
        self,
        task: str,
        source: ImageInput | None = None,
        target: ImageInput | None = None,
        reference: ImageInput | None = None,
        *,
        mask: ImageInput | None = None,
        regions: Sequence[str] | None = None,
        edits: Sequence[Edit] | None = None,
        sequential: bool = False,
        steps: int = 20,
        cfg_scale: float = 3.0,
        scheduler: str = "ddim",
        seed: int | None = 0,
        face_index: int | None = None,
        source_face_index: int | None = None,
        target_face_like: ImageInput | None = None,
        watermark: bool = True,
    ) -> FaceXOutput:
        """Run one task on one target image.

        swap / headswap: the source's face (head) on the target; `regions` makes it a controllable swap (only
            those regions change, e.g. ("eyes", "nose")).
        reenact / animate: the source person with the target's pose, expression and gaze (`animate` = reenact; load
            the pipeline with another SD-1.5 U-Net via `backbone_path`).
        edit: the target with `regions` taken from `source` (or `reference`); `edits` applies several, mixed in one
            pass (each region from its own reference) or in sequence (`sequential=True`, progressive editing).
        inpaint: the target with `mask` (white = repaint) regenerated.
        `face_index` picks the target's face (0 = largest), `source_face_index` the source's; `target_face_like` (an
            image of the person, or their embedding from `identity`) picks the target's face whose identity embedding
            is closest to that person's.
        With `watermark` (default) the output carries the FaceX watermark (see facex_model.watermark).
        """
        if task not in TASKS:
            raise FaceXInputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        if target is None:
            raise FaceXInputError(f"{task} needs a target image")
        options = dict(steps=steps, cfg_scale=cfg_scale, scheduler=scheduler, seed=seed)
        like = self.identity(target_face_like, "--target-face-like") if target_face_like is not None else None
        if task == "edit":
            edits = self._edits(source, reference, regions, edits)
            target_face = self.detect(target, "target", face_index, like)
            out = self.edit(target_face, edits, sequential=sequential, **options)
        else:
            target_face = self.detect(target, "target", face_index, like)
            if task == "inpaint":
                if mask is None:
                    raise FaceXInputError("inpaint needs a mask (white = repaint) the size of the target")
                h, w = target_face.frame.shape[:2]
                out = self.inpaint(target_face, load_mask(mask, (w, h)), **options)
            else:
                if source is None:
                    raise FaceXInputError(f"{task} needs a source image")
                source_face = self.detect(source, "source", source_face_index)
                out = self.generate(task, source_face, target_face, regions=regions, **options)
        return self.finish(out, watermark)

    def finish(self, out: FaceXOutput, watermark: bool) -> FaceXOutput:
        if watermark:
            from facex_model.watermark import embed

            out.image = Image.fromarray(embed(np.asarray(out.image)))
        return out

    def _edits(
        self,
        source: ImageInput | None,
        reference: ImageInput | None,
        regions: Sequence[str] | None,
        edits: Sequence[Edit] | None,
    ) -> list[Edit]:
        if edits:
            return list(edits)
        ref = reference if reference is not None else source
        if ref is None:
            raise FaceXInputError("edit needs a source (or reference) image to take the regions from")
        if not regions:
            raise FaceXInputError(f"edit needs the regions to take from the source, e.g. hair; known: {_known()}")
        return [Edit(tuple(regions), ref)]

    # --- tasks on aligned faces ---------------------------------------------------------------------------------
    def generate(
        self,
        task: str,
        source: Face,
        target: Face,
        *,
        regions: Sequence[str] | None = None,
        steps: int = 20,
        cfg_scale: float = 3.0,
        scheduler: str = "ddim",
        seed: int | None = 0,
        noise: torch.Tensor | None = None,
        source_inputs: dict[str, torch.Tensor] | None = None,
    ) -> FaceXOutput:
        """swap / headswap / reenact / animate on aligned faces."""
        return self.generate_many(
            task, [(source, target)], regions=regions, steps=steps, cfg_scale=cfg_scale, scheduler=scheduler,
            seeds=[seed], noise=noise, source_inputs=source_inputs,
        )[0]  # fmt: skip

    def generate_many(
        self,
        task: str,
        pairs: Sequence[tuple[Face, Face]],
        *,
        regions: Sequence[str] | None = None,
        steps: int = 20,
        cfg_scale: float = 3.0,
        scheduler: str = "ddim",
        seeds: Sequence[int | None] | None = None,
        noise: torch.Tensor | None = None,
        source_inputs: dict[str, torch.Tensor] | None = None,
    ) -> list[FaceXOutput]:
        """:meth:`generate` on several (source, target) pairs in one denoising batch (benchmarks, video frames).

        Pair i gets what `generate` gives it with `seeds[i]` (default 0), up to float rounding: its own initial
        noise and, for a stochastic scheduler, its own noise stream. `noise` (1 or len(pairs), 4, h, w) fixes the
        initial noise instead (video: the same for every frame); `source_inputs` stands for every pair's source.
        """
        if not pairs:
            return []
        seeds = [0] * len(pairs) if seeds is None else list(seeds)
        if len(seeds) != len(pairs):
            raise ValueError(f"{len(seeds)} seeds for {len(pairs)} pairs: give one seed per pair")
        spec = get_task("reenact" if task == "animate" else task)
        sides = [
            {"source": source_inputs or self.face_inputs(source), "target": self.face_inputs(target)}
            for source, target in pairs
        ]
        batch = self._batch(*sides)
        fusion_mask = None
        if regions:
            if task not in ("swap", "headswap"):
                raise FaceXInputError(f"--regions with {task}: region control applies to swap, headswap and edit")
            fusion_mask = self._region_mask(batch, ("source", "target"), _check_regions(regions), spec.hole_dilate)
        if spec.paste_regions or spec.hole_regions:
            paste = None  # the hole the model fills
        else:
            paste = self._crop_window()  # reenactment repaints the whole crop
        return self._sample(
            task, spec, batch, [target for _, target in pairs], paste=paste, fusion_mask=fusion_mask,
            steps=steps, cfg_scale=cfg_scale, scheduler=scheduler, seeds=seeds, noise=noise,
        )  # fmt: skip

    def edit(self, target: Face, edits: Sequence[Edit], *, sequential: bool = False, **options: Any) -> FaceXOutput:
        """Region editing (paper Fig 9): several edits mixed in one pass, or applied one after another (progressive).

        One pass: every reference is its own side of the batch, and each region's tokens come from its edit's
        reference. In sequence: each edit runs on the previous output, measured where the target's face was aligned
        (an edit leaves the face in place; a generated face need not be detectable, and re-detecting it would move
        each step's paste-back).
        """
        for e in edits:
            _check_regions(e.regions)
        groups = [[e] for e in edits] if sequential else [list(edits)]
        history: list[FaceXOutput] = []
        current = target
        for step, group in enumerate(groups):
            references = [
                (self.detect(e.reference, "reference" if len(edits) == 1 else f"reference {edits.index(e) + 1}"), e)
                for e in group
            ]
            history.append(self._edit_once(current, references, **options))
            if step + 1 < len(groups):
                current = self._remeasure(current, np.asarray(history[-1].image), f"edit step {step + 1} output")
        final = history[-1]
        if len(history) > 1:
            merged = np.maximum.reduce([h.mask for h in history])
            final = dataclasses.replace(final, mask=merged, steps=history)
        return final

    def _remeasure(self, face: Face, frame: np.ndarray, name: str) -> Face:
        """`frame` (the same size as `face.frame`) measured at `face`'s alignment: cropped with its transform as the
        aligners crop, its landmarks kept."""
        detection = face.features.detection
        size = detection.crop.shape[0]
        crop = cv2.warpAffine(frame, detection.transform, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # fmt: skip
        features = self.extractors.measured([dataclasses.replace(detection, crop=crop)])[0]
        return Face(frame, features, name, face.n_faces)

    def _edit_once(self, target: Face, references: Sequence[tuple[Face, Edit]], **options: Any) -> FaceXOutput:
        # the model's edit row is built on its "source" side: the user's target is what gets edited
        sides = {"source": self.face_inputs(target)}
        regions_by_side: dict[str, tuple[str, ...]] = {}
        for k, (face, e) in enumerate(references):
            side = "reference" if k == 0 else f"reference{k}"
            sides[side] = self.face_inputs(face)
            regions_by_side[side] = tuple(e.regions)
        return self._one("edit", mixture_row(regions_by_side), self._batch(sides), target, **options)

    def inpaint(self, target: Face, mask: np.ndarray, **options: Any) -> FaceXOutput:
        """Regenerate the masked part of the target's face (mask: (H, W) {0, 1} in frame pixels)."""
        batch = self._batch({"source": self.face_inputs(target)})
        hole = self._to_crop(mask, target)
        if not hole.any():
            raise FaceXInputError(f"the inpainting mask does not touch the face in {target.name}; paint over the face")
        extra = torch.from_numpy(hole)[None, None].to(self.device)
        return self._one("inpaint", TASK_TABLE["inpaint"], batch, target, extra_hole=extra, **options)

    # --- internals --------------------------------------------------------------------------------------------
    def _batch(self, *sides: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One batch row per `sides` ({side: face inputs}), on the model's device and dtype."""
        return batch_to(collate_sides(list(sides)), self.device, self.model.unet.dtype)

    def _crop_scale(self) -> float:
        return self.resolution / self.extractors.options.crop_size

    def _crop_transform(self, face: Face) -> np.ndarray:
        """(2, 3) frame -> model-resolution crop."""
        return face.features.detection.transform * self._crop_scale()

    def _to_crop(self, mask: np.ndarray, face: Face) -> np.ndarray:
        r = self.resolution
        warped = cv2.warpAffine(mask.astype(np.float32), self._crop_transform(face), (r, r), flags=cv2.INTER_LINEAR)
        return (warped > 0.5).astype(np.float32)

    def _crop_window(self) -> np.ndarray:
        """The whole crop, less a thin border, so the feathered paste fades out inside the crop."""
        r = self.resolution
        window = np.zeros((r, r), np.float32)
        b = max(1, pixels(0.06, r))
        window[b:-b, b:-b] = 1
        return window

    def _region_mask(
        self, batch: dict[str, torch.Tensor], sides: Sequence[str], regions: Sequence[str], dilate_frac: float
    ) -> torch.Tensor:
        """(B, 1, R, R) union of `regions` over `sides`' parsings, dilated."""
        m = torch.zeros_like(batch[f"{sides[0]}_image"][:, :1])
        for side in sides:
            m = torch.maximum(m, union_mask(batch[f"{side}_parsing"], tuple(regions)).to(m))
        return dilate(m, pixels(dilate_frac, m.shape[-2]))

    def _one(
        self,
        task: str,
        spec: TaskSpec,
        batch: dict[str, torch.Tensor],
        target: Face,
        *,
        seed: int | None = 0,
        **options: Any,
    ) -> FaceXOutput:
        """A one-row task whose output fills the hole of I_R (edit, inpaint)."""
        return self._sample(task, spec, batch, [target], paste=None, seeds=[seed], **options)[0]

    def _sample(
        self,
        task: str,
        spec: TaskSpec,
        batch: dict[str, torch.Tensor],
        targets: Sequence[Face],
        *,
        paste: np.ndarray | None,
        steps: int,
        cfg_scale: float,
        scheduler: str,
        seeds: Sequence[int | None],
        noise: torch.Tensor | None = None,
        extra_hole: torch.Tensor | None = None,
        fusion_mask: torch.Tensor | None = None,
    ) -> list[FaceXOutput]:
        """Denoise the batch (row i for targets[i], seeded seeds[i]) and paste each crop back into its frame."""
        generators = [_generator(seed) for seed in seeds]
        if noise is None:  # each row's noise from its own seed, as if it were generated alone
            r = self.resolution
            noise = torch.cat([denoising.initial_noise(self.model, 1, r, r, g) for g in generators])
        images = {k.removesuffix("_image"): v for k, v in batch.items() if k.endswith("_image")}
        parsings = {s: batch[f"{s}_parsing"] for s in images}
        i_r, hole = self.model.region_assembler(images, parsings, spec, extra_hole)
        fusion = None
        if fusion_mask is not None:
            base = batch[f"{spec.base}_image"]
            fusion = denoising.RegionFusion(
                denoising.encode_target_latents(self.model, base), denoising.latent_mask(fusion_mask, self.model)
            )
        crops, _ = denoising.denoise(
            self.model, batch, spec, scheduler=scheduler, steps=steps, cfg_scale=cfg_scale,
            generator=generators, latents=noise, extra_hole=extra_hole, region_fusion=fusion,
        )  # fmt: skip
        outputs = []
        for i, (target, seed) in enumerate(zip(targets, seeds, strict=True)):
            row_paste = paste
            if fusion_mask is not None:
                row_paste = fusion_mask[i, 0].float().cpu().numpy()
            elif row_paste is None:
                row_paste = hole[i, 0].float().cpu().numpy()
                if not row_paste.any():
                    # nothing parsed to fill (the offline backend cannot see hair or ears): repaint the whole crop
                    self.warn(
                        f"{task}: no pixels of the chosen regions were parsed in {target.name}; "
                        "repainting the face crop"
                    )
                    row_paste = self._crop_window()
            outputs.append(self._paste(task, target, to_uint8(crops[i]), row_paste, i_r[i], hole[i], seed))
        return outputs

    def _paste(
        self,
        task: str,
        target: Face,
        crop: np.ndarray,
        paste: np.ndarray,
        i_r: torch.Tensor,
        hole: torch.Tensor,
        seed: int | None,
    ) -> FaceXOutput:
        """The generated crop pasted back into the target's frame through the feathered `paste` mask."""
        alpha_crop = self._feather(paste)
        alpha = cv2.warpAffine(
            alpha_crop, self._crop_transform(target), target.frame.shape[1::-1],
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )  # fmt: skip
        pasted = cv2.warpAffine(
            crop, self._crop_transform(target), target.frame.shape[1::-1],
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        frame = paste_back(target.frame, pasted, alpha)
        return FaceXOutput(
            image=Image.fromarray(frame),
            crop=Image.fromarray(crop),
            mask=alpha,
            inpaint_reference=Image.fromarray(to_uint8(i_r)),
            hole=hole[0].float().cpu().numpy(),
            task=task,
            seed=seed,
        )

    def _feather(self, mask: np.ndarray) -> np.ndarray:
        """Dilate by `paste_dilate`, then blur by `paste_feather` (fractions of the crop): a soft seam."""
        r = mask.shape[0]
        grow = pixels(self.paste_dilate, r)
        m = cv2.dilate(mask.astype(np.float32), np.ones((2 * grow + 1,) * 2, np.uint8)) if grow else mask
        radius = pixels(self.paste_feather, r)
        if radius:
            m = cv2.GaussianBlur(m, (2 * radius + 1, 2 * radius + 1), sigmaX=radius / 2)
        return np.clip(m, 0, 1).astype(np.float32)


def _generator(seed: int | None) -> torch.Generator:
    """A CPU generator for one row: seeded, or (seed None) from fresh entropy."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def identity_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two identity embeddings (1 = same direction)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def paste_back(frame: np.ndarray, generated: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """alpha-blend `generated` over `frame`; where alpha is 0 the frame's pixel is kept exactly."""
    a = alpha[..., None]
    blended = np.round(frame.astype(np.float32) * (1 - a) + generated.astype(np.float32) * a).astype(np.uint8)
    return np.where(a > 0, blended, frame)


def resolve_device(device: str | torch.device) -> str:
    name = str(device)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FaceXInputError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return name


def resolve_model(model: str | Path) -> Path:
    """A model folder, or `models:/<name>@<alias>` / `models:/<name>/<version>` resolved through MLflow."""
    text = str(model)
    if text.startswith("models:/"):
        return download_model_dir(text)
    folder = Path(model)
    if not folder.is_dir():
        raise FaceXInputError(
            f"model {folder}: folder not found; pass a folder written by FaceXModel.save_pretrained "
            "(e.g. data/models/swap after `dvc repro`) or a registry URI models:/<name>@<alias>"
        )
    return folder


def mixture_row(regions_by_side: dict[str, tuple[str, ...]], dilate: float = 0.03) -> TaskSpec:
    """Mixture editing: the edit row with each region taken from its own reference side (any side name works:
    encode_conditions reads `<side>_*` from the batch); the hole is the union of all edited regions over every side.
    """
    chosen = tuple(dict.fromkeys(r for names in regions_by_side.values() for r in names))
    regions = dict.fromkeys(ALL_REGIONS, "source")
    for side, names in regions_by_side.items():
        regions.update(dict.fromkeys(names, side))
    return dataclasses.replace(edit_row(chosen, dilate), regions=regions, hole_sides=("source", *regions_by_side))


def find_model_dir(root: Path) -> Path:
    """The folder holding config.json + facex_trainable.safetensors at or below `root`."""
    for config in sorted(root.rglob(CONFIG_NAME)) if root.is_dir() else []:
        if (config.parent / WEIGHTS_NAME).is_file():
            return config.parent
    raise FileNotFoundError(f"{root} holds no FaceX model folder ({CONFIG_NAME} + {WEIGHTS_NAME})")


def download_model_dir(uri: str) -> Path:
    """`models:/<name>@<alias>` (or /<version>) -> the local FaceX model folder, via the MLflow registry.

    The registry is the one MLFLOW_TRACKING_URI (or MLFLOW_REGISTRY_URI) points at; models are logged there by
    facex_model.pyfunc.log_model (the register stage).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from facex_model.mlflow_server import ServerUnreachableError, check_server

    try:
        check_server(mlflow.get_registry_uri())
    except ServerUnreachableError as err:
        raise FaceXInputError(f"model {uri}: {err}") from None
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as err:
        first = (str(err.message) or type(err).__name__).strip().splitlines()[0][:200]
        raise FaceXInputError(
            f"model {uri}: not found in the registry at {mlflow.get_registry_uri()} ({first}); "
            "check the name and alias, or set MLFLOW_TRACKING_URI to the registry that has it"
        ) from None
    try:
        return find_model_dir(local)
    except FileNotFoundError as err:
        raise FaceXInputError(f"model {uri}: {err}; was it logged with facex_model.pyfunc.log_model?") from None


def _check_regions(regions: Sequence[str]) -> tuple[str, ...]:
    unknown = [r for r in regions if r not in ALL_REGIONS]
    if unknown:
        raise FaceXInputError(f"unknown region(s) {', '.join(unknown)}; known: {_known()}")
    return tuple(regions)


def _known() -> str:
    return ", ".join(ALL_REGIONS)


__all__ = [
    "FACE_REGIONS", "HEAD_REGIONS", "TASKS", "Edit", "Face", "FaceMemo", "FaceXInputError", "FaceXOutput",
    "FaceXPipeline",
    "ImageInput", "NoFaceError", "identity_similarity", "image_grid", "load_image", "load_mask", "paste_back",
    "resolve_model",
]  # fmt: skip
