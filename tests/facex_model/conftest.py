"""Tiny SD-architecture backbones and synthetic face batches with known region layouts."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest
import torch

SIZE = 64


def face_parsing(batch: int, dy: int = 0, dx: int = 0) -> torch.Tensor:
    """A cartoon BiSeNet-19 map: hair, skin, brows, eyes, nose, lips, ears on background, shifted by (dy, dx)."""
    p = torch.zeros(batch, SIZE, SIZE, dtype=torch.long)

    def box(cls: int, r0: int, r1: int, c0: int, c1: int) -> None:
        p[:, r0 + dy : r1 + dy, c0 + dx : c1 + dx] = cls

    box(17, 6, 22, 12, 52)  # hair
    box(1, 16, 52, 16, 48)  # skin
    box(7, 28, 38, 12, 16)  # left ear
    box(8, 28, 38, 48, 52)  # right ear
    box(2, 22, 25, 20, 30)  # brows
    box(3, 22, 25, 34, 44)
    box(4, 27, 30, 21, 29)  # eyes
    box(5, 27, 30, 35, 43)
    box(10, 31, 39, 30, 34)  # nose
    box(12, 42, 44, 26, 38)  # lips
    box(13, 44, 46, 26, 38)
    return p


@pytest.fixture(scope="session")
def other_backbone(tmp_path_factory) -> Path:
    """Another random checkpoint of the same SD architecture (a stand-in for a community SD-1.5 fine-tune)."""
    from facex_model.backbone import build_tiny_backbone

    return build_tiny_backbone(tmp_path_factory.mktemp("tiny_sd_other"), seed=1)


@pytest.fixture
def make_batch() -> Callable[..., dict[str, torch.Tensor]]:
    def make(batch: int = 2, seed: int = 0, sides: tuple[str, ...] = ("source", "target")) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        shifts = {"source": (0, 0), "target": (3, -2), "reference": (-2, 3)}
        out: dict[str, torch.Tensor] = {}
        for side in sides:
            out[f"{side}_image"] = torch.rand(batch, 3, SIZE, SIZE, generator=g) * 2 - 1
            out[f"{side}_parsing"] = face_parsing(batch, *shifts[side])
            out[f"{side}_id"] = torch.randn(batch, 1, 128, generator=g)
            out[f"{side}_pose"] = torch.randn(batch, 3, generator=g)
            out[f"{side}_expression"] = torch.randn(batch, 10, generator=g)
            out[f"{side}_gaze"] = torch.randn(batch, 2, generator=g)
        return out

    return make


@pytest.fixture
def tiny_model(tiny_backbone):
    from facex_model.model import FaceXConfig, FaceXModel

    def build(**overrides):
        torch.manual_seed(0)
        return FaceXModel(FaceXConfig.tiny(tiny_backbone, **overrides))

    return build


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models gain nothing from a second thread, and OpenMP threads fight badly on a shared 2-core box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --- inference (FaceXPipeline, CLI, video, pyfunc): real photos, embedded-sample frames (the saved tiny model and its
# pipeline, `model_dir` and `pipe`, are in the root conftest: the benchmark tests use them too) ---
@pytest.fixture(scope="session")
def photos(real_data, tmp_path_factory) -> dict[str, Path]:
    """Real portraits, shrunk (fast detection) to non-square sizes; `pair` shows two people, one larger."""
    from PIL import Image

    out = tmp_path_factory.mktemp("photos")
    images = real_data / "images"
    paths = {}
    for name, file, size in (("source", "portrait_02.jpg", (300, 300)), ("target", "portrait_05.jpg", (320, 288)),
                             ("other", "portrait_04.jpg", (240, 360))):  # fmt: skip
        paths[name] = out / f"{name}.png"
        Image.open(images / file).convert("RGB").resize(size).save(paths[name])
    big = Image.open(images / "portrait_05.jpg").convert("RGB").resize((300, 300))
    small = Image.open(images / "portrait_02.jpg").convert("RGB").resize((200, 200))
    pair = Image.new("RGB", (520, 300), (90, 90, 90))
    pair.paste(big, (0, 0))
    pair.paste(small, (320, 50))
    paths["pair"] = out / "pair.png"
    pair.save(paths["pair"])
    for name in ("dog_01.jpg", "portrait_03.jpg"):
        paths[name] = images / name
    return paths


@pytest.fixture(scope="session")
def sample_frames(small_sample, tmp_path_factory) -> dict[str, Path]:
    """One frame of each person's clip in the embedded sample set."""
    from PIL import Image

    from facex_model.inputs import first_frame

    out = tmp_path_factory.mktemp("sample_frames")
    frames = {}
    for clip in sorted(small_sample.rglob("*.mp4")):
        frames[clip.stem] = out / f"{clip.stem}.png"
        Image.fromarray(first_frame(clip)).save(frames[clip.stem])
    return frames


FPS = Fraction(30000, 1001)


def _make_clip(path: Path, face: Path, frames: int = 6, audio: bool = True, size: int = 192) -> Path:
    """A short H.264 clip of a face drifting sideways, with a 440 Hz AAC tone when `audio`."""
    import av
    import numpy as np
    from PIL import Image

    image = np.asarray(Image.open(face).convert("RGB").resize((size, size)))
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=16000) if audio else None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(image, 2 * i, axis=1)), format="rgb24")
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            t = np.arange(int(16000 * frames / FPS)) / 16000
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for start in range(0, tone.shape[1], 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start : start + 1024]), format="fltp",
                                                   layout="mono")  # fmt: skip
                chunk.sample_rate, chunk.pts = 16000, start
                for packet in sound.encode(chunk):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return path


def _probe_video(path: Path) -> tuple[int, Fraction, bool, list]:
    """(frames, average rate, has audio, RGB frames) of a video."""
    import av

    with av.open(str(path)) as c:
        rate = c.streams.video[0].average_rate
        has_audio = bool(c.streams.audio)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return len(frames), rate, has_audio, frames


@pytest.fixture(scope="session")
def make_clip():
    return _make_clip


@pytest.fixture(scope="session")
def probe_video():
    return _probe_video


@pytest.fixture
def unet_batches(monkeypatch) -> list[int]:
    """The rows of every FaceXPipeline.generate_many call (one denoising batch each), in call order."""
    from facex_model.pipeline import FaceXPipeline

    rows: list[int] = []
    original = FaceXPipeline.generate_many

    def spy(self, task, pairs, **kwargs):
        rows.append(len(pairs))
        return original(self, task, pairs, **kwargs)

    monkeypatch.setattr(FaceXPipeline, "generate_many", spy)
    return rows
