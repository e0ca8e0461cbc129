"""Random-weight stand-ins for the paper's weight files, in the upstream formats and key layouts.

For tests and for trying the ``paper`` profile end to end on a machine without the real weights: the
files load through the same loaders as the public checkpoints (only the values are random, and by
default the ResNets have one block per stage, which the loaders read from the keys). The outputs are
meaningless; the shapes, dtypes and code paths are the real ones. Deterministic for a given seed.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facex_data.extractors.align import ARCFACE_112
from facex_data.extractors.nets.bisenet import BiSeNet
from facex_data.extractors.nets.heads import L2CS, ReconNet
from facex_data.extractors.nets.iresnet import ARCFACE_INPUT, IRESNET100, IResNet
from facex_data.extractors.nets.resnet import RESNET50
from facex_data.weights import weight_path, write_pins

SMALL = [1, 1, 1, 1]
SCRFD_STRIDES = (8, 16, 32)
# five keypoints around an anchor, in strides (eyes, nose, mouth corners): a face-shaped pattern
SCRFD_KPS = np.array([[-0.7, -0.5], [0.7, -0.5], [0.0, 0.2], [-0.55, 0.9], [0.55, 0.9]], np.float32)


class TinyScrfd(nn.Module):
    """A random-weight network with SCRFD's ONNX signature (3 strides x 2 anchors, with keypoints):
    outputs scores (N, 1) per stride, then box distances (N, 4), then keypoint offsets (N, 10), in
    strides. The biases make every anchor a confident 4-stride box with a face-shaped 5-point pattern."""

    def __init__(self) -> None:
        super().__init__()
        self.score = nn.ModuleList(nn.Conv2d(3, 2, 1) for _ in SCRFD_STRIDES)
        self.bbox = nn.ModuleList(nn.Conv2d(3, 8, 1) for _ in SCRFD_STRIDES)
        self.kps = nn.ModuleList(nn.Conv2d(3, 20, 1) for _ in SCRFD_STRIDES)
        with torch.no_grad():
            for convs, bias in (
                (self.score, [4.0] * 2),
                (self.bbox, [2.0] * 8),
                (self.kps, np.tile(SCRFD_KPS.reshape(-1), 2).tolist()),
            ):
                for conv in convs:
                    conv.weight.mul_(0.01)
                    conv.bias.copy_(torch.tensor(bias))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        scores, boxes, kps = [], [], []
        for i, stride in enumerate(SCRFD_STRIDES):
            p = F.avg_pool2d(x, stride)

            def flat(t: torch.Tensor, width: int) -> torch.Tensor:
                return t.permute(0, 2, 3, 1).reshape(-1, width)

            scores.append(flat(torch.sigmoid(self.score[i](p)), 1))
            boxes.append(flat(self.bbox[i](p), 4))
            kps.append(flat(self.kps[i](p), 10))
        return (*scores, *boxes, *kps)


def export_onnx(
    model: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_names: list[str], dynamic_axes: dict
) -> Path:
    """torch.onnx.export with the TorchScript exporter (the dynamo one needs onnxscript, not installed)."""
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            buf,
            dynamo=False,
            input_names=[input_name],
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=17,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def write_scrfd(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    names = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in SCRFD_STRIDES]
    return export_onnx(
        TinyScrfd(),
        torch.zeros(1, 3, 64, 64),
        path,
        "input.1",
        names,
        {"input.1": {2: "height", 3: "width"}, **{n: {0: "anchors"} for n in names}},
    )


def write_arcface_onnx(path: Path, layers: list[int] = SMALL, seed: int = 0, dynamic_batch: bool = True) -> Path:
    """An iresnet exported as insightface's recognition ONNX models are: one input, the embedding out
    (``dynamic_batch=False``: a graph fixed to one image, as some exports are)."""
    torch.manual_seed(seed)
    example = torch.zeros(1, 3, ARCFACE_INPUT, ARCFACE_INPUT)
    axes = {"input.1": {0: "batch"}, "embedding": {0: "batch"}} if dynamic_batch else {}
    return export_onnx(IResNet(layers), example, path, "input.1", ["embedding"], axes)


def save(obj: object, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def write_lm3d(path: Path) -> Path:
    """A similarity_Lm3D_all.mat: 68 x 3 landmarks (y up) whose 5 alignment points form a frontal face."""
    from scipy.io import savemat

    unit = (ARCFACE_112 - 56.0) / 56.0 * np.array([1.0, -1.0])
    lm = np.zeros((68, 3))
    for idx, point in zip(([36, 39], [42, 45], [30], [48], [54]), unit):
        lm[idx, :2] = point
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"lm": lm})
    return path


def write_random_standins(
    weights_dir: Path, layers: list[int] = SMALL, arcface: str = "pth", pupil: bool = False, seed: int = 0
) -> dict[str, Path]:
    """Every file ``extractors: paper`` reads, random weights in upstream formats, plus SHA256SUMS.

    ``layers``: blocks per ResNet stage of the iresnet, Deep3DFaceRecon and L2CS stand-ins (the public
    files: iresnet100 [3, 13, 30, 3], ResNet-50 [3, 4, 6, 3]). ``arcface``: "pth", "onnx" or "both".
    """
    weights_dir = Path(weights_dir)
    torch.manual_seed(seed)
    paths = {"scrfd": write_scrfd(weight_path(weights_dir, "scrfd"), seed)}
    if arcface in ("pth", "both"):
        torch.manual_seed(seed)
        paths["arcface_pth"] = save(IResNet(layers).state_dict(), weight_path(weights_dir, "arcface_pth"))
    if arcface in ("onnx", "both"):
        paths["arcface_onnx"] = write_arcface_onnx(weight_path(weights_dir, "arcface_onnx"), layers, seed)
    torch.manual_seed(seed)
    paths["bisenet"] = save(BiSeNet(19).state_dict(), weight_path(weights_dir, "bisenet"))
    torch.manual_seed(seed)
    recon = ReconNet(layers, pupil=pupil).state_dict()
    paths["deep3d"] = save({"net_recon": recon, "epoch": 20}, weight_path(weights_dir, "deep3d"))
    paths["deep3d_lm3d"] = write_lm3d(weight_path(weights_dir, "deep3d_lm3d"))
    torch.manual_seed(seed)
    paths["gaze"] = save(L2CS(layers, 90).state_dict(), weight_path(weights_dir, "gaze"))
    write_pins(weights_dir)
    return paths


__all__ = ["IRESNET100", "RESNET50", "SMALL", "TinyScrfd", "write_arcface_onnx", "write_random_standins", "write_scrfd"]
