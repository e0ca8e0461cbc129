"""FaceXPipeline on the tiny backbone: every task on real faces and on an embedded-sample frame, paste-back exactness,
controllable swap, conditions once per call, seeds, face choice and the errors a user can cause."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from facex_model.pipeline import Edit, FaceXInputError, FaceXPipeline, NoFaceError

STEPS = 2


@pytest.fixture(scope="module")
def wide_target(photos, tmp_path_factory) -> Path:
    """The target face on a wider canvas, so that even reenactment (which repaints the whole aligned crop) leaves
    pixels that must stay the target's."""
    canvas = Image.new("RGB", (640, 576), (70, 90, 110))
    canvas.paste(Image.open(photos["target"]).convert("RGB"), (160, 144))
    path = tmp_path_factory.mktemp("wide") / "target.png"
    canvas.save(path)
    return path


def target_array(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def assert_outside_mask_is_target(out, target: np.ndarray) -> None:
    image = np.asarray(out.image)
    assert image.shape == target.shape
    outside = out.mask == 0
    assert outside.sum() > outside.size / 10, "the paste mask covers (almost) the whole frame: nothing is checked"
    assert np.array_equal(image[outside], target[outside])


@pytest.mark.real
@pytest.mark.parametrize(
    "task, kwargs",
    [
        ("swap", {}),
        ("headswap", {}),
        ("reenact", {}),
        ("edit", {"regions": ["lips", "eyes"]}),
    ],
)
def test_task_output_has_target_size_and_target_pixels_outside_the_mask(pipe, photos, wide_target, task, kwargs):
    out = pipe(task, photos["source"], wide_target, steps=STEPS, watermark=False, **kwargs)
    target = target_array(wide_target)
    assert out.image.size == (640, 576)
    assert out.crop.size == (pipe.resolution, pipe.resolution)
    assert out.inpaint_reference.size == (pipe.resolution, pipe.resolution)
    assert (out.mask > 0).mean() > 0
    assert_outside_mask_is_target(out, target)
    assert not np.array_equal(np.asarray(out.image), target)


@pytest.mark.real
def test_inpaint_repaints_only_around_the_user_mask(pipe, photos):
    target = target_array(photos["target"])
    mask = np.zeros(target.shape[:2], np.uint8)
    mask[120:180, 130:190] = 255
    out = pipe("inpaint", target=photos["target"], mask=mask, steps=STEPS, watermark=False)
    assert_outside_mask_is_target(out, target)
    assert (out.mask > 0).sum() < mask.size / 3
    assert out.mask[150, 160] > 0.99


@pytest.mark.real
def test_animate_runs_on_another_sd_unet(model_dir, other_backbone, photos, wide_target, pipe):
    animated = FaceXPipeline.from_pretrained(model_dir, backbone_path=other_backbone)
    out = animated("animate", photos["source"], wide_target, steps=STEPS, watermark=False)
    base = pipe("reenact", photos["source"], wide_target, steps=STEPS, watermark=False)
    assert out.image.size == (640, 576)
    assert_outside_mask_is_target(out, target_array(wide_target))
    assert not np.array_equal(np.asarray(out.crop), np.asarray(base.crop))


@pytest.mark.real
def test_controllable_swap_changes_only_the_chosen_region(pipe, photos):
    target = target_array(photos["target"])
    full = pipe("swap", photos["source"], photos["target"], steps=STEPS, watermark=False)
    eyes = pipe("swap", photos["source"], photos["target"], regions=["eyes"], steps=STEPS, watermark=False)
    assert_outside_mask_is_target(eyes, target)
    assert 0 < (eyes.mask > 0).sum() < (full.mask > 0).sum() / 2
    changed = np.any(np.asarray(eyes.image) != target, axis=-1)
    assert changed.any() and not changed[eyes.mask == 0].any()


@pytest.mark.real
def test_conditions_encoded_once_per_call(pipe, photos):
    calls = {"sd_adapter": 0, "unet": 0}
    hooks = [
        getattr(pipe.model, n).register_forward_hook(lambda *_, n=n: calls.__setitem__(n, calls[n] + 1)) for n in calls
    ]
    try:
        pipe("swap", photos["source"], photos["target"], steps=3, watermark=False)
    finally:
        for h in hooks:
            h.remove()
    assert calls == {"sd_adapter": 1, "unet": 3}


@pytest.mark.real
def test_same_seed_same_image_other_seed_differs(pipe, photos):
    a = pipe("swap", photos["source"], photos["target"], steps=STEPS, seed=5, watermark=False)
    b = pipe("swap", photos["source"], photos["target"], steps=STEPS, seed=5, watermark=False)
    c = pipe("swap", photos["source"], photos["target"], steps=STEPS, seed=6, watermark=False)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.crop), np.asarray(c.crop))


@pytest.mark.real
@pytest.mark.parametrize("scheduler", ["ddim", "euler"])  # euler draws step noise: one stream per row
def test_generate_many_gives_each_pair_what_generate_gives_it(pipe, photos, scheduler):
    source, target = pipe.detect(photos["source"], "source"), pipe.detect(photos["target"], "target")
    pairs, seeds = [(source, target), (target, source), (source, target)], [5, 6, 7]
    batched = pipe.generate_many("swap", pairs, steps=STEPS, scheduler=scheduler, seeds=seeds)
    for (s, t), seed, out in zip(pairs, seeds, batched, strict=True):
        alone = pipe.generate("swap", s, t, steps=STEPS, scheduler=scheduler, seed=seed)
        assert out.image.size == alone.image.size and out.seed == seed
        assert np.array_equal(out.hole, alone.hole) and np.abs(out.mask - alone.mask).max() < 1e-3  # its own hole
        diff = np.abs(np.asarray(out.image, np.int16) - np.asarray(alone.image, np.int16))
        assert diff.max() <= 4 and diff.mean() < 0.05  # float rounding of a larger batch at most
    assert not np.array_equal(np.asarray(batched[0].crop), np.asarray(batched[2].crop))  # each row its own noise
    with pytest.raises(ValueError, match="one seed per pair"):
        pipe.generate_many("swap", pairs, seeds=[0])
    assert pipe.generate_many("swap", []) == []


@pytest.mark.real
def test_progressive_editing_in_sequence_and_mixture_in_one_pass(pipe, photos):
    target = target_array(photos["target"])
    seq = pipe(
        "edit", target=photos["target"], sequential=True, steps=STEPS, watermark=False,
        edits=[Edit(("lips",), photos["source"]), Edit(("eyes",), photos["other"])],
    )  # fmt: skip
    assert len(seq.steps) == 2
    assert_outside_mask_is_target(seq, target)
    calls = {"sd_adapter": 0, "region_encoder": 0}
    hooks = [
        getattr(pipe.model, n).register_forward_hook(lambda *_, n=n: calls.__setitem__(n, calls[n] + 1)) for n in calls
    ]
    try:
        mixed = pipe(
            "edit", target=photos["target"], steps=STEPS, watermark=False,
            edits=[Edit(("lips",), photos["source"]), Edit(("eyes",), photos["other"])],
        )  # fmt: skip
    finally:
        for h in hooks:
            h.remove()
    # one f_SD, with region tokens from the edited image and from each of the two references
    assert calls == {"sd_adapter": 1, "region_encoder": 3} and mixed.steps == []
    assert_outside_mask_is_target(mixed, target)
    assert (mixed.mask > 0).any()


@pytest.mark.real
def test_a_sequential_edit_measures_each_step_output_where_the_target_was_aligned(pipe, photos, monkeypatch):
    """A generated face need not be detectable (the demo's models give face-coloured blobs): the next edit step
    measures the previous output at the target's alignment instead of detecting it again."""
    target = pipe.detect(photos["target"], "target")
    same = pipe._remeasure(target, target.frame, "again")  # the unchanged frame: exactly the aligner's crop
    assert np.array_equal(same.features.detection.crop, target.features.detection.crop)
    assert np.allclose(same.features.identity, target.features.identity, atol=1e-5)

    faced: list = []
    edit_once = pipe._edit_once

    def faceless_steps(face, references, **options):  # each step's output: a flat grey frame, nothing to detect
        faced.append(face)
        out = edit_once(face, references, **options)
        out.image = Image.new("RGB", out.image.size, (128, 128, 128))
        return out

    monkeypatch.setattr(pipe, "_edit_once", faceless_steps)
    with pytest.raises(NoFaceError):
        pipe.detect(np.full_like(target.frame, 128), "grey")
    out = pipe(
        "edit", target=photos["target"], sequential=True, steps=1, watermark=False,
        edits=[Edit(("lips",), photos["source"]), Edit(("eyes",), photos["other"])],
    )  # fmt: skip
    assert len(out.steps) == 2 and len(faced) == 2
    second = faced[1].features.detection
    assert np.array_equal(second.transform, target.features.detection.transform)
    assert np.array_equal(second.landmarks, target.features.detection.landmarks)
    ones = np.ones(target.frame.shape[:2], np.float32)
    inside = cv2.warpAffine(ones, second.transform, second.crop.shape[:2]) > 0.999  # wholly inside the frame
    assert (second.crop[inside] == 128).all() and faced[1].name == "edit step 1 output"


@pytest.mark.parametrize("detector", ["scrfd", "dlib"])
def test_remeasuring_at_a_paper_backend_alignment_gives_its_own_crop_and_features(pipe, tmp_path, monkeypatch,
                                                                                  detector):  # fmt: skip
    """The paper profile's aligners (random-weight stand-ins) crop as the sequential edit re-crops."""
    import torch
    from skimage import data

    from facex_data.extractors import ExtractorOptions, build_extractors
    from facex_data.standins import write_random_standins
    from facex_model.pipeline import Face

    torch.set_num_threads(1)
    write_random_standins(tmp_path / "weights")
    extractors = build_extractors("paper", ExtractorOptions(crop_size=128, weights_dir=tmp_path / "weights",
                                                            detector=detector))  # fmt: skip
    frame = data.astronaut()
    (found,) = extractors.features(frame[None])
    monkeypatch.setattr(pipe, "_extractors", extractors)
    again = pipe._remeasure(Face(frame, found, "astronaut"), frame, "again").features
    assert np.array_equal(again.detection.crop, found.detection.crop) and np.array_equal(again.idmap, found.idmap)
    assert np.allclose(again.identity, found.identity, atol=1e-5) and np.array_equal(again.parsing, found.parsing)


def test_mixture_row_takes_each_region_from_its_reference():
    from facex_model.pipeline import mixture_row

    spec = mixture_row({"reference": ("lips",), "reference1": ("eyes", "brows")})
    assert spec.regions["lips"] == "reference" and spec.regions["eyes"] == "reference1"
    assert spec.regions["nose"] == "source" and spec.side_of("id") == "source"
    assert set(spec.hole_regions) == {"lips", "eyes", "brows"}
    assert spec.hole_sides == ("source", "reference", "reference1")


@pytest.mark.real
def test_face_index_picks_the_smaller_face_and_several_faces_warn(model_dir, photos):
    warnings: list[str] = []
    pipe = FaceXPipeline.from_pretrained(model_dir, warn=warnings.append)
    largest = pipe("swap", photos["source"], photos["pair"], steps=1, watermark=False)
    assert any("2 faces" in w and "--face-index" in w for w in warnings)
    second = pipe("swap", photos["source"], photos["pair"], steps=1, face_index=1, watermark=False)
    cols = lambda m: np.nonzero(m.max(axis=0) > 0)[0].mean()  # noqa: E731
    assert cols(largest.mask) < 300 < cols(second.mask)
    with pytest.raises(FaceXInputError, match="face-index must be 0..1"):
        pipe("swap", photos["source"], photos["pair"], steps=1, face_index=2)


@pytest.mark.real
def test_face_index_one_aligns_only_that_face(model_dir, photos, monkeypatch):
    """The detector's boxes count the faces, so --face-index 1 (on a photo, or on every frame of a video) runs the
    backend's features on the chosen face's window alone, not first on the largest face as well."""
    pipe = FaceXPipeline.from_pretrained(model_dir, warn=lambda _: None)
    extractors, calls = pipe.extractors, []
    features = extractors.features
    monkeypatch.setattr(extractors, "features", lambda frames: calls.append(len(frames)) or features(frames))
    face = pipe.detect(photos["pair"], "target", face_index=1)
    assert calls == [1] and face.n_faces == 2
    largest = pipe.detect(photos["pair"], "target", face_index=0)
    centre = lambda f: (f.features.detection.bbox[0] + f.features.detection.bbox[2]) / 2  # noqa: E731
    assert largest.n_faces == 2 and centre(largest) < 300 < centre(face)


class SmallestFirst:
    """A backend detector that ranks faces its own way (here smallest first), as SCRFD's ranking and count can differ
    from dlib HOG's: it aligns its first face, and `boxes` lists the faces in its order."""

    def __init__(self, base) -> None:
        self.base = base

    def __getattr__(self, name: str):
        return getattr(self.base, name)

    def boxes(self, frame: np.ndarray) -> list[tuple[int, int, int, int]]:
        return self.base.boxes(frame)[::-1]

    def __call__(self, frames: np.ndarray) -> list:
        from facex_data.cnn_faces import align_box

        ranked = [self.boxes(frame) for frame in frames]
        return [align_box(self.base, f, b[0], len(b)) if b else None for f, b in zip(frames, ranked)]


@pytest.mark.real
def test_face_index_counts_faces_in_the_backend_detectors_order(model_dir, photos):
    """--face-index N is the backend detector's N-th face, whatever dlib HOG would rank N-th: with a detector that
    ranks the smaller face first, index 0 is the smaller face and index 1 the larger (it was the same face twice)."""
    import dataclasses

    pipe = FaceXPipeline.from_pretrained(model_dir, warn=lambda _: None)
    pipe._extractors = dataclasses.replace(pipe.extractors, aligner=SmallestFirst(pipe.extractors.aligner))
    cols = lambda m: np.nonzero(m.max(axis=0) > 0)[0].mean()  # noqa: E731
    first = pipe("swap", photos["source"], photos["pair"], steps=1, face_index=0, watermark=False)
    second = pipe("swap", photos["source"], photos["pair"], steps=1, face_index=1, watermark=False)
    assert cols(second.mask) < 300 < cols(first.mask)


def sample_pair(sample_frames) -> tuple[Path, Path]:
    names = sorted(sample_frames)
    source = next(sample_frames[n] for n in names if "grace" in n)
    target = next(sample_frames[n] for n in names if "astronaut" in n)
    return source, target


@pytest.mark.parametrize(
    "task, kwargs",
    [("swap", {}), ("headswap", {}), ("reenact", {}), ("edit", {"regions": ["lips"]}), ("swap", {"regions": ["eyes"]})],
)
def test_every_task_on_embedded_sample_frames(pipe, sample_frames, task, kwargs):
    source, target = sample_pair(sample_frames)
    out = pipe(task, source, target, steps=STEPS, watermark=False, **kwargs)
    assert out.image.size == Image.open(target).size
    assert_outside_mask_is_target(out, target_array(target))


def test_inpaint_and_watermarked_output_on_an_embedded_sample_frame(pipe, sample_frames):
    from facex_model.watermark import detect

    _, target = sample_pair(sample_frames)
    frame = target_array(target)
    mask = np.zeros(frame.shape[:2], np.float32)
    mask[frame.shape[0] // 2 :, :] = 1
    out = pipe("inpaint", target=target, mask=mask, steps=STEPS)
    assert out.image.size == Image.open(target).size
    assert detect(np.asarray(out.image))[0]


@pytest.mark.real
def test_an_input_photo_hog_misses_is_found_by_dlibs_cnn_detector_a_video_frame_is_not(pipe, photos, real_data):
    """portrait_01 (glasses, a grimace): the offline backend's HOG detector finds no face, its CNN one does; inputs
    fall back to it, video frames (`select_face` without `fallback`) do not: seconds a frame."""
    path = real_data / "images" / "portrait_01.jpg"
    face = pipe.detect(path, "source")
    assert face.n_faces == 1 and face.features.identity.shape == (128,)
    with pytest.raises(NoFaceError, match="portrait_01"):
        pipe.select_face(face.frame, f"frame of {path.name}")
    out = pipe("swap", path, photos["target"], steps=1)  # as the source
    assert out.image.size == Image.open(photos["target"]).size
    out = pipe("swap", photos["source"], path, steps=1, watermark=False)  # as the target: only its face changes
    changed = np.abs(np.asarray(out.image, np.int16) - np.asarray(Image.open(path).convert("RGB"), np.int16)).max(2)
    left, top, right, bottom = face.features.detection.bbox
    assert changed[top:bottom, left:right].mean() > 5 and changed[:, :100].max() == 0


@pytest.mark.real
def test_user_errors_name_the_input(pipe, photos, tmp_path):
    with pytest.raises(NoFaceError, match="dog_01.jpg"):
        pipe("swap", photos["dog_01.jpg"], photos["target"], steps=1)
    with pytest.raises(FaceXInputError, match="missing.jpg: file not found"):
        pipe("swap", tmp_path / "missing.jpg", photos["target"], steps=1)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(FaceXInputError, match="not an image or video"):
        pipe("swap", text, photos["target"], steps=1)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(FaceXInputError, match="broken.png: not a readable image"):
        pipe("swap", broken, photos["target"], steps=1)
    with pytest.raises(FaceXInputError, match="unknown region"):
        pipe("edit", photos["source"], photos["target"], regions=["tail"], steps=1)


@pytest.mark.real
def test_large_image_is_downscaled_with_a_warning(model_dir, photos):
    warnings: list[str] = []
    pipe = FaceXPipeline.from_pretrained(model_dir, max_side=256, warn=warnings.append)
    out = pipe("swap", photos["source"], photos["target"], steps=1, watermark=False)
    assert out.image.size == (256, 230)
    assert any("larger than 256 px: downscaled to 256x230" in w for w in warnings)


def test_missing_model_folder_names_the_fix(tmp_path):
    with pytest.raises(FaceXInputError, match="folder not found"):
        FaceXPipeline.from_pretrained(tmp_path / "no_model")
