"""FaceX at SD-1.5 scale on one GPU: training step, inference, the paper's extractors; and (--learn) whether the
embedded miniature makes faces when given 20-50x the steps two CPU cores afford. One call, one table at the end.

    python benchmarks/gpu.py                 # train / infer / extract sections (about 5 min on one H200)
    python benchmarks/gpu.py --learn         # the learning check (at most ~4 min): needs --learn-data
    python benchmarks/gpu.py --smoke         # every section at tiny shapes on the CPU (the test suite runs this)
    python benchmarks/gpu.py --export-learn-data data/learn.npz   # on the CPU machine, from data/shards

Every model is the published architecture with random weights (SD-1.5 U-Net and VAE, CLIP ViT-L/14 vision, the
paper's extractor networks): the numbers are speed, not quality, except in --learn. The script imports only what
the GPU machine has (torch, transformers, numpy, opencv, torchmetrics) plus diffusers, carried as a wheel (README
"GPU benchmark"); no Ray, MLflow, webdataset or decord. With $OUT set, the table is also written to
$OUT/gpu_benchmark.json (--learn: $OUT/gpu_learn.json and its grid $OUT/learn_grid.png), row by row.

Goals printed beside the figures (ratios measured in the same run):
- FaceX training step <= 1.0x a plain SD-1.5 U-Net training step at the same shapes;
- >= 400 training samples/s at 256 px bf16 with precomputed latents, MFU >= 40 % of the measured bf16 matmul rate;
- inference <= 1.10x diffusers' plain loop per step, and 25 steps at 256 px < 0.6 s per image at batch 1;
- the four paper extractor networks together >= 1,000 aligned frames/s.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for src in ("facex_data", "facex_model", "facex_train"):  # the GPU machine has the tree, not the packages installed
    sys.path.insert(0, str(REPO / "packages" / src / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

GOALS = {"train_ratio": 1.0, "train_samples_per_s": 400.0, "mfu": 0.40, "infer_ratio": 1.10, "infer_s_256": 0.6,
         "extract_fps": 1000.0}  # fmt: skip
TEXT_TOKENS = 77  # SD-1.5's CLIP text context length
# a cartoon parsing map (BiSeNet-19 ids: hair, skin, brow, eye, nose, lip, ear), boxes as fractions of the crop
FACE_BOXES = {17: (0.05, 0.35, 0.2, 0.8), 1: (0.25, 0.85, 0.25, 0.75), 2: (0.38, 0.42, 0.3, 0.45),
              4: (0.45, 0.5, 0.3, 0.45), 10: (0.5, 0.62, 0.45, 0.55), 12: (0.68, 0.72, 0.4, 0.6),
              7: (0.45, 0.6, 0.18, 0.25)}  # fmt: skip


class Table:
    """Rows of (section, what, value, unit, goal): printed as they come and as a table last; with $OUT set, written
    to $OUT/<name> after every row, so a run cut short by its time limit still brings back what it measured."""

    def __init__(self, name: str = "gpu_benchmark.json", meta: dict | None = None) -> None:
        self.rows: list[dict] = []
        self.name = name
        self.meta = meta or {}

    def add(self, section: str, what: str, value: float | None, unit: str = "", goal: str = "") -> None:
        self.rows.append({"section": section, "what": what, "value": value, "unit": unit, "goal": goal})
        shown = "-" if value is None else f"{value:.4g}"
        print(f"  [{section}] {what}: {shown} {unit} {goal}".rstrip(), flush=True)
        self.write()

    def render(self) -> str:
        width = max(len(r["what"]) for r in self.rows) if self.rows else 10
        lines = [f"{'section':<9} {'measure':<{width}} {'value':>12} {'unit':<12} goal"]
        for r in self.rows:
            value = "-" if r["value"] is None else f"{r['value']:.4g}"
            lines.append(f"{r['section']:<9} {r['what']:<{width}} {value:>12} {r['unit']:<12} {r['goal']}")
        return "\n".join(lines)

    def write(self) -> None:
        out = os.environ.get("OUT")
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / self.name).write_text(json.dumps({**self.meta, "rows": self.rows}, indent=1) + "\n")

    def section(self, name: str, run: Callable[[], None]) -> bool:
        """Run one section; if it fails, its error becomes a row (the traceback goes to stderr) and the next section
        still runs: a lent GPU's minutes are too few to lose every figure to one section's first contact with CUDA."""
        try:
            run()
            return True
        except Exception as error:  # noqa: BLE001 - reported as a row, and the call's exit status says so
            traceback.print_exc()
            self.add(name, f"FAILED: {type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}",
                     None)  # fmt: skip
            return False


def verdict(value: float, goal: float, higher: bool) -> str:
    ok = value >= goal if higher else value <= goal
    return f"(goal {'>=' if higher else '<='} {goal:g}: {'met' if ok else 'NOT met'})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_rate(device: torch.device, smoke: bool) -> float:
    """Measured bf16 matmul FLOP/s (one large product, the device's practical peak for MFU)."""
    n = 256 if smoke else 8192
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    seconds = timed(lambda: a @ b, device, repeats=3 if smoke else 10, warmup=1 if smoke else 3)
    return 2 * n**3 / seconds


# --- models at the published shapes (or tiny ones in --smoke) ------------------------------------------------
def backbone(smoke: bool, device: torch.device):
    from random_backbone import random_backbone  # benchmarks/ is sys.path[0] when the script runs

    return random_backbone(tiny=smoke, device=device)


def facex_model(found, smoke: bool, resolution: int, device: torch.device):
    from facex_model.features import backend_config
    from facex_model.model import FaceXConfig, FaceXModel

    sizes = (dict(rep_dim=32, hidden_dim=32, inp_channels=(16, 32), inp_grid=4, frc_heads=4) if smoke else
             dict(rep_dim=768, hidden_dim=768, inp_channels=(64, 128, 256, 512), inp_grid=8, frc_heads=8))  # fmt: skip
    config = FaceXConfig(backbone_path="<random>", **backend_config("paper"), **sizes, resolution=resolution,
                         train_vision_encoder=True, task="headswap")  # fmt: skip
    torch.manual_seed(0)
    return FaceXModel(config, backbone=found).to(device)


def paper_batch(model, batch: int, resolution: int, device: torch.device, latents: bool) -> dict:
    """Random inputs shaped as the paper backend's shards give them (paired parsing maps with every region)."""
    from facex_data import schema

    g = torch.Generator().manual_seed(0)
    out = {}
    r = resolution
    for side in ("source", "target"):
        parsing = torch.zeros(batch, r, r, dtype=torch.long)
        for cls, (y0, y1, x0, x1) in FACE_BOXES.items():
            parsing[:, int(y0 * r) : int(y1 * r), int(x0 * r) : int(x1 * r)] = cls
        out[f"{side}_image"] = torch.rand(batch, 3, r, r, generator=g) * 2 - 1
        out[f"{side}_parsing"] = parsing
        out[f"{side}_id"] = torch.randn(batch, schema.IDMAP_SHAPE[1] * schema.IDMAP_SHAPE[2], schema.ID_DIM["paper"],
                                        generator=g)  # fmt: skip
        for name, dim in model.config.vector_dims.items():
            if dim:
                out[f"{side}_{name}"] = torch.randn(batch, dim, generator=g)
    if latents:
        factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
        out["target_latent"] = torch.randn(batch, 2 * model.vae.config.latent_channels, r // factor, r // factor,
                                           generator=g)  # fmt: skip
    return {k: v.to(device) for k, v in out.items()}


LOW_PRECISION = False  # --bf16: the GPU's precision path (bf16 training autocast and inference weights, fp16
# extractor autocast) on whatever device runs, so that --smoke on the CPU exercises the dtypes a GPU run meets


def low_precision(device: torch.device) -> bool:
    return device.type == "cuda" or LOW_PRECISION


def autocast(device: torch.device, dtype: torch.dtype = torch.bfloat16):
    return torch.autocast(device.type, dtype=dtype) if low_precision(device) else contextlib.nullcontext()


def optimizer(params, device: torch.device):
    fused = device.type == "cuda"  # one kernel for the whole update
    return torch.optim.AdamW(params, lr=1e-5, fused=fused)


def step_flops(step: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def step_profile(step: Callable[[], object], device: torch.device, seconds: float, name: str,
                 steps: int = 2) -> tuple[float, float | None]:
    """Profile `steps` calls of a warm training step: (aten calls per step, nested ones included; the share of the
    unprofiled step time `seconds` that GPU kernels run, None off CUDA). A step whose kernels fill a small share
    of its time waits on per-operation launch and Python overhead: fewer, larger operations (torch.compile, CUDA
    graphs, larger batches) are then the lever, not faster kernels. The top operations by GPU and CPU time go to
    $OUT/train_profile.txt."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    events = prof.key_averages()
    calls = sum(e.count for e in events if e.key.startswith("aten::")) / steps
    busy = None
    if device.type == "cuda":
        # kernel rows only: an operator's row repeats the device time of the kernels it launched
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.self_device_time_total for e in kernels) / steps / 1e6 / seconds
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        sorts = ("self_device_time_total", "self_cpu_time_total") if device.type == "cuda" else ("self_cpu_time_total",)
        text = "\n".join(f"{name}, sorted by {key} ({steps} steps)\n{events.table(sort_by=key, row_limit=25)}"
                         for key in sorts)  # fmt: skip
        with open(Path(out) / "train_profile.txt", "a") as f:
            f.write(text + "\n\n")
    return calls, busy


def _facex_step(model, batch: dict, opt, generator: torch.Generator, device: torch.device) -> None:
    with autocast(device):
        loss = model.training_loss(batch, generator=generator)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _plain_step(unet, x: torch.Tensor, context: torch.Tensor, opt, device: torch.device) -> None:
    t = torch.randint(0, 1000, (len(x),), device=device)
    with autocast(device):
        loss = (unet(x, t, encoder_hidden_states=context).sample.float() - x).pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def training_section(table: Table, smoke: bool, device: torch.device, peak: float, compile_mode: str | None,
                     micro_batches: tuple[int, ...] = (8, 32, 64)) -> None:
    resolution = 32 if smoke else 256
    found = backbone(smoke, device)
    model = facex_model(found, smoke, resolution, device)
    if device.type == "cuda":
        model.unet.to(memory_format=torch.channels_last)
    if compile_mode:  # the U-Net and the CLIP vision encoder: FaceX's two large networks
        model.unet.compile(mode=compile_mode)
        model.image_encoder.compile(mode=compile_mode)
    model.train()
    opt = optimizer(model.trainable_parameters(), device)
    generator = torch.Generator().manual_seed(0)
    cross = found.unet.config.cross_attention_dim
    repeats, warmup = (2, 1) if smoke else (10, 3)
    plain = backbone(smoke, device).unet.requires_grad_(True).train()  # every U-Net weight trainable, as SD's training
    if device.type == "cuda":
        plain.to(memory_format=torch.channels_last)
    if compile_mode:  # both or neither: the ratio compares like with like
        plain.compile(mode=compile_mode)
    plain_opt = optimizer(plain.parameters(), device)
    for micro in ((2,) if smoke else micro_batches):  # 64 last: the step times of 8 and 32 first, should it not fit
        facex_seconds = 0.0
        for latents in (False, True):
            batch = paper_batch(model, micro, resolution, device, latents)
            step = functools.partial(_facex_step, model, batch, opt, generator, device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = timed(step, device, repeats, warmup)
            label = f"FaceX step, micro-batch {micro}, {'precomputed latents' if latents else 'VAE encode'}"
            goal = verdict(micro / seconds, GOALS["train_samples_per_s"], True) if latents and micro == 32 else ""
            table.add("train", f"{label}: samples/s", micro / seconds, "samples/s", goal)
            table.add("train", f"{label}: step", seconds * 1000, "ms")
            if device.type == "cuda":
                table.add("train", f"{label}: peak memory", torch.cuda.max_memory_allocated() / 2**30, "GiB")
            if latents:
                facex_seconds = seconds
                flops = step_flops(step)
                table.add("train", f"FaceX micro-batch {micro}: model FLOPs per sample", flops / micro / 1e9, "GFLOP")
                mfu = flops / seconds / peak
                table.add("train", f"FaceX micro-batch {micro}: MFU", mfu * 100, "%",
                          verdict(mfu, GOALS["mfu"], True) if micro == 32 else "")  # fmt: skip
                if micro == (2 if smoke else 32):
                    facex_profile = step_profile(step, device, seconds, f"FaceX step, micro-batch {micro}")
        # a plain SD-1.5 U-Net training step at the same shapes: every U-Net weight trainable, text-width context
        size = batch["target_latent"].shape[-1]
        x = torch.randn(micro, 4, size, size, device=device)
        context = torch.randn(micro, TEXT_TOKENS, cross, device=device)
        plain_seconds = timed(functools.partial(_plain_step, plain, x, context, plain_opt, device), device, repeats,
                              warmup)  # fmt: skip
        ratio = facex_seconds / plain_seconds
        table.add("train", f"plain SD-1.5 U-Net step, micro-batch {micro}", plain_seconds * 1000, "ms")
        table.add("train", f"FaceX / plain U-Net step, micro-batch {micro}", ratio, "x",
                  verdict(ratio, GOALS["train_ratio"], False))  # fmt: skip
        if micro == (2 if smoke else 32):
            plain_step = functools.partial(_plain_step, plain, x, context, plain_opt, device)
            plain_profile = step_profile(plain_step, device, plain_seconds, f"plain U-Net step, micro-batch {micro}")
            for label, (calls, busy) in (("FaceX", facex_profile), ("plain U-Net", plain_profile)):
                table.add("train", f"{label} step, micro-batch {micro}: aten calls per step", calls, "calls")
                if busy is not None:
                    table.add("train", f"{label} step, micro-batch {micro}: GPU kernels' share of the step",
                              busy * 100, "%")  # fmt: skip


def _facex_loop(model, f_sd: torch.Tensor, noise: torch.Tensor, scheduler, steps: int) -> torch.Tensor:
    from facex_model import denoising

    return denoising.denoise_latents(model, f_sd, noise, scheduler=scheduler, steps=steps, cfg_scale=3.0)


def _diffusers_loop(model, plain, text: torch.Tensor, noise: torch.Tensor, steps: int, resolution: int):
    model.frc.remove()
    try:
        return plain(prompt_embeds=text, negative_prompt_embeds=torch.zeros_like(text), num_inference_steps=steps,
                     guidance_scale=3.0, latents=noise.to(text.device, text.dtype), height=resolution,
                     width=resolution, output_type="latent").images  # fmt: skip
    finally:
        model.frc.install(model.unet)


def inference_section(table: Table, smoke: bool, device: torch.device) -> None:
    from diffusers import StableDiffusionPipeline

    from facex_model import denoising

    found = backbone(smoke, device)
    steps = 2 if smoke else 25
    dtype = torch.bfloat16 if low_precision(device) else torch.float32
    for resolution in ((32,) if smoke else (256, 512)):
        model = facex_model(found, smoke, resolution, device).eval().to(dtype)
        plain = StableDiffusionPipeline(
            vae=model.vae, text_encoder=None, tokenizer=None, unet=model.unet,
            scheduler=denoising.make_scheduler(model, "ddim"), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )  # fmt: skip
        plain.set_progress_bar_config(disable=True)
        for batch_size in ((1,) if smoke else (1, 8)):
            batch = paper_batch(model, batch_size, resolution, device, latents=False)
            batch = {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}
            with torch.no_grad():
                f_sd = denoising.encode(model, batch, "swap")
            noise = denoising.initial_noise(model, batch_size, resolution, resolution, torch.Generator().manual_seed(0))
            cross = found.unet.config.cross_attention_dim
            text = torch.randn(batch_size, TEXT_TOKENS, cross, device=device, dtype=dtype)
            repeats = 1 if smoke else 3
            d = timed(functools.partial(_diffusers_loop, model, plain, text, noise, steps, resolution), device, repeats)
            f = timed(functools.partial(_facex_loop, model, f_sd, noise, plain.scheduler, steps), device, repeats)
            label = f"{resolution} px, batch {batch_size}, {steps} DDIM steps, CFG"
            goal = verdict(f, GOALS["infer_s_256"], False) if resolution == 256 and batch_size == 1 else ""
            table.add("infer", f"FaceX {label}: s/image", f / batch_size, "s", goal)
            table.add("infer", f"diffusers loop {label}: s/image", d / batch_size, "s")
            table.add("infer", f"FaceX / diffusers per step, {resolution} px, batch {batch_size}", f / d, "x",
                      verdict(f / d, GOALS["infer_ratio"], False))  # fmt: skip


def extractor_section(table: Table, smoke: bool, device: torch.device) -> None:
    """The paper backend's networks at the published depths (random weights), batched, in their configured precision
    (fp16 autocast on CUDA): iresnet100 on the 112 + 128 crops with the layer-4 map, BiSeNet at 512, Deep3DFaceRecon
    ResNet-50 at 224, L2CS ResNet-50 at 448. Crop making is CPU work outside these figures."""
    from facex_data.extractors.nets.bisenet import BiSeNet
    from facex_data.extractors.nets.heads import L2CS, ReconNet
    from facex_data.extractors.nets.iresnet import IRESNET100, IResNet
    from facex_data.extractors.nets.resnet import RESNET50

    small = [1, 1, 1, 1]
    batch = 2 if smoke else 64
    nets = {
        "ArcFace iresnet100 (112 + 128 px)": (IResNet(small if smoke else IRESNET100), [112, 128]),
        "BiSeNet-19 (512 px)": (BiSeNet(19), [64 if smoke else 512]),
        "Deep3DFaceRecon R50 (224 px)": (ReconNet(small if smoke else RESNET50), [64 if smoke else 224]),
        "L2CS R50 (448 px)": (L2CS(small if smoke else RESNET50, 90), [64 if smoke else 448]),
    }
    amp = autocast(device, torch.float16)
    total = 0.0
    for name, (net, sizes) in nets.items():
        net = net.to(device).eval()
        inputs = [torch.randn(batch, 3, s, s, device=device) for s in sizes]

        def run(net=net, inputs=inputs):
            with torch.inference_mode(), amp:
                for x in inputs:
                    if isinstance(net, IResNet):
                        net.embed(net.feature_map(x)) if x.shape[-1] == 112 else net.feature_map(x)
                    else:
                        net(x)

        seconds = timed(run, device, repeats=1 if smoke else 5, warmup=1 if smoke else 2)
        total += seconds
        table.add("extract", f"{name}: frames/s at batch {batch}", batch / seconds, "frames/s")
    table.add("extract", f"the four together: frames/s at batch {batch}", batch / total, "frames/s",
              verdict(batch / total, GOALS["extract_fps"], True))  # fmt: skip


# --- --learn: the embedded miniature with 20-50x the CPU budget -------------------------------------------------
def export_learn_data(shards: Path, holdout_every: int, resolution: int, out: Path) -> Path:
    """The demo's shards as one array file the GPU machine can read (it has no webdataset): crops and parsing at
    `resolution`, identity, coefficients, gaze, the clip and frame of each, and the held-out flag."""
    from facex_data.latents import training_pixels
    from facex_data.layout import holdout_clips, shard_backend, written_clips
    from facex_data.shards import decode_arrays, iter_samples

    clips = written_clips(shards)
    held = holdout_clips(clips, holdout_every)
    from facex_data.layout import complete_shards

    rows: dict[str, list] = {k: [] for k in ("image", "parsing", "id", "tdmm", "gaze", "clip", "frame", "held")}
    for url in complete_shards(shards):
        for raw in iter_samples(url):
            s = decode_arrays(raw)
            import cv2

            rows["image"].append(training_pixels(s["image"], resolution))
            rows["parsing"].append(cv2.resize(s["parsing"], (resolution, resolution), interpolation=cv2.INTER_NEAREST))
            for key in ("id", "tdmm", "gaze"):
                rows[key].append(s[key])
            rows["clip"].append(s["meta"]["clip_id"])
            rows["frame"].append(s["meta"]["frame_index"])
            rows["held"].append(s["meta"]["clip_id"] in held)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, backend=shard_backend(shards), **{k: np.asarray(v) for k, v in rows.items()})
    return out


def demo_train_settings():
    """The FaceX training settings of the embedded default (params.yaml's `train` section, parsed as the stages
    parse it): the learning check trains with the demo's sizes, learning rate, timestep sampling, min-SNR weighting,
    clipping and EMA, so that it measures what more steps buy the demo, not another recipe."""
    sys.path.insert(0, str(REPO))
    from pipelines.config import load_params

    return load_params(REPO / "params.yaml").train


def learn_section(table: Table, data_path: Path, smoke: bool, device: torch.device) -> None:
    """Pretrain the tiny backbone on the training crops, then FaceX on it frozen; score held-out pairs."""
    from PIL import Image

    from facex_model.backbone import Backbone, sd15_scheduler_config
    from facex_model.denoising import denoise
    from facex_model.features import backend_config, collate_sides, side_inputs, to_uint8
    from facex_model.model import FaceXConfig, FaceXModel
    from facex_train.config import AutoencoderConfig, DenoiserConfig
    from facex_train.evaluation import conditional_gain
    from facex_train.metrics import reconstruction_metrics
    from facex_train.pretrain import roundtrip_psnr, train_unet, train_vae

    with np.load(data_path) as stored:  # read each array once: an npz member decompresses whole on every access
        data = dict(stored)
    backend = str(data["backend"])
    images = torch.from_numpy(data["image"]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    res = images.shape[-1]
    held = torch.from_numpy(data["held"])
    train_images = images[~held].to(device)
    # ~30x the embedded profile's samples (VAE 350 x 16, U-Net 750 x 32, FaceX 1800 x 8), each phase time-boxed
    # so that the call stays within its 4 minutes on one H100/H200
    budget = {"vae": 40.0, "unet": 60.0, "facex": 100.0} if not smoke else dict.fromkeys(("vae", "unet", "facex"))
    started = time.perf_counter()
    vae_cfg = AutoencoderConfig(steps=4 if smoke else 2600, batch_size=16 if smoke else 64)
    vae, vae_losses = train_vae(vae_cfg, train_images, res, 0, progress=False, max_seconds=budget["vae"])
    unet_cfg = DenoiserConfig(steps=4 if smoke else 6000, batch_size=32 if smoke else 128)
    unet, _, unet_losses = train_unet(unet_cfg, vae, train_images, 0, progress=False, max_seconds=budget["unet"])
    table.add("learn", "VAE steps run (of its schedule)", len(vae_losses), f"x {vae_cfg.batch_size}")
    table.add("learn", "U-Net steps run (of its schedule)", len(unet_losses), f"x {unet_cfg.batch_size}")
    table.add("learn", "VAE held-out round trip", roundtrip_psnr(vae, images[held].to(device)), "dB")
    table.add("learn", "pretraining (VAE + U-Net)", time.perf_counter() - started, "s")

    from dataclasses import asdict

    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from facex_model.backbone import tiny_clip_vision_config

    torch.manual_seed(2)
    found = Backbone(unet.to(device), vae.to(device), DDPMScheduler(**sd15_scheduler_config()),
                     CLIPVisionModel(CLIPVisionConfig(**tiny_clip_vision_config())).to(device), "<learn>", "<learn>")
    settings = demo_train_settings()
    config = FaceXConfig(**asdict(settings.model), **backend_config(backend), backbone_path="<learn>",
                         cond_drop_prob=settings.cond_drop_prob, resolution=res, task="headswap")  # fmt: skip
    torch.manual_seed(0)
    model = FaceXModel(config, backbone=found).to(device).train()
    params = model.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay,
                            fused=device.type == "cuda")  # fmt: skip
    ema = EMAModel(params, decay=settings.ema_decay) if settings.ema_decay > 0 else None

    def side(i: int) -> dict:
        return side_inputs(image=data["image"][i], parsing=data["parsing"][i], identity=data["id"][i],
                           tdmm=data["tdmm"][i], gaze=data["gaze"][i], backend=backend, resolution=res)  # fmt: skip

    # every frame's model inputs, made once and kept on the device: a batch is then two index lookups, so the GPU
    # waits on no per-step CPU work (the CPU stages' PairStream does this work in its loader workers instead)
    frames = {name[len("f_"):]: value.to(device) for name, value in
              collate_sides([{"f": side(i)} for i in range(len(data["image"]))]).items()}  # fmt: skip

    by_clip: dict[str, list[int]] = {}
    for i, clip in enumerate(data["clip"]):
        by_clip.setdefault(str(clip), []).append(i)
    train_clips = [c for c, idx in by_clip.items() if not data["held"][idx[0]] and len(idx) > 1]
    held_clips = [c for c, idx in by_clip.items() if data["held"][idx[0]] and len(idx) > 1]
    rng = np.random.default_rng(0)

    def pairs(clips: list[str], n: int) -> dict:
        chosen = [rng.choice(by_clip[clips[rng.integers(len(clips))]], 2, replace=False) for _ in range(n)]
        source, target = torch.as_tensor(np.asarray(chosen).T, device=device)
        return {f"{side}_{k}": v[index] for side, index in (("source", source), ("target", target))
                for k, v in frames.items()}  # fmt: skip

    steps, batch_size = (3, 4) if smoke else (7000, 64)
    generator = torch.Generator().manual_seed(1)
    started = time.perf_counter()
    done = 0
    while done < steps and (budget["facex"] is None or time.perf_counter() - started < budget["facex"]):
        done += 1
        with autocast(device):
            loss = model.training_loss(pairs(train_clips, batch_size), generator=generator,
                                       snr_gamma=settings.snr_gamma or None, logit_normal=settings.logit_normal)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(params)
    timesteps = "uniform t" if settings.logit_normal is None else "t/T = sigmoid(N({:g}, {:g}))".format(
        *settings.logit_normal)
    table.add("learn", f"FaceX training ({done} steps x {batch_size}, lr {settings.learning_rate:g}, {timesteps})",
              time.perf_counter() - started, "s")  # fmt: skip
    if ema is not None:
        ema.copy_to(params)  # evaluated as the demo's models are saved: the EMA weights
    model.eval()
    held_batch = pairs(held_clips, 4 if smoke else 32)
    with torch.no_grad():
        outputs, _ = denoise(model, held_batch, "headswap", steps=10, cfg_scale=7.5,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
    out = os.environ.get("OUT")
    if out:  # the grid first: it is what a reader of this check wants most
        rows = [torch.cat([held_batch["source_image"][i].cpu(), held_batch["target_image"][i].cpu(),
                           outputs[i].float().cpu()], 2) for i in range(min(8, len(outputs)))]  # fmt: skip
        Path(out).mkdir(parents=True, exist_ok=True)
        Image.fromarray(to_uint8(torch.cat(rows, 1))).resize((3 * 256, 256 * len(rows))).save(
            Path(out) / "learn_grid.png")
    scores = reconstruction_metrics(outputs.float().cpu(), held_batch["target_image"].float().cpu())
    table.add("learn", "held-out self-reconstruction PSNR", float(scores["psnr"].mean()), "dB")
    table.add("learn", "held-out self-reconstruction SSIM", float(scores["ssim"].mean()), "")
    gain = conditional_gain(model, held_batch, "headswap")
    table.add("learn", "conditional denoising gain (per-level mean)", gain["gain"], "")
    table.add("learn", "conditional gain vs a mismatched pair", gain["mismatch_gain"], "")
    rate, detector = face_rate(to_uint8(outputs.float().cpu()))
    table.add("learn", f"output face-detection rate ({detector}, not dlib)", rate, "")


def face_rate(crops: np.ndarray) -> tuple[float | None, str]:
    """The share of crops (uint8 RGB) where a frontal-face cascade finds a face, and which cascade: OpenCV's Haar
    cascade, or, where the installed OpenCV has none (OpenCV 5 moved CascadeClassifier out of the main modules, and
    the GPU machine's image has 5.0), scikit-image's LBP cascade, which ships inside scikit-image (the GPU machine
    has no dlib). (None, why) where neither is there. Each crop is scaled to 256 px first."""
    import cv2

    big = [cv2.resize(c, (256, 256)) for c in crops]
    if hasattr(cv2, "CascadeClassifier"):
        cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
        return float(np.mean([len(cascade.detectMultiScale(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY))) > 0
                              for c in big])), "OpenCV Haar"  # fmt: skip
    try:
        from skimage.data import lbp_frontal_face_cascade_filename
        from skimage.feature import Cascade
    except ImportError:
        return None, "no cascade: OpenCV without Haar cascades and no scikit-image"
    lbp = Cascade(lbp_frontal_face_cascade_filename())
    found = [len(lbp.detect_multi_scale(img=c, scale_factor=1.2, step_ratio=1, min_size=(60, 60), max_size=(256, 256)))
             > 0 for c in big]  # fmt: skip
    return float(np.mean(found)), "scikit-image LBP"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="every section at tiny shapes on the CPU")
    parser.add_argument("--learn", action="store_true", help="the learning check instead of the speed sections")
    parser.add_argument("--learn-data", type=Path, default=REPO / "data" / "learn.npz")
    parser.add_argument("--export-learn-data", type=Path, help="write the learning data from --shards and stop")
    parser.add_argument("--shards", type=Path, default=REPO / "data" / "shards", help="for --export-learn-data")
    parser.add_argument("--holdout-every", type=int, default=2, help="for --export-learn-data (split.holdout_every)")
    parser.add_argument("--sections", default="train,infer,extract")
    parser.add_argument("--compile", nargs="?", const="default", choices=("default", "reduce-overhead"),
                        help="torch.compile (this mode; reduce-overhead adds CUDA graphs) FaceX's U-Net and vision "
                             "encoder and the plain U-Net in the training section")  # fmt: skip
    parser.add_argument("--micro-batches", default="8,32,64", help="the training section's micro-batches")
    parser.add_argument("--bf16", action="store_true",
                        help="the GPU's precision path on any device (bf16 autocast and inference weights, fp16 "
                             "extractors): with --smoke, the CPU rehearses the dtypes a GPU run meets")  # fmt: skip
    args = parser.parse_args(argv)
    global LOW_PRECISION
    LOW_PRECISION = args.bf16
    if args.export_learn_data:
        path = export_learn_data(args.shards, args.holdout_every, 64, args.export_learn_data)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        return 0
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (the loss, the optimizer) run on tensor cores
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()}"
    print(f"device: {name}; torch {torch.__version__}; {'smoke shapes' if args.smoke else 'published shapes'}")
    meta = {"device": name, "torch": torch.__version__, "smoke": args.smoke, "learn": args.learn, "bf16": args.bf16,
            "gpu_dtypes": low_precision(device),  # --bf16 given / the GPU's precision path taken (always on CUDA)
            "compile": args.compile}
    table = Table("gpu_learn.json" if args.learn else "gpu_benchmark.json", meta)
    started = time.perf_counter()
    passed = []
    if args.learn:
        passed.append(table.section("learn", lambda: learn_section(table, args.learn_data, args.smoke, device)))
    else:
        peak = matmul_rate(device, args.smoke)
        table.add("device", "measured bf16 matmul rate" if device.type == "cuda" else "fp32 matmul rate",
                  peak / 1e12, "TFLOP/s")  # fmt: skip
        micro_batches = tuple(int(m) for m in args.micro_batches.split(","))
        runs = {"train": lambda: training_section(table, args.smoke, device, peak, args.compile, micro_batches),
                "infer": lambda: inference_section(table, args.smoke, device),
                "extract": lambda: extractor_section(table, args.smoke, device)}  # fmt: skip
        chosen = set(args.sections.split(","))
        passed += [table.section(name, run) for name, run in runs.items() if name in chosen]
    table.add("total", "wall time", time.perf_counter() - started, "s")
    print("\n" + table.render())
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
