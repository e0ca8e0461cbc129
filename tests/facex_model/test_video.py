"""Video reenact/swap: every frame written, the original fps kept, audio copied when present, frames watermarked."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from facex_model.pipeline import FaceXInputError
from facex_model.video import run_video, smooth

FPS = Fraction(30000, 1001)  # what make_clip writes


@pytest.mark.real
@pytest.mark.parametrize("task, audio", [("swap", True), ("reenact", False)])
def test_video_keeps_frame_count_fps_and_audio(pipe, photos, tmp_path, make_clip, probe_video, task, audio):
    clip = make_clip(tmp_path / "in.mp4", photos["target"], audio=audio)
    result = run_video(pipe, task, photos["source"], clip, tmp_path / "out.mp4", steps=1, progress=False)
    n, rate, has_audio, frames = probe_video(tmp_path / "out.mp4")
    assert (n, rate, has_audio) == (6, FPS, audio)
    assert result.frames == 6 and result.frames_without_face == 0 and result.audio is audio
    assert frames[0].shape == (192, 192, 3)
    from facex_model.watermark import detect

    assert all(detect(f)[0] for f in frames[:2])
    from typer.testing import CliRunner

    from facex_data.cli import load_commands

    app = load_commands()

    report = CliRunner().invoke(app, ["detect-watermark", str(tmp_path / "out.mp4")])
    assert report.exit_code == 0 and "watermark found" in report.output and "synthetic/FaceX" in report.output


@pytest.mark.real
def test_same_initial_noise_on_every_frame(pipe, photos, tmp_path, monkeypatch, make_clip):
    from facex_model import denoising

    seen = []
    original = denoising.denoise_latents

    def spy(model, f_sd, noise, **kwargs):
        seen.extend(noise.clone())  # each batch row's initial noise
        return original(model, f_sd, noise, **kwargs)

    monkeypatch.setattr(denoising, "denoise_latents", spy)
    clip = make_clip(tmp_path / "in.mp4", photos["target"], frames=3, audio=False)
    run_video(pipe, "swap", photos["source"], clip, tmp_path / "out.mp4", steps=1, progress=False, watermark=False,
              batch_size=2)  # fmt: skip
    assert len(seen) == 3 and all(np.array_equal(s.numpy(), seen[0].numpy()) for s in seen)


def test_smoothing_averages_valid_frames_only():
    values = np.array([[0.0], [3.0], [100.0], [6.0]])
    valid = np.array([True, True, False, True])
    out = smooth(values, valid, window=3)
    assert out[1, 0] == pytest.approx(1.5) and out[2, 0] == 100.0 and out[3, 0] == pytest.approx(6.0)


@pytest.mark.real
def test_video_errors(pipe, photos, tmp_path, make_clip):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(FaceXInputError, match="broken.mp4"):
        run_video(pipe, "swap", photos["source"], broken, tmp_path / "out.mp4", steps=1, progress=False)
    clip = make_clip(tmp_path / "in.mp4", photos["target"], frames=2, audio=False)
    with pytest.raises(FaceXInputError, match="only reenact, swap, animate"):
        run_video(pipe, "edit", photos["source"], clip, tmp_path / "out.mp4", steps=1, progress=False)
    with pytest.raises(FaceXInputError, match="writes .mp4"):
        run_video(pipe, "swap", photos["source"], clip, tmp_path / "out.png", steps=1, progress=False)


@pytest.mark.real
def test_resume_generates_only_the_frames_a_killed_run_did_not_finish(pipe, photos, tmp_path, make_clip, monkeypatch):
    clip = make_clip(tmp_path / "in.mp4", photos["target"], frames=5, audio=False)
    out = tmp_path / "out.mp4"
    generated: list[str] = []
    original = pipe.generate_many
    kill_at_batch = [2]

    def counting(task, pairs, **kwargs):
        kill_at_batch[0] -= 1
        if kill_at_batch[0] == 0:
            raise KeyboardInterrupt  # killed while generating the second batch
        generated.extend(target.name.rsplit(" ", 1)[1] for _, target in pairs)
        return original(task, pairs, **kwargs)

    monkeypatch.setattr(pipe, "generate_many", counting)
    with pytest.raises(KeyboardInterrupt):
        run_video(pipe, "swap", photos["source"], clip, out, steps=1, progress=False, resume=True, batch_size=2)
    assert sorted(p.name for p in (tmp_path / "out.frames.partial").glob("0*.png")) == ["000000.png", "000001.png"]
    generated.clear()
    result = run_video(pipe, "swap", photos["source"], clip, out, steps=1, progress=False, resume=True, batch_size=2)
    assert generated == ["2", "3", "4"] and result.frames == 5
    assert not (tmp_path / "out.frames.partial").exists()


@pytest.mark.real
def test_frames_generated_in_batches_match_frame_by_frame(pipe, photos, tmp_path, make_clip):
    clip = make_clip(tmp_path / "in.mp4", photos["target"], frames=5, audio=False)
    written: dict[int, list] = {}
    for size in (1, 2):  # 2: batches of 2, 1 (chunks of 3 frames), then 2
        order = written.setdefault(size, [])
        run_video(pipe, "swap", photos["source"], clip, tmp_path / f"out{size}.mp4", steps=1, progress=False,
                  watermark=False, batch_size=size, batch_frames=3,
                  on_frame=lambda i, f, o=order: o.append((i, f)))  # fmt: skip
    assert [i for i, _ in written[2]] == list(range(5))  # written in order
    for (_, a), (_, b) in zip(written[1], written[2], strict=True):
        diff = np.abs(a.astype(np.int16) - b)
        assert diff.max() <= 4 and diff.mean() < 0.05  # float rounding of a larger batch at most
