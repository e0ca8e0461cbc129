"""DVC stage `examples`: one image grid per model and task (source | target | I_R | result) on embedded-sample faces.

    python pipelines/examples.py [--params params.yaml] [--models-dir DIR] [--clips-dir DIR] [--out DIR]

Reads the trained model folders (`examples.models` under `examples.models_dir`), takes a frame of two different
people from the demo clips (`examples.clips_dir`), runs each model's tasks through FaceXPipeline and writes
`examples.out_dir`/<model>_<task>.png plus index.json (what each grid shows, with the settings). Every grid carries
the FaceX watermark and metadata.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script (DVC): make `pipelines` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import ExamplesParams, ParamsError, load_params, repo_relative  # noqa: E402
from pipelines.stage_clock import timed  # noqa: E402

# which tasks show each model off: the specialists their own task, the generalist the rest (paper §4)
MODEL_TASKS: dict[str, tuple[str, ...]] = {
    "generalist": ("headswap", "swap", "reenact", "edit", "inpaint"),
    "reenact": ("reenact",),
    "swap": ("swap", "swap_eyes"),
}
EDIT_REGIONS = ("lips", "eyes")


def people_frames(clips_dir: Path, pipe) -> list[tuple[str, Path, object]]:
    """(person, clip, Face) for the first frame with a face of each person's first clip, in clip order.

    The person of a clip is facex_data.layout.person_of (its ytb_id in celebvhq_info.json)."""
    from facex_data.layout import person_of
    from facex_data.manifest import ClipManifest
    from facex_model.inputs import FaceXInputError, open_video

    seen: dict[str, tuple[str, Path, object]] = {}
    for clip in ClipManifest.scan(clips_dir).clips:
        person = person_of(clip.clip_id, clip.info)
        if person in seen:
            continue
        reader, info = open_video(clip.path)
        for index in sorted({0, info.n_frames // 2, info.n_frames - 1}):
            try:
                seen[person] = (person, clip.path, pipe.detect(reader.frames([index])[0], f"{clip.path} frame {index}"))
                break
            except FaceXInputError:
                continue
    if len(seen) < 2:
        raise ValueError(f"{clips_dir}: need clips of two different people with a detectable face, found {len(seen)}")
    return list(seen.values())


def lower_face_mask(face) -> object:
    """A box over the lower half of the detected face (mouth and chin): the inpainting example's user mask."""
    import numpy as np

    left, top, right, bottom = face.features.detection.bbox
    mask = np.zeros(face.frame.shape[:2], np.float32)
    mid = (top + bottom) // 2
    mask[max(0, mid) : max(0, bottom), max(0, left) : max(0, right)] = 1
    return mask


def run(cfg: ExamplesParams, weights_dir: Path | None = None) -> dict:
    from facex_model.pipeline import Edit, FaceXPipeline
    from facex_model.watermark import save_image

    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    settings = {k: repo_relative(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}  # checkout-free
    index: dict = {"settings": settings, "grids": {}}
    missing = [m for m in cfg.models if not (cfg.models_dir / m / "config.json").is_file()]
    if len(missing) == len(cfg.models):
        raise FileNotFoundError(
            f"no trained model in {cfg.models_dir} ({', '.join(cfg.models)}): run the training stages first"
        )
    people = None
    for name in cfg.models:
        if name in missing:
            print(f"skipping {name}: {cfg.models_dir / name} has no config.json", file=sys.stderr)
            continue
        pipe = FaceXPipeline.from_pretrained(cfg.models_dir / name, weights_dir=weights_dir)
        people = people or people_frames(cfg.clips_dir, pipe)
        (src_name, src_clip, source), (tgt_name, tgt_clip, target) = people[0], people[1]
        options = dict(steps=cfg.steps, scheduler=cfg.scheduler, cfg_scale=cfg.cfg_scale, seed=cfg.seed)
        for task in MODEL_TASKS.get(name, ()):
            if task == "edit":
                out = pipe.edit(target, [Edit(EDIT_REGIONS, source.frame)], **options)
            elif task == "inpaint":
                out = pipe.inpaint(target, lower_face_mask(target), **options)
            elif task == "swap_eyes":
                out = pipe.generate("swap", source, target, regions=("eyes",), **options)
            else:
                out = pipe.generate(task, source, target, **options)
            grid = out.grid(None if task == "inpaint" else source.frame, target.frame, tile=cfg.tile)
            path = save_image(grid, cfg.out_dir / f"{name}_{task}.png")
            index["grids"][path.name] = {
                "model": name, "task": task, "source": f"{src_clip.name} ({src_name})",
                "target": f"{tgt_clip.name} ({tgt_name})", "panels": "source | target | I_R | result",
            }  # fmt: skip
            print(f"wrote {path}")
    (cfg.out_dir / "index.json").write_text(json.dumps(index, indent=2))
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: $FACEX_PARAMS or params.yaml)")
    parser.add_argument("--models-dir", type=Path, help="override the trained model folders' parent")
    parser.add_argument("--clips-dir", type=Path, help="override the demo clips folder")
    parser.add_argument("--out", type=Path, help="override the output folder (data/examples)")
    parser.add_argument("--steps", type=int, help="override the denoising steps")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    overrides = {"models_dir": args.models_dir, "clips_dir": args.clips_dir, "out_dir": args.out,
                 "steps": args.steps}  # fmt: skip
    cfg = replace(params.examples, **{k: v for k, v in overrides.items() if v is not None})
    from facex_model.pipeline import FaceXInputError

    try:
        index = run(cfg, params.weights.dir)
    except (FileNotFoundError, ValueError, FaceXInputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(index['grids'])} grids and index.json in {cfg.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(timed(main))
