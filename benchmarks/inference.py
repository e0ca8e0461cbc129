"""Inference cost on the real SD-1.5 architecture (published configs, random weights), issue #7's benchmark.

From one run it prints:
1. the FaceX denoising loop (`facex_model.denoising.denoise_latents`: FRC installed, f_SD encoded beforehand,
   cross-attention keys/values cached) against diffusers' own loop (`StableDiffusionPipeline` with precomputed
   77-token text-like `prompt_embeds`, `output_type="latent"`) on the same U-Net with FRC removed, same scheduler,
   steps, CFG scale and initial noise; timings interleaved, median and min of wall and process-CPU time, and their
   ratio (goal <= 1.10);
2. the end-to-end time for one face swap split into extraction (offline backend, source + target photo), condition
   encoding (FORD/FORS/SD adapter incl. the CLIP ViT-L/14 vision tower), denoising and VAE decode.

Run: `make bench-infer` (256 px, 10 steps). On a shared CPU, `--steps` lowers the cost; the ratio is per step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from random_backbone import random_backbone  # benchmarks/ is sys.path[0] when the script runs

from facex_model import denoising
from facex_model.features import backend_config, batch_to, collate_sides
from facex_model.model import FaceXConfig, FaceXModel
from facex_model.pipeline import FaceXPipeline

TEXT_TOKENS = 77  # CLIP text encoder length SD-1.5 is used with


def portraits() -> tuple[np.ndarray, np.ndarray]:
    """Two real photos shipped inside installed packages (the demo clips' portraits)."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    return skimage.data.astronaut(), hopper


def build_model(tiny: bool, resolution: int) -> FaceXModel:
    """FaceXModel over an in-memory random backbone: SD-1.5 U-Net + VAE + CLIP ViT-L/14 vision (or the tiny ones)."""
    backbone = random_backbone(tiny)
    overrides = backend_config("offline") | {"resolution": resolution}
    if tiny:
        overrides |= {"rep_dim": 32, "hidden_dim": 32, "inp_channels": (16, 32, 32), "inp_grid": 4, "frc_heads": 4}
    config = FaceXConfig(backbone_path="<in memory>", **overrides)
    return FaceXModel(config, backbone=backbone).eval()


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """-> (wall s, process CPU s); CPU time is far less disturbed by other jobs on a shared machine."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def summary(label: str, runs: list[tuple[float, float]]) -> tuple[float, float]:
    wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
    every = ", ".join(f"{r[0]:.2f}" for r in runs)
    print(f"  {label:<58} wall median {wall:8.2f} s  CPU median {cpu:8.2f} s  (wall: {every})")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed loops per variant (after a 1-step warm-up)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale (both loops)")
    parser.add_argument("--scheduler", choices=tuple(denoising.SCHEDULERS), default="ddim")
    parser.add_argument("--tiny", action="store_true", help="tiny backbone: checks the script, numbers mean nothing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    built = time.perf_counter()
    model = build_model(args.tiny, args.resolution)
    facex = FaceXPipeline(model, crop_size=256)
    plain = StableDiffusionPipeline(
        vae=model.vae, text_encoder=None, tokenizer=None, unet=model.unet,
        scheduler=denoising.make_scheduler(model, args.scheduler), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    plain.set_progress_bar_config(disable=True)
    arch = "tiny" if args.tiny else "SD-1.5 U-Net + VAE, CLIP ViT-L/14 vision"
    print(
        f"built {arch} (random weights) + FaceX in {time.perf_counter() - built:.1f} s; torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads; {args.resolution} px, {args.steps} {args.scheduler} steps, "
        f"CFG {args.cfg} (U-Net batch 2 per step)"
    )

    source, target = portraits()
    with torch.no_grad():
        t_extract = timed(lambda: (facex.detect(source, "source"), facex.detect(target, "target")))
        src_face, tgt_face = facex.detect(source, "source"), facex.detect(target, "target")
        batch = batch_to(
            collate_sides([{"source": facex.face_inputs(src_face), "target": facex.face_inputs(tgt_face)}]), "cpu"
        )
        denoising.encode(model, batch, "swap")  # warm-up
        t_encode = timed(lambda: denoising.encode(model, batch, "swap"))
        f_sd = denoising.encode(model, batch, "swap")
    noise = denoising.initial_noise(model, 1, args.resolution, args.resolution, torch.Generator().manual_seed(0))
    cross_dim = model.unet.config.cross_attention_dim
    text = torch.randn(1, TEXT_TOKENS, cross_dim, generator=torch.Generator().manual_seed(1))
    null_text = torch.zeros_like(text)

    def facex_loop(steps: int) -> torch.Tensor:
        assert model.frc.installed
        # the scheduler object diffusers' pipeline holds (it normalises the config on construction): same timesteps
        return denoising.denoise_latents(model, f_sd, noise, scheduler=plain.scheduler, steps=steps, cfg_scale=args.cfg)

    def diffusers_loop(steps: int) -> torch.Tensor:
        model.frc.remove()
        try:
            return plain(
                prompt_embeds=text, negative_prompt_embeds=null_text, num_inference_steps=steps,
                guidance_scale=args.cfg, latents=noise.clone(), height=args.resolution, width=args.resolution,
                output_type="latent",
            ).images  # fmt: skip
        finally:
            model.frc.install(model.unet)

    print(f"denoising loop, {args.steps} steps ({args.repeats} interleaved repeats after a 1-step warm-up each):")
    diffusers_loop(1)
    facex_loop(1)
    runs: dict[str, list[tuple[float, float]]] = {"diffusers": [], "facex": []}
    latents = noise
    for _ in range(args.repeats):
        runs["diffusers"].append(timed(lambda: diffusers_loop(args.steps)))
        start, cpu = time.perf_counter(), time.process_time()
        latents = facex_loop(args.steps)
        runs["facex"].append((time.perf_counter() - start, time.process_time() - cpu))
    d_wall, d_cpu = summary(f"diffusers StableDiffusionPipeline, {TEXT_TOKENS} text tokens", runs["diffusers"])
    f_wall, f_cpu = summary(f"FaceX denoise_latents (FRC, f_SD {f_sd.shape[1]} tokens, K/V cached)", runs["facex"])
    ratio = f_cpu / d_cpu
    min_ratio = min(r[1] for r in runs["facex"]) / min(r[1] for r in runs["diffusers"])
    print(
        f"  ratio FaceX / diffusers: CPU median {ratio:.3f} (goal <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'}), "
        f"CPU min/min {min_ratio:.3f}, wall median {f_wall / d_wall:.3f}"
    )

    with torch.no_grad():
        denoising.decode(model, latents)  # warm-up
        t_decode = timed(lambda: denoising.decode(model, latents))
    split = {
        "extraction (source + target, offline backend)": t_extract,
        "condition encoding (f_SD, once)": t_encode,
        f"denoising ({args.steps} steps, median)": (f_wall, f_cpu),
        "VAE decode": t_decode,
    }
    total_wall, total_cpu = sum(v[0] for v in split.values()), sum(v[1] for v in split.values())
    print(f"end to end, one {args.resolution} px face swap (paste-back excluded):")
    for label, (wall, cpu) in split.items():
        print(f"  {label:<48} wall {wall:8.2f} s  CPU {cpu:8.2f} s  ({100 * wall / total_wall:5.1f} % of wall)")
    print(f"  {'total':<48} wall {total_wall:8.2f} s  CPU {total_cpu:8.2f} s")


if __name__ == "__main__":
    main()
