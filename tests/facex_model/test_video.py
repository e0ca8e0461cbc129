"""Video reenact/swap: every frame written, the original fps kept, audio copied when present, frames watermarked."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from facex_model.pipeline import FaceXInputError
from facex_model.video import run_video, smooth

FPS = Fraction(30000, 1001)


def make_clip(path: Path, face: Path, frames: int = 6, audio: bool = True, size: int = 192) -> Path:
    """A short H.264 clip of a face drifting sideways, with a 440 Hz AAC tone when `audio`."""
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


def probe(path: Path) -> tuple[int, Fraction, bool, list[np.ndarray]]:
    with av.open(str(path)) as c:
        rate = c.streams.video[0].average_rate
        has_audio = bool(c.streams.audio)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return len(frames), rate, has_audio, frames


@pytest.mark.real
@pytest.mark.parametrize("task, audio", [("swap", True), ("reenact", False)])
def test_video_keeps_frame_count_fps_and_audio(pipe, photos, tmp_path, task, audio):
    clip = make_clip(tmp_path / "in.mp4", photos["target"], audio=audio)
    result = run_video(pipe, task, photos["source"], clip, tmp_path / "out.mp4", steps=1, progress=False)
    n, rate, has_audio, frames = probe(tmp_path / "out.mp4")
    assert (n, rate, has_audio) == (6, FPS, audio)
    assert result.frames == 6 and result.frames_without_face == 0 and result.audio is audio
    assert frames[0].shape == (192, 192, 3)
    from facex_model.watermark import detect

    assert all(detect(f)[0] for f in frames[:2])


@pytest.mark.real
def test_same_initial_noise_on_every_frame(pipe, photos, tmp_path, monkeypatch):
    from facex_model import sampling

    seen = []
    original = sampling.denoise

    def spy(*args, **kwargs):
        seen.append(kwargs["latents"].clone())
        return original(*args, **kwargs)

    monkeypatch.setattr(sampling, "denoise", spy)
    clip = make_clip(tmp_path / "in.mp4", photos["target"], frames=3, audio=False)
    run_video(pipe, "swap", photos["source"], clip, tmp_path / "out.mp4", steps=1, progress=False, watermark=False)
    assert len(seen) == 3 and all(np.array_equal(s.numpy(), seen[0].numpy()) for s in seen)


def test_smoothing_averages_valid_frames_only():
    values = np.array([[0.0], [3.0], [100.0], [6.0]])
    valid = np.array([True, True, False, True])
    out = smooth(values, valid, window=3)
    assert out[1, 0] == pytest.approx(1.5) and out[2, 0] == 100.0 and out[3, 0] == pytest.approx(6.0)


@pytest.mark.real
def test_video_errors(pipe, photos, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(FaceXInputError, match="broken.mp4"):
        run_video(pipe, "swap", photos["source"], broken, tmp_path / "out.mp4", steps=1, progress=False)
    clip = make_clip(tmp_path / "in.mp4", photos["target"], frames=2, audio=False)
    with pytest.raises(FaceXInputError, match="only reenact, swap, animate"):
        run_video(pipe, "edit", photos["source"], clip, tmp_path / "out.mp4", steps=1, progress=False)
    with pytest.raises(FaceXInputError, match="writes .mp4"):
        run_video(pipe, "swap", photos["source"], clip, tmp_path / "out.png", steps=1, progress=False)
