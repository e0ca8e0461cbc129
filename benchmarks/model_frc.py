"""FRC overhead on the real SD-1.5 U-Net architecture (published config, random weights).

Prints, from one run: median forward time of the plain U-Net vs the U-Net with FRC installed (f_SD precomputed, the
same f_SD fed to both, timings interleaved), their ratio (goal <= 1.15), parameter counts (frozen vs trainable) and
peak memory. With CUDA it also times a bf16 training step at batch 8, 256 px. Run: `make bench-model`.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModel

from facex_model.backbone import clip_vit_l14_vision_config, sd15_unet_config, sd15_vae_config
from facex_model.ford import IdentityEncoder, RegionEncoder, default_fpn_layers
from facex_model.fors import InpaintImageEncoder, RepresentationAdapter
from facex_model.frc import FacialRepresentationController
from facex_model.model import FaceXConfig
from facex_model.sd_adapter import SDAdapter


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def conditioner_params(cfg: FaceXConfig, cross_dim: int) -> dict[str, int]:
    """The FORD/FORS/SD-adapter trainables at SD-1.5 scale (built from the same classes FaceXModel uses)."""
    vision = clip_vit_l14_vision_config()
    vectors = {n: d for n, d in cfg.vector_dims.items() if d > 0}
    dims = {"id": cfg.rep_dim, "regions": cfg.rep_dim, **vectors}
    adapter = RepresentationAdapter(dims, {"id": cfg.id_tokens, "regions": len(cfg.regions)}, cfg.hidden_dim)
    fpn_layers = default_fpn_layers(vision["num_hidden_layers"], cfg.fpn_levels)
    return {
        "identity_encoder": count(IdentityEncoder(cfg.id_dim, cfg.rep_dim)),
        "region_encoder (FPN + absent tokens)": count(RegionEncoder(vision["hidden_size"], cfg.rep_dim, fpn_layers)),
        "representation_adapter": count(adapter),
        "inpaint_encoder (phi_Inp)": count(InpaintImageEncoder(cfg.inp_channels, cfg.hidden_dim, cfg.inp_grid)),
        "sd_adapter": count(SDAdapter(cfg.hidden_dim, cross_dim)),
        "null_f_sd": (adapter.num_tokens + cfg.inp_grid**2) * cross_dim,
    }


def time_forward(unet, latents, t, f_sd) -> tuple[float, float]:
    """-> (wall seconds, this process's CPU seconds); CPU time is far less disturbed by other jobs on a shared box."""
    start, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        unet(latents, t, encoder_hidden_states=f_sd)
    if latents.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu


def cuda_training_step(unet, frc, f_sd_tokens: int, cross_dim: int, batch: int = 8, repeats: int = 5) -> None:
    device = torch.device("cuda")
    unet.to(device, torch.bfloat16)
    frc.to(device, torch.bfloat16)
    opt = torch.optim.AdamW(frc.parameters(), lr=1e-5)
    latents = torch.randn(batch, 4, 32, 32, device=device, dtype=torch.bfloat16)
    f_sd = torch.randn(batch, f_sd_tokens, cross_dim, device=device, dtype=torch.bfloat16)
    noise = torch.randn_like(latents)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        t = torch.randint(0, 1000, (batch,), device=device)
        loss = torch.nn.functional.mse_loss(unet(latents, t, encoder_hidden_states=f_sd).sample.float(), noise.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    print(
        f"cuda bf16 training step, batch {batch}, 256 px: median {statistics.median(times[1:]) * 1000:.1f} ms, "
        f"peak allocated {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB ({torch.cuda.get_device_name()})"
    )


def _ms(values) -> str:
    return ", ".join(f"{v * 1000:.0f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7, help="timed forwards per variant (after one warm-up each)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = FaceXConfig(backbone_path="<random SD-1.5 architecture>")
    unet_cfg = sd15_unet_config()
    cross_dim = unet_cfg["cross_attention_dim"]
    built = time.perf_counter()
    unet = UNet2DConditionModel(**unet_cfg).eval().requires_grad_(False)
    frc = FacialRepresentationController.for_unet(unet, num_heads=cfg.frc_heads)
    print(
        f"built SD-1.5 U-Net + FRC in {time.perf_counter() - built:.1f} s; torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )

    rep_tokens = cfg.id_tokens + len(cfg.regions) + sum(1 for d in cfg.vector_dims.values() if d > 0)
    tokens = rep_tokens + cfg.inp_grid**2
    latents = torch.randn(1, 4, 32, 32)  # 256 px
    t = torch.tensor([500])
    f_sd = torch.randn(1, tokens, cross_dim)
    print(f"input: batch 1, 256 px (32x32 latents), f_SD {tokens} tokens x {cross_dim} (fed to both variants)")

    rss_weights = rss_gib()
    plain, with_frc = [], []
    time_forward(unet, latents, t, f_sd)
    frc.install(unet)
    time_forward(unet, latents, t, f_sd)
    for _ in range(args.repeats):
        frc.remove()
        plain.append(time_forward(unet, latents, t, f_sd))
        frc.install(unet)
        with_frc.append(time_forward(unet, latents, t, f_sd))
    for i, clock in enumerate(("wall", "CPU")):
        p, f = statistics.median(x[i] for x in plain), statistics.median(x[i] for x in with_frc)
        print(f"[{clock}] plain U-Net forward: median {p * 1000:.0f} ms  (all: {_ms(x[i] for x in plain)})")
        print(f"[{clock}] U-Net + FRC forward: median {f * 1000:.0f} ms  (all: {_ms(x[i] for x in with_frc)})")
        print(
            f"[{clock}] ratio FRC / plain: median {f / p:.3f}  (goal <= 1.15: {'met' if f / p <= 1.15 else 'NOT met'})"
            f"; min/min {min(x[i] for x in with_frc) / min(x[i] for x in plain):.3f} (least disturbed runs)"
        )

    with torch.device("meta"):
        vae = count(AutoencoderKL(**sd15_vae_config()))
        clip = count(CLIPVisionModel(CLIPVisionConfig(**clip_vit_l14_vision_config())))
    conditioner = conditioner_params(cfg, cross_dim)
    print(
        f"frozen: U-Net {count(unet) / 1e6:.1f} M, VAE {vae / 1e6:.1f} M, CLIP ViT-L/14 vision {clip / 1e6:.1f} M "
        f"(trainable too when train_vision_encoder)"
    )
    print(
        f"trainable: FRC {count(frc) / 1e6:.1f} M over {len(frc.layers)} transformer blocks; "
        + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in conditioner.items())
        + f"; total {(count(frc) + sum(conditioner.values())) / 1e6:.1f} M"
    )
    print(f"peak RSS: {rss_weights:.2f} GiB after building, {rss_gib():.2f} GiB after the timed forwards (fp32, CPU)")

    if torch.cuda.is_available():
        cuda_training_step(unet, frc, tokens, cross_dim)
    else:
        print("no CUDA device: bf16 batch-8 training step not measured")


if __name__ == "__main__":
    main()
