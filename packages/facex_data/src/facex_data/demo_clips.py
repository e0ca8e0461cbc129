"""The demo clips: the embedded profile's input, CelebV-HQ-layout clips animated from portraits that ship in packages.

Each clip is a face-centred H.264 mp4 made from one still portrait (``skimage.data.astronaut()``,
matplotlib's ``grace_hopper.jpg``, plus any user-given portraits) moved by a smooth, seeded
camera/head motion: in-plane rotation, translation, scale, a mild perspective tilt (yaw/pitch-like
foreshortening) and a moving directional light. Next to the clips: ``celebvhq_info.json`` in
CelebV-HQ's schema and a README describing the set.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm import tqdm

from facex_data.config import DemoClipsConfig
from facex_data.faces import FaceNotFoundError, largest_face_box
from facex_data.layout import CLIP_DIR, INFO_FILE

# CelebV-HQ's label vocabularies (meta_info of celebvhq_info.json), in the dataset's order.
APPEARANCE_MAPPING = (
    "blurry", "male", "young", "chubby", "pale_skin", "rosy_cheeks", "oval_face", "receding_hairline",
    "bald", "bangs", "black_hair", "blonde_hair", "gray_hair", "brown_hair", "straight_hair",
    "wavy_hair", "long_hair", "arched_eyebrows", "bushy_eyebrows", "bags_under_eyes", "eyeglasses",
    "sunglasses", "narrow_eyes", "big_nose", "pointy_nose", "high_cheekbones", "big_lips",
    "double_chin", "no_beard", "5_o_clock_shadow", "goatee", "mustache", "sideburns", "heavy_makeup",
    "wearing_earrings", "wearing_hat", "wearing_lipstick", "wearing_necklace", "wearing_necktie",
    "wearing_mask",
)
ACTION_MAPPING = (
    "blow", "chew", "close_eyes", "cough", "cry", "drink", "eat", "frown", "gaze", "glare",
    "head_wagging", "kiss", "laugh", "listen_to_music", "look_around", "make_a_face", "nod",
    "play_instrument", "read", "shake_head", "shout", "sigh", "sing", "sleep", "smile", "smoke",
    "sneer", "sneeze", "sniff", "talk", "turn", "weep", "whisper", "wink", "yawn",
)
EMOTION_MAPPING = ("neutral", "anger", "contempt", "disgust", "happy", "fear", "sadness", "surprise")


@dataclass(frozen=True)
class Portrait:
    """A still photograph of one person, with the labels we can honestly give it."""

    name: str
    image: np.ndarray  # HxWx3 uint8 RGB
    source: str
    appearance: tuple[str, ...] = ()
    emotion: str = "neutral"


def builtin_portraits() -> list[Portrait]:
    """Real portraits shipped inside installed packages (two different people)."""
    import matplotlib
    import skimage.data

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return [
        Portrait(
            "astronaut",
            skimage.data.astronaut(),
            "skimage.data.astronaut() (NASA portrait of Eileen Collins, public domain)",
            appearance=("young", "brown_hair", "no_beard"),
            emotion="happy",
        ),
        Portrait(
            "grace_hopper",
            load_rgb(hopper),
            "matplotlib mpl-data/sample_data/grace_hopper.jpg (Grace Hopper, public domain)",
            appearance=("gray_hair", "eyeglasses", "wearing_hat", "no_beard"),
            emotion="neutral",
        ),
    ]


def load_rgb(path: Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB, or a clear error naming the file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image (jpg/png/webp expected)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class Motion:
    """Smooth per-frame motion: each channel is a sum of two slow sinusoids with seeded phases."""

    amp: np.ndarray  # (channels, 2)
    freq: np.ndarray  # (channels, 2) Hz
    phase: np.ndarray  # (channels, 2)

    CHANNELS = ("roll", "tx", "ty", "scale", "yaw", "pitch", "light_angle", "light", "gain")

    @classmethod
    def draw(cls, rng: np.random.Generator, cfg: DemoClipsConfig) -> Motion:
        limits = np.array(
            [cfg.max_roll_deg, cfg.max_shift, cfg.max_shift, cfg.max_scale, cfg.max_tilt, cfg.max_tilt,
             np.pi, cfg.max_light, 0.12]
        )
        n = len(cls.CHANNELS)
        weights = rng.uniform(0.3, 1.0, size=(n, 2))
        amp = limits[:, None] * weights / weights.sum(axis=1, keepdims=True)
        freq = rng.uniform(0.15, 0.6, size=(n, 2))
        phase = rng.uniform(0, 2 * np.pi, size=(n, 2))
        return cls(amp, freq, phase)

    def at(self, t: float) -> dict[str, float]:
        values = (self.amp * np.sin(2 * np.pi * self.freq * t + self.phase)).sum(axis=1)
        return dict(zip(self.CHANNELS, values.tolist()))

    def labels(self) -> list[str]:
        """CelebV-HQ action labels this motion would earn: a clear yaw swing reads as a head turn."""
        yaw, pitch = self.CHANNELS.index("yaw"), self.CHANNELS.index("pitch")
        out = []
        if self.amp[yaw].sum() > 0.06:
            out.append("turn")
        if self.amp[pitch].sum() > 0.06:
            out.append("nod")
        return out


def frame_homography(center: np.ndarray, side: float, size: int, m: dict[str, float]) -> np.ndarray:
    """Portrait pixel -> output pixel: face-centred crop, then rotation/scale/tilt/shift about the centre."""
    k = size / side
    crop = np.array([[k, 0, size / 2 - center[0] * k], [0, k, size / 2 - center[1] * k], [0, 0, 1]])
    to_origin = np.array([[1, 0, -size / 2], [0, 1, -size / 2], [0, 0, 1]])
    c, s = np.cos(np.radians(m["roll"])), np.sin(np.radians(m["roll"]))
    zoom = 1.0 + m["scale"]
    rot = np.array([[zoom * c, -zoom * s, 0], [zoom * s, zoom * c, 0], [0, 0, 1]])
    # w = 1 + yaw*x/size + pitch*y/size foreshortens one side of the face, like a small head turn
    tilt = np.array([[1, 0, 0], [0, 1, 0], [2 * m["yaw"] / size, 2 * m["pitch"] / size, 1]])
    back = np.array([[1, 0, size / 2 + m["tx"] * size], [0, 1, size / 2 + m["ty"] * size], [0, 0, 1]])
    return back @ tilt @ rot @ to_origin @ crop


def relight(frame: np.ndarray, m: dict[str, float]) -> np.ndarray:
    """A directional light sweeping across the face plus a global exposure change."""
    size_y, size_x = frame.shape[:2]
    ys, xs = np.mgrid[0:size_y, 0:size_x].astype(np.float32)
    d = ((xs - size_x / 2) * np.cos(m["light_angle"]) + (ys - size_y / 2) * np.sin(m["light_angle"])) / (size_x / 2)
    gain = (1.0 + m["gain"]) * (1.0 + m["light"] * d)
    return np.clip(frame.astype(np.float32) * gain[..., None], 0, 255).astype(np.uint8)


def render_clip(portrait: Portrait, box: tuple[int, int, int, int], motion: Motion, n_frames: int,
                cfg: DemoClipsConfig):
    """Yield the clip's frames (HxWx3 uint8 RGB) one at a time."""
    left, top, right, bottom = box
    center = np.array([(left + right) / 2, (top + bottom) / 2 + 0.08 * (bottom - top)])
    side = (right - left) / cfg.face_fraction
    for i in range(n_frames):
        m = motion.at(i / cfg.fps)
        h = frame_homography(center, side, cfg.size, m)
        frame = cv2.warpPerspective(
            portrait.image, h, (cfg.size, cfg.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        yield relight(frame, m)


def write_mp4(path: Path, frames, size: int, fps: int, crf: int) -> int:
    """Encode frames as H.264 (yuv420p) mp4, byte-reproducibly; returns the frame count."""
    tmp = path.with_name(path.name + ".partial")
    count = 0
    with av.open(str(tmp), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        # one encoder thread: x264's output then depends on nothing but the input and these options
        stream.codec_context.options = {"crf": str(crf), "preset": "medium", "threads": "1", "flags": "+bitexact"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return count


def make_demo_clips(cfg: DemoClipsConfig, out_dir: Path | None = None, progress: bool = True) -> dict:
    """Write the whole clip set to ``out_dir`` (default ``cfg.out_dir``); returns the info json."""
    out = Path(out_dir or cfg.out_dir)
    clip_dir = out / CLIP_DIR
    clip_dir.mkdir(parents=True, exist_ok=True)
    portraits = builtin_portraits() + [
        Portrait(Path(p).stem, load_rgb(Path(p)), str(p)) for p in cfg.extra_portraits
    ]
    rng = np.random.default_rng(cfg.seed)
    clips: dict[str, dict] = {}
    jobs = []
    for portrait in portraits:
        try:
            box = largest_face_box(portrait.image)
        except FaceNotFoundError as err:
            raise ValueError(f"portrait {portrait.source}: {err}; use a frontal photo of one person") from err
        start = 0.0
        for k in range(cfg.clips_per_person):
            seconds = float(rng.uniform(cfg.min_seconds, cfg.max_seconds))
            n_frames = max(1, round(seconds * cfg.fps))
            motion = Motion.draw(rng, cfg)
            clip_id = f"facexsample-{portrait.name}_{k}"
            start += float(rng.uniform(1.0, 5.0))
            duration = n_frames / cfg.fps
            h, w = portrait.image.shape[:2]
            half = (box[2] - box[0]) / cfg.face_fraction / 2
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            clips[clip_id] = {
                "ytb_id": f"facexsample-{portrait.name}",
                "duration": {"start_sec": round(start, 2), "end_sec": round(start + duration, 2)},
                "bbox": {  # the clip's crop in the source portrait, normalised like CelebV-HQ's
                    "top": round(max(0.0, (cy - half) / h), 4),
                    "bottom": round(min(1.0, (cy + half) / h), 4),
                    "left": round(max(0.0, (cx - half) / w), 4),
                    "right": round(min(1.0, (cx + half) / w), 4),
                },
                "attributes": {
                    "appearance": [int(a in portrait.appearance) for a in APPEARANCE_MAPPING],
                    "action": [int(a in motion.labels()) for a in ACTION_MAPPING],
                    "emotion": {"sep_flag": False, "labels": portrait.emotion},
                },
                "version": "facex-sample-1",
                "frames": n_frames,
                "fps": cfg.fps,
                "size": [cfg.size, cfg.size],
                "source": portrait.source,
            }
            jobs.append((clip_id, portrait, box, motion, n_frames))
            start += duration
    for clip_id, portrait, box, motion, n_frames in tqdm(jobs, desc="demo clips", unit="clip", disable=not progress):
        frames = render_clip(portrait, box, motion, n_frames, cfg)
        written = write_mp4(clip_dir / f"{clip_id}.mp4", frames, cfg.size, cfg.fps, cfg.crf)
        assert written == n_frames
    info = {
        "meta_info": {
            "appearance_mapping": list(APPEARANCE_MAPPING),
            "action_mapping": list(ACTION_MAPPING),
            "emotion_mapping": list(EMOTION_MAPPING),
        },
        "clips": clips,
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    (out / "README.md").write_text(describe(cfg, portraits, clips))
    return info


def describe(cfg: DemoClipsConfig, portraits: list[Portrait], clips: dict[str, dict]) -> str:
    """The README written next to the data."""
    total = sum(c["frames"] for c in clips.values())
    people = "\n".join(f"- `{p.name}`: {p.source}" for p in portraits)
    rows = "\n".join(
        f"| {cid} | {c['frames']} | {c['frames'] / c['fps']:.2f} | "
        f"{', '.join(a for a, on in zip(ACTION_MAPPING, c['attributes']['action']) if on) or '-'} |"
        for cid, c in sorted(clips.items())
    )
    return f"""# FaceX demo clips

Generated by `pipelines/demo_clips.py` (DVC stage `demo_clips`) with seed {cfg.seed}; do not edit by hand.
It has CelebV-HQ's layout, so every later stage reads it exactly as it reads a real CelebV-HQ copy:

- `{CLIP_DIR}/<clip_id>.mp4`: face-centred H.264 clips, {cfg.size}x{cfg.size}, {cfg.fps} fps,
  {cfg.min_seconds}-{cfg.max_seconds} s each.
- `{INFO_FILE}`: CelebV-HQ's schema (`meta_info` label vocabularies; per clip `ytb_id`, `duration`,
  `bbox`, `attributes` with appearance/action vectors and emotion) plus `frames`, `fps`, `size`, `source`.

What it is: real photographs of {len(portraits)} people, each animated {cfg.clips_per_person} times by a smooth
synthetic motion (in-plane rotation up to {cfg.max_roll_deg} deg, shifts up to {cfg.max_shift:.0%} of the frame,
scale up to {cfg.max_scale:.0%}, a perspective tilt standing in for small head turns and nods, and a moving
directional light). Faces stay real and detectable, but expressions never change and there is no
true 3D head rotation: it exercises the pipeline; it is not training data.

Labels: appearance and emotion were set by hand per portrait (only what is plain in the photo;
user-added portraits are unlabelled); actions come from the generated motion (`turn` for a clear
yaw-like swing, `nod` for a pitch-like one). `bbox` is the clip's crop in the source portrait.

People:
{people}

| clip | frames | seconds | actions |
|---|---|---|---|
{rows}

{len(clips)} clips, {total} frames in all.
"""
