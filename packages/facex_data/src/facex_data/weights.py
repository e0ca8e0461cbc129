"""The weights dir: which third-party weights FaceX reads, where each goes, where users get it, and checks.

Nothing is ever downloaded. Which folder (:func:`resolve_weights_dir`), in this order: the pipeline
stages always use the params' ``weights.dir`` (a DVC-tracked parameter, so the environment can never
change what a stage computes); a library call or a command takes the folder it is given (``--weights-dir``),
else ``$FACEX_WEIGHTS_DIR``, else ``./weights``. Layout, relative to that folder::

    scrfd/det_10g.onnx                       face detector + 5 points (insightface buffalo_l)
    arcface/glint360k_r100.pth               ArcFace iresnet100, glint360k (arcface_torch backbone.pth)
      or arcface/glint360k_r100.onnx         the same network as ONNX (insightface antelopev2 glintr100.onnx)
    bisenet/79999_iter.pth                   BiSeNet face parsing, 19 CelebAMask-HQ classes
    deep3dfacerecon/epoch_20.pth             Deep3DFaceRecon ResNet-50 coefficient regressor
    deep3dfacerecon/similarity_Lm3D_all.mat  its 3-D landmark template (the crop is aligned to it)
    gaze/L2CSNet_gaze360.pkl                 L2CS-Net ResNet-50 gaze estimator
    stable-diffusion-v1-5/                   diffusers folder (model_index.json, unet/, vae/, ...)
    clip-vit-large-patch14/                  transformers CLIP folder (config.json, ...)
    inception/weights-inception-2015-12-05-6726825d.pth   FID Inception (evaluate.fid_features: inception)
    lpips/alexnet-owt-7be5be79.pth           torchvision's ImageNet AlexNet: LPIPS' trunk (benchmark, reconstruction)

Known-good hashes: upstream publishes none for these files, so the manifest pins none (``sha256``
None); ``facex weights check --pin`` records the hashes of the files you have in ``SHA256SUMS`` in the
weights dir (``sha256sum`` format) and later checks compare against it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from facex_data.extractors import sha256_file

WEIGHTS_DIR_ENV = "FACEX_WEIGHTS_DIR"
DEFAULT_WEIGHTS_DIR = "weights"
PINS_FILE = "SHA256SUMS"


@dataclass(frozen=True)
class WeightFile:
    """One file (or folder) users bring."""

    key: str
    path: str  # relative to the weights dir; a trailing "/" marks a folder
    what: str
    stages: tuple[str, ...]  # pipeline stages (and the setting under which) that read it
    source: str  # where users usually get it
    group: str = ""  # files of one group are alternatives: any one of them is enough
    sha256: str | None = None
    marker: str = ""  # for folders: a file that must exist inside

    @property
    def is_dir(self) -> bool:
        return self.path.endswith("/")


PAPER_EXTRACT = "extract (extractors: paper)"
MANIFEST: tuple[WeightFile, ...] = (
    WeightFile(
        "scrfd",
        "scrfd/det_10g.onnx",
        "SCRFD-10GF face detector with 5 keypoints",
        (f"{PAPER_EXTRACT}, detector: scrfd",),
        "insightface model pack buffalo_l (det_10g.onnx inside buffalo_l.zip), "
        "https://github.com/deepinsight/insightface/tree/master/python-package#model-zoo",
    ),
    WeightFile(
        "arcface_pth",
        "arcface/glint360k_r100.pth",
        "ArcFace iresnet100 trained on Glint360K (PyTorch)",
        (PAPER_EXTRACT,),
        "arcface_torch model zoo: glint360k_cosface_r100_fp16_0.1/backbone.pth, renamed, "
        "https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch#model-zoo",
        group="arcface",
    ),
    WeightFile(
        "arcface_onnx",
        "arcface/glint360k_r100.onnx",
        "ArcFace iresnet100 trained on Glint360K (ONNX)",
        (PAPER_EXTRACT,),
        "insightface model pack antelopev2 (glintr100.onnx inside antelopev2.zip), renamed, "
        "https://github.com/deepinsight/insightface/tree/master/python-package#model-zoo",
        group="arcface",
    ),
    WeightFile(
        "bisenet",
        "bisenet/79999_iter.pth",
        "BiSeNet face parsing, 19 CelebAMask-HQ classes",
        (PAPER_EXTRACT,),
        "face-parsing.PyTorch README (Google Drive link to 79999_iter.pth), "
        "https://github.com/zllrunning/face-parsing.PyTorch",
    ),
    WeightFile(
        "deep3d",
        "deep3dfacerecon/epoch_20.pth",
        "Deep3DFaceRecon ResNet-50 3DMM regressor (257 coefficients)",
        (PAPER_EXTRACT,),
        "Deep3DFaceRecon_pytorch pre-trained model (checkpoints/face_recon/epoch_20.pth), "
        "https://github.com/sicxu/Deep3DFaceRecon_pytorch#inference-with-a-pre-trained-model",
    ),
    WeightFile(
        "deep3d_lm3d",
        "deep3dfacerecon/similarity_Lm3D_all.mat",
        "Deep3DFaceRecon's 3-D landmark template",
        (PAPER_EXTRACT,),
        "BFM/similarity_Lm3D_all.mat in the Deep3DFaceRecon_pytorch repository, "
        "https://github.com/sicxu/Deep3DFaceRecon_pytorch",
    ),
    WeightFile(
        "gaze",
        "gaze/L2CSNet_gaze360.pkl",
        "L2CS-Net ResNet-50 gaze estimator (Gaze360, 90 bins)",
        (PAPER_EXTRACT,),
        "L2CS-Net pre-trained models (L2CSNet_gaze360.pkl), https://github.com/Ahmednull/L2CS-Net",
    ),
    WeightFile(
        "sd15",
        "stable-diffusion-v1-5/",
        "Stable Diffusion 1.5, diffusers layout",
        ("train", "finetune", "evaluate", "infer (weights.backbone: stable-diffusion-v1-5)"),
        "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5 (diffusers folder)",
        marker="model_index.json",
    ),
    WeightFile(
        "clip",
        "clip-vit-large-patch14/",
        "CLIP ViT-L/14 vision encoder, transformers layout",
        ("train", "finetune", "evaluate", "infer (weights.vision_encoder: clip-vit-large-patch14)"),
        "https://huggingface.co/openai/clip-vit-large-patch14",
        marker="config.json",
    ),
    WeightFile(
        "fid_inception",
        "inception/weights-inception-2015-12-05-6726825d.pth",
        "TensorFlow FID InceptionV3 (torch-fidelity's conversion)",
        ("evaluate (evaluate.fid_features: inception)",),
        "https://github.com/toshas/torch-fidelity/releases/tag/v0.2.0 (the file torchmetrics downloads elsewhere)",
    ),
    WeightFile(
        "lpips_alexnet",
        "lpips/alexnet-owt-7be5be79.pth",
        "torchvision's ImageNet AlexNet, the trunk of LPIPS (its v0.1 heads ship inside torchmetrics)",
        ("benchmark (reconstruction: the LPIPS column)",),
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth (torchvision's AlexNet_Weights.IMAGENET1K_V1)",
    ),
)
BY_KEY = {w.key: w for w in MANIFEST}


class MissingWeightsError(FileNotFoundError):
    """A stage needs weight files that are not in the weights dir (the message lists each, and the fix)."""


def resolve_weights_dir(weights_dir: str | Path | None = None) -> Path:
    """The weights dir: the one given (a stage always gives ``weights.dir``), else ``$FACEX_WEIGHTS_DIR``,
    else ``./weights``."""
    if weights_dir is not None and str(weights_dir) != "":
        return Path(weights_dir).expanduser()
    return Path(os.environ.get(WEIGHTS_DIR_ENV) or DEFAULT_WEIGHTS_DIR).expanduser()


def weight_path(weights_dir: Path, key: str) -> Path:
    return Path(weights_dir) / BY_KEY[key].path


def read_pins(weights_dir: Path) -> dict[str, str]:
    """``SHA256SUMS`` of the weights dir: relative path -> sha256 (empty when there is none)."""
    pins_file = Path(weights_dir) / PINS_FILE
    pins: dict[str, str] = {}
    if pins_file.is_file():
        for line in pins_file.read_text().splitlines():
            digest, _, name = line.strip().partition("  ")
            if digest and name:
                pins[name.lstrip("*")] = digest.lower()
    return pins


def write_pins(weights_dir: Path) -> dict[str, str]:
    """Record the sha256 of every manifest file present in ``SHA256SUMS``; returns what was written."""
    pins = {
        w.path: sha256_file.__wrapped__(Path(weights_dir) / w.path)
        for w in MANIFEST
        if not w.is_dir and (Path(weights_dir) / w.path).is_file()
    }
    text = "".join(f"{digest}  {name}\n" for name, digest in sorted(pins.items()))
    (Path(weights_dir) / PINS_FILE).write_text(text)
    return pins


@dataclass(frozen=True)
class WeightStatus:
    weight: WeightFile
    status: str  # "ok" (hash matches) | "present" (no hash pinned) | "missing" | "hash mismatch"
    sha256: str | None
    expected: str | None


def check_weights(weights_dir: Path) -> list[WeightStatus]:
    """Status of every manifest entry in ``weights_dir`` (files are hashed; folders checked by marker)."""
    weights_dir = Path(weights_dir)
    pins = read_pins(weights_dir)
    out = []
    for w in MANIFEST:
        path = weights_dir / w.path
        if w.is_dir:
            present = (path / w.marker).is_file()
            out.append(WeightStatus(w, "present" if present else "missing", None, None))
            continue
        if not path.is_file():
            out.append(WeightStatus(w, "missing", None, w.sha256 or pins.get(w.path)))
            continue
        digest = sha256_file.__wrapped__(path)  # uncached: the file may have changed since it was last hashed
        expected = w.sha256 or pins.get(w.path)
        status = "present" if expected is None else ("ok" if digest == expected else "hash mismatch")
        out.append(WeightStatus(w, status, digest, expected))
    return out


def paper_extract_keys(detector: str = "scrfd") -> list[tuple[str, ...]]:
    """What ``extractors: paper`` reads: groups of alternatives (any one file of a group is enough)."""
    groups: list[tuple[str, ...]] = [("scrfd",)] if detector == "scrfd" else []
    return groups + [("arcface_pth", "arcface_onnx"), ("bisenet",), ("deep3d",), ("deep3d_lm3d",), ("gaze",)]


def require_weights(weights_dir: Path, groups: list[tuple[str, ...]], stage: str) -> dict[str, Path]:
    """Paths of the files a stage needs (first present alternative of each group), or MissingWeightsError
    naming every missing file, where it goes and where to get it. Runs before any work starts."""
    weights_dir = Path(weights_dir)
    found: dict[str, Path] = {}
    lines = []
    for group in groups:
        present = [k for k in group if weight_path(weights_dir, k).exists()]
        if present:
            found[BY_KEY[present[0]].group or present[0]] = weight_path(weights_dir, present[0])
            continue
        alternatives = " or ".join(str(weight_path(weights_dir, k)) for k in group)
        sources = "; ".join(BY_KEY[k].source for k in group)
        lines.append(f"  - {BY_KEY[group[0]].what}: put it at {alternatives}\n    get it from: {sources}")
    if lines:
        raise MissingWeightsError(
            f"stage {stage!r} needs weight files that are not in the weights dir {weights_dir}:\n"
            + "\n".join(lines)
            + "\nThe weights dir is weights.dir in the params file (stages), else --weights-dir, else "
            f"${WEIGHTS_DIR_ENV}; `facex weights check --weights-dir DIR` shows what is there. "
            "Nothing is downloaded automatically."
        )
    return found


def format_table(statuses: list[WeightStatus], weights_dir: Path) -> str:
    """The table `facex weights check` prints, then where to get each missing file."""
    rows = [("weight", "status", "needed by", "sha256")]
    for s in statuses:
        rows.append((s.weight.path, s.status, "; ".join(s.weight.stages), (s.sha256 or "")[:16]))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"weights dir: {weights_dir}"]
    lines += [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows]
    for s in statuses:
        if s.status == "missing":
            lines.append(f"missing {s.weight.path}: {s.weight.what}; get it from {s.weight.source}")
        elif s.status == "hash mismatch":
            lines.append(
                f"hash mismatch {s.weight.path}: sha256 {s.sha256}, expected {s.expected} "
                f"({PINS_FILE} or the manifest); the file is corrupt or a different release: re-download it"
            )
    return "\n".join(lines)
