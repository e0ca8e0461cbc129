"""The demo clips: the embedded profile's input, CelebV-HQ-layout clips animated from portraits that ship in packages.

Each clip is a face-centred H.264 mp4 made from one still portrait of a real person (nine ship inside
installed packages: ``skimage.data.astronaut()``, matplotlib's ``grace_hopper.jpg``, the six faces of
insightface's ``data/images/t1.jpg`` and its ``Tom_Hanks_54745.png``; plus any user-given portraits),
moved by a smooth, seeded camera/head motion (in-plane rotation, translation, scale, a mild perspective
tilt, a moving directional light) and a seeded expression (the mouth opening and smiling, blinks) made
by a piecewise-affine warp between the portrait's 68 landmarks and the expression's. Next to the clips:
``celebvhq_info.json`` in CelebV-HQ's schema and a README describing the set.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm import tqdm

from facex_data.config import BUILTIN_PEOPLE, DemoClipsConfig
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


def builtin_portraits(people: tuple[str, ...] = BUILTIN_PEOPLE) -> list[Portrait]:
    """Real portraits shipped inside installed packages (nine different people), the ones named in `people`."""
    import matplotlib
    import skimage.data

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    out = {
        "astronaut": lambda: Portrait(
            "astronaut", skimage.data.astronaut(),
            "skimage.data.astronaut() (NASA portrait of Eileen Collins, public domain)",
            appearance=("young", "brown_hair", "no_beard"), emotion="happy",
        ),
        "grace_hopper": lambda: Portrait(
            "grace_hopper", load_rgb(hopper),
            "matplotlib mpl-data/sample_data/grace_hopper.jpg (Grace Hopper, public domain)",
            appearance=("gray_hair", "eyeglasses", "wearing_hat", "no_beard"),
        ),
    }  # fmt: skip
    others = {p.name: p for p in _insightface_portraits(people)} if set(people) - set(out) else {}
    return [out[name]() if name in out else others[name] for name in people]


def _insightface_portraits(people: tuple[str, ...]) -> list[Portrait]:
    """The six faces of insightface's group photo t1.jpg (left to right, each cut with a margin) and its Tom Hanks
    portrait (112 px, grey: enlarged 3x so the shipped detector finds it), those named in `people`."""
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("demo_clips.people names insightface's portraits but insightface is not installed: "
                         "`make setup` installs it (or pip install --no-deps insightface==2.1)")  # fmt: skip
    images = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    from facex_data.faces import detect_faces

    group = load_rgb(images / "t1.jpg")
    boxes = sorted(detect_faces(group), key=lambda b: b[0])
    if len(boxes) != 6:
        raise ValueError(f"{images / 't1.jpg'}: expected six faces, found {len(boxes)}")
    found: dict[str, Portrait] = {}
    for k, (left, top, right, bottom) in enumerate(boxes, start=1):
        half = 1.25 * (right - left)
        cx, cy = (left + right) / 2, (top + bottom) / 2 + 0.1 * (bottom - top)
        window = (int(cx - half), int(cy - half), int(cx + half), int(cy + half))
        crop = _crop_padded(group, window)
        found[f"t1_{k}"] = Portrait(f"t1_{k}", crop, f"insightface data/images/t1.jpg (face {k} of 6, left to right)")
    hanks = load_rgb(images / "Tom_Hanks_54745.png")
    hanks = cv2.resize(cv2.copyMakeBorder(hanks, 40, 40, 40, 40, cv2.BORDER_REPLICATE), None, fx=3, fy=3,
                       interpolation=cv2.INTER_CUBIC)  # fmt: skip
    found["tom_hanks"] = Portrait("tom_hanks", hanks, "insightface data/images/Tom_Hanks_54745.png (112 px, grey)",
                                  appearance=("male", "no_beard"))  # fmt: skip
    return [found[p] for p in people if p in found]


def _crop_padded(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """image[top:bottom, left:right], the part outside the image filled by replicating its border."""
    left, top, right, bottom = box
    h, w = image.shape[:2]
    pad = max(0, -left, -top, right - w, bottom - h)
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else image
    return np.ascontiguousarray(padded[top + pad : bottom + pad, left + pad : right + pad])


def load_rgb(path: Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB, upright as a viewer shows it (EXIF orientation applied), or a clear error
    naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise ValueError(f"{path}: not a readable image (jpg/png/webp expected): {err}") from None


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


@dataclass(frozen=True)
class Expression:
    """A seeded per-frame expression: mouth opening (talking), smiling and blinks, each in [0, 1]."""

    mouth: tuple[float, float, float]  # amplitude, Hz, phase
    smile: tuple[float, float, float]
    blinks: tuple[float, ...]  # times (s) of each blink's closed instant

    BLINK_S = 0.24  # a blink closes and opens within this long

    @classmethod
    def draw(cls, rng: np.random.Generator, seconds: float, strength: float) -> Expression:
        mouth = (strength * rng.uniform(0.3, 1.0), rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi))
        smile = (strength * rng.uniform(0.0, 0.9), rng.uniform(0.1, 0.4), rng.uniform(0, 2 * np.pi))
        blinks, t = [], rng.uniform(0.3, 1.5)
        while t < seconds:
            blinks.append(round(float(t), 3))
            t += rng.uniform(1.2, 3.0)
        return cls(mouth, smile, tuple(blinks) if strength > 0 else ())

    def at(self, t: float) -> dict[str, float]:
        def wave(a: float, f: float, p: float) -> float:
            return a * 0.5 * (1 - np.cos(2 * np.pi * f * t + p))

        blink = max((1 - abs(t - b) / (self.BLINK_S / 2) for b in self.blinks), default=0.0)
        return {"mouth": wave(*self.mouth), "smile": wave(*self.smile), "blink": max(0.0, blink)}

    def labels(self) -> list[str]:
        """CelebV-HQ action labels: a clearly moving mouth reads as talking, a clear smile as smiling."""
        return [name for name, amp in (("talk", self.mouth[0]), ("smile", self.smile[0])) if amp > 0.4]


@functools.cache
def _landmark_predictor():
    import dlib

    from facex_data.faces import dlib_model_path

    return dlib.shape_predictor(str(dlib_model_path("landmarks68")))


class ExpressionWarp:
    """Moves a portrait's face by a piecewise-affine warp from its 68 landmarks to those of an expression.

    The landmarks come from dlib's shipped predictor; the mesh (a Delaunay triangulation of the moved points) also
    holds a ring of fixed points around the face, so nothing outside it moves. Displacements follow the face's own
    axes (x along the eyes, y towards the chin), so tilted heads open their mouths along the face."""

    GRID = 4  # px between the points where the piecewise-affine map is evaluated exactly

    def __init__(self, image: np.ndarray, box: tuple[int, int, int, int]) -> None:
        import dlib

        shape = _landmark_predictor()(np.ascontiguousarray(image), dlib.rectangle(*[int(v) for v in box]))
        self.points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        left, top, right, bottom = box
        cx, cy, r = (left + right) / 2, (top + bottom) / 2, 0.9 * max(right - left, bottom - top)
        angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        self.ring = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1)
        h, w = image.shape[:2]
        x0, y0, x1, y1 = int(max(0, cx - r)), int(max(0, cy - r)), int(min(w, cx + r + 1)), int(min(h, cy + r + 1))
        self.window = (slice(y0, y1), slice(x0, x1))
        ys, xs = np.mgrid[y0:y1:self.GRID, x0:x1:self.GRID].astype(np.float64)
        self.grid_shape, self.grid = xs.shape, np.stack([xs.ravel(), ys.ravel()], 1)
        self.identity = np.mgrid[0:h, 0:w][::-1].astype(np.float32)  # (map_x, map_y) that moves nothing
        left_eye, right_eye = self.points[36:42].mean(0), self.points[42:48].mean(0)
        self.iod = float(np.linalg.norm(right_eye - left_eye))
        self.ex = (right_eye - left_eye) / max(self.iod, 1e-6)  # the face's x axis in the image
        self.ey = np.array([-self.ex[1], self.ex[0]])  # its y axis (towards the chin)

    def moved(self, state: dict[str, float]) -> np.ndarray:
        """The 68 landmarks under an expression."""
        dx, dy = np.zeros(68), np.zeros(68)
        m, s, b = state["mouth"], state["smile"], state["blink"]
        for i, k in ((55, 1.0), (56, 1.0), (57, 1.0), (58, 1.0), (59, 1.0), (65, 1.0), (66, 1.0), (67, 1.0),
                     (7, 0.8), (8, 0.8), (9, 0.8), (6, 0.4), (10, 0.4)):  # fmt: skip
            dy[i] += k * m * 0.28  # the jaw drops, the lower lip with it
        for i in (50, 51, 52, 61, 62, 63):
            dy[i] -= m * 0.04
        for i, side, k in ((48, -1, 1.0), (60, -1, 0.8), (49, -1, 0.4), (59, -1, 0.4),
                           (54, 1, 1.0), (64, 1, 0.8), (53, 1, 0.4), (55, 1, 0.4)):  # fmt: skip
            dx[i] += side * k * s * 0.10
            dy[i] -= k * s * 0.08
        p = self.points + self.iod * (dx[:, None] * self.ex + dy[:, None] * self.ey)
        for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
            p[upper] += b * 0.85 * (self.points[lower] - self.points[upper])  # the lid closes onto the lower one
        return p

    def __call__(self, image: np.ndarray, state: dict[str, float]) -> np.ndarray:
        if max(state.values()) <= 1e-3:
            return image
        from scipy.spatial import Delaunay

        dst = np.vstack([self.moved(state), self.ring])
        src = np.vstack([self.points, self.ring])
        mesh = Delaunay(dst)
        simplex = mesh.find_simplex(self.grid)
        inside = simplex >= 0
        affine = mesh.transform[simplex[inside]]  # barycentric coordinates of each point in its moved triangle
        bary = np.einsum("nij,nj->ni", affine[:, :2], self.grid[inside] - affine[:, 2])
        bary = np.concatenate([bary, 1 - bary.sum(1, keepdims=True)], 1)
        mapped = self.grid.copy()
        mapped[inside] = np.einsum("ni,nij->nj", bary, src[mesh.simplices[simplex[inside]]])  # same place in the face
        map_x, map_y = self.identity[0].copy(), self.identity[1].copy()
        rows, cols = self.window
        size = (cols.stop - cols.start, rows.stop - rows.start)
        for axis, full in ((0, map_x), (1, map_y)):
            coarse = mapped[:, axis].reshape(self.grid_shape).astype(np.float32)
            full[rows, cols] = cv2.resize(coarse, size, interpolation=cv2.INTER_LINEAR)
        return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


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


def render_clip(portrait: Portrait, box: tuple[int, int, int, int], motion: Motion, expression: Expression,
                n_frames: int, cfg: DemoClipsConfig):
    """Yield the clip's frames (HxWx3 uint8 RGB) one at a time."""
    left, top, right, bottom = box
    center = np.array([(left + right) / 2, (top + bottom) / 2 + 0.08 * (bottom - top)])
    side = (right - left) / cfg.face_fraction
    warp = ExpressionWarp(portrait.image, box) if cfg.max_expression > 0 else None
    for i in range(n_frames):
        m = motion.at(i / cfg.fps)
        face = warp(portrait.image, expression.at(i / cfg.fps)) if warp is not None else portrait.image
        h = frame_homography(center, side, cfg.size, m)
        frame = cv2.warpPerspective(
            face, h, (cfg.size, cfg.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
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
    portraits = builtin_portraits(cfg.people) + [
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
            expression = Expression.draw(rng, seconds, cfg.max_expression)
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
                    "action": [int(a in motion.labels() + expression.labels()) for a in ACTION_MAPPING],
                    "emotion": {"sep_flag": False, "labels": portrait.emotion},
                },
                "version": "facex-demo-2",
                "frames": n_frames,
                "fps": cfg.fps,
                "size": [cfg.size, cfg.size],
                "source": portrait.source,
            }
            jobs.append((clip_id, portrait, box, motion, expression, n_frames))
            start += duration
    for clip_id, portrait, box, motion, expression, n_frames in tqdm(jobs, desc="demo clips", unit="clip",
                                                                      disable=not progress):  # fmt: skip
        frames = render_clip(portrait, box, motion, expression, n_frames, cfg)
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
directional light) and a synthetic expression (strength {cfg.max_expression}: the mouth opens and closes as in
talking, a slow smile comes and goes, the eyes blink; a piecewise-affine warp of the face between its 68
landmarks and the expression's). Faces stay real and detectable, but there is no true 3D head rotation and
the expressions are warps of one photo: enough to train and measure a small model, not a dataset.

Labels: appearance and emotion were set by hand per portrait (only what is plain in the photo;
user-added portraits are unlabelled); actions come from the generated motion (`turn` for a clear
yaw-like swing, `nod` for a pitch-like one, `talk` / `smile` for a clear mouth movement / smile).
`bbox` is the clip's crop in the source portrait.

People:
{people}

| clip | frames | seconds | actions |
|---|---|---|---|
{rows}

{len(clips)} clips, {total} frames in all.
"""
