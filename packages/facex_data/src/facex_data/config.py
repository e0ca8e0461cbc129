"""The typed configs of the data package's stages: each is one params section, with its one set of defaults.

``pipelines/config.py`` parses ``params.yaml`` into these (``demo_clips``, ``extract``); the libraries take
them as they are. This module imports nothing heavy, so parsing params costs no video or model import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from facex_data.manifest import FrameSelection
from facex_data.paths import InputPath

# the real portraits that ship inside installed packages (facex_data.demo_clips.builtin_portraits)
BUILTIN_PEOPLE = ("astronaut", "grace_hopper", "t1_1", "t1_2", "t1_3", "t1_4", "t1_5", "t1_6", "tom_hanks")


@dataclass(frozen=True)
class DemoClipsConfig:
    """The ``demo_clips`` params section: how many clips, how big, and how strong the synthetic motion is."""

    out_dir: Path = Path("data/demo_clips")
    seed: int = 0
    clips_per_person: int = 2
    size: int = 512
    fps: int = 25
    min_seconds: float = 2.0
    max_seconds: float = 4.0
    face_fraction: float = 0.42  # face box width / frame width, CelebV-HQ-like framing
    max_roll_deg: float = 7.0
    max_shift: float = 0.04  # fraction of the frame
    max_scale: float = 0.08
    max_tilt: float = 0.12  # perspective foreshortening at the frame edge
    max_light: float = 0.25  # strength of the moving directional light
    max_expression: float = 1.0  # mouth opening / smile / blink strength (0: a still face)
    crf: int = 18
    people: tuple[str, ...] = BUILTIN_PEOPLE  # which of the packaged portraits (facex_data.demo_clips) to animate
    extra_portraits: list[InputPath] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.size < 64 or self.size % 2:
            raise ValueError(f"demo_clips.size must be an even number >= 64, got {self.size}")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(
                f"demo_clips.min_seconds/max_seconds need 0 < min <= max, got {self.min_seconds}, {self.max_seconds}"
            )
        if self.clips_per_person < 1 or self.fps < 1:
            raise ValueError("demo_clips.clips_per_person and demo_clips.fps must be >= 1")
        unknown = sorted(set(self.people) - set(BUILTIN_PEOPLE))
        if unknown:
            raise ValueError(f"demo_clips.people: unknown {', '.join(unknown)}; known: {', '.join(BUILTIN_PEOPLE)}")


@dataclass(frozen=True)
class ExtractConfig:
    """The ``extract`` section of params: input, frame selection, backend, sharding and Ray resources.

    The weights the paper backend reads come from the shared weights dir (``weights.dir``), passed to
    :func:`run_extraction` beside this config."""

    input_dir: InputPath = InputPath("data/sample")
    out_dir: Path = Path("data/shards")
    extractors: str = "offline"  # backend name in facex_data.extractors' registry ("offline", "paper")
    device: str = "cpu"
    detector: Literal["scrfd", "dlib"] = "scrfd"  # paper backend's face detector; "offline" always uses dlib
    frames: FrameSelection = field(default_factory=FrameSelection)
    crop_size: int = 256
    jpeg_quality: int = 95
    # precomputed VAE latents (schema.LATENT): a diffusers AutoencoderKL folder (e.g. <SD-1.5>/vae), or None; training
    # at latents_resolution then skips the VAE encoder (mosaicml measured ~1.4x on SD training from this alone)
    latents_vae: Path | None = None
    latents_resolution: int = 256
    detector_upsample: int = 0  # HOG upsampling: 1 finds faces down to ~40 px at ~4x the cost
    clips_per_shard: int = 4
    batch_size: int = 8  # frames per decode task and per extractor call
    runner: Literal["ray", "local"] = "ray"
    num_actors: int = 2
    actor_num_cpus: float = 0.75  # fractional, so decode tasks still find CPU on a 2-core machine
    actor_num_gpus: float = 0.0
    num_decoders: int = 2  # decoder actors (each decodes one clip at a time, isolated from the driver)
    decode_num_cpus: float = 0.25
    decoder_max_clips: int = 8  # a decoder actor is replaced after this many clips: its memory cannot creep up
    max_inflight_batches: int = 6  # decoded + extracting batches in flight: bounds memory
    decode_timeout_s: float = 120.0  # a decode (or probe) running longer is a hung decoder: cancel it
    ray_num_cpus: int = 0  # CPUs of the local Ray the stage starts (0 = all); ignored on a cluster
    progress: bool = True

    def __post_init__(self) -> None:
        if min(self.batch_size, self.num_actors, self.num_decoders, self.max_inflight_batches) < 1:
            raise ValueError("extract.batch_size, num_actors, num_decoders and max_inflight_batches must be >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"extract.jpeg_quality must be in 1..100, got {self.jpeg_quality}")

    def extractor_options(self, weights_dir: Path | None = None):
        """The backend's ExtractorOptions (``facex_data.extractors``) for this section and a weights dir."""
        from facex_data.extractors import ExtractorOptions

        return ExtractorOptions(self.crop_size, self.detector_upsample, weights_dir, self.device, self.detector)
