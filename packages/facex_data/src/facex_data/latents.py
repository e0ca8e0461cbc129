"""How a stored face crop becomes a training image, and its VAE latents precomputed at extraction.

:func:`training_pixels` is the one resize from a shard's crop to the training resolution (training, inference and
evaluation go through it via ``facex_model.features.image_tensor``). :class:`LatentEncoder` runs a diffusers
``AutoencoderKL`` on exactly those pixels and keeps the posterior's mean and log-variance (``schema.LATENT``), so a
training step can sample the latents without the VAE encoder (``facex-data[latents]`` installs diffusers).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from facex_data import schema


def training_pixels(image: np.ndarray, resolution: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (R, R, 3) uint8: area averaging when shrinking (the anti-aliased filter for the usual
    integer factors, 256 -> 64 say), bilinear when enlarging; on uint8, about five times cheaper than a float
    anti-aliased interpolate, which matters because the training loader runs it per frame."""
    h, w = image.shape[:2]
    if (h, w) == (resolution, resolution):
        return image
    shrink = h >= resolution and w >= resolution
    return cv2.resize(np.ascontiguousarray(image), (resolution, resolution),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)  # fmt: skip


class LatentEncoder:
    """A VAE's posterior moments (mean ‖ log-variance, float16) of JPEG crops at a training resolution."""

    def __init__(self, vae_dir: Path, resolution: int, device: str = "cpu") -> None:
        try:
            import torch
            from diffusers import AutoencoderKL
        except ModuleNotFoundError as err:
            raise ValueError(
                "extract.latents_vae needs diffusers: pip install 'facex-data[latents]' (or install facex-model)"
            ) from err
        path = Path(vae_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"extract.latents_vae: {path} has no config.json; point it at a VAE folder "
                                    "(the vae/ of a Stable Diffusion 1.5 diffusers folder)")  # fmt: skip
        self.torch = torch
        self.device = torch.device(device)
        self.vae = AutoencoderKL.from_pretrained(path).to(self.device).eval().requires_grad_(False)
        self.resolution = resolution
        digest = hashlib.sha256((path / "config.json").read_bytes())
        for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
            digest.update(weights.name.encode() + str(weights.stat().st_size).encode())
        self.description = {"vae": path.name, "config_sha256": digest.hexdigest()[:16], "resolution": resolution,
                            "layout": "mean ‖ logvar, float16"}  # fmt: skip

    def __call__(self, jpegs: list[bytes]) -> list[np.ndarray]:
        torch = self.torch
        pixels = [training_pixels(cv2.cvtColor(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR),
                                               cv2.COLOR_BGR2RGB), self.resolution) for j in jpegs]  # fmt: skip
        x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        with torch.inference_mode():
            moments = self.vae.encode(x.to(self.device, self.vae.dtype)).latent_dist.parameters
        return [m.astype(schema.LATENT_DTYPE) for m in moments.float().cpu().numpy()]
