"""Benchmark: throughput of each paper extractor (frames/s at a batch size) on this machine's device.

    python benchmarks/paper_extractors.py [--models-dir DIR] [--device cuda] [--batch-size 64] [--rounds 5]

Without ``--models-dir`` it writes full-depth random-weight stand-ins (iresnet100, ResNet-50s: the
public architectures, so the timings are the real ones) into a temp dir. Each model runs on
``--batch-size`` aligned 512-px crops after one warm-up batch; the aligner (SCRFD stand-in or real
detector) runs frame by frame as insightface does. Not a test: timings vary by machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facex_data.extractors import AlignedFaces, ExtractorOptions, build_extractors  # noqa: E402
from facex_data.extractors.align import crop_template  # noqa: E402
from facex_data.extractors.nets.iresnet import IRESNET100  # noqa: E402
from facex_data.extractors.nets.resnet import RESNET50  # noqa: E402
from facex_data.standins import write_random_standins  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, rounds: int) -> float:
    fn()  # warm-up: cuDNN autotune, ONNX Runtime session init
    sync(device)
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    sync(device)
    return (time.perf_counter() - start) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64 if torch.cuda.is_available() else 4)
    parser.add_argument("--crop-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--arcface", choices=("pth", "onnx"), default="pth", help="stand-in format when generated")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        weights_dir = args.weights_dir
        if weights_dir is None:
            weights_dir = Path(tmp)
            # the ArcFace stand-in is iresnet100 and the ResNet-50s full depth: the public architectures
            write_random_standins(weights_dir, layers=RESNET50, arcface=args.arcface)
            if args.arcface == "pth":
                torch.manual_seed(0)
                from facex_data.extractors.nets.iresnet import IResNet

                torch.save(IResNet(IRESNET100).state_dict(), weights_dir / "arcface" / "glint360k_r100.pth")
        options = ExtractorOptions(crop_size=args.crop_size, weights_dir=weights_dir, device=args.device)
        extractors = build_extractors("paper", options)
        rng = np.random.default_rng(0)
        b, s = args.batch_size, args.crop_size
        points5 = np.stack([crop_template(s)] * b).astype(np.float32)
        faces = AlignedFaces(rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8), np.zeros((b, 68, 2), np.float32),
                             points5)  # fmt: skip
        frames = rng.integers(0, 256, (min(b, 8), 720, 1280, 3), dtype=np.uint8)
        rows = [
            (
                "detector (SCRFD + dlib 68, per frame, 720p)"
                + (" [stand-in graph: not representative]" if args.weights_dir is None else ""),
                len(frames),
                lambda: extractors.aligner(frames),
            ),
            ("identity (ArcFace r100: 112 + 128 crops)", b, lambda: extractors.identity(faces)),
            ("parsing (BiSeNet-19 at 512)", b, lambda: extractors.parsing(faces)),
            ("3DMM (Deep3DFaceRecon R50 at 224)", b, lambda: extractors.tdmm(faces)),
            ("gaze (L2CS R50 at 448)", b, lambda: extractors.gaze(faces)),
            ("all four (ExtractorSet.measure)", b, lambda: extractors.measure(faces)),
        ]
        name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()}"
        print(f"device: {name}, batch size {b}, crop {s}, {args.rounds} rounds after a warm-up")
        for label, n, fn in rows:
            seconds = timed(fn, args.device, args.rounds)
            print(f"{label:<45} {n / seconds:9.1f} frames/s   ({seconds * 1000:.0f} ms per batch of {n})")


if __name__ == "__main__":
    main()
