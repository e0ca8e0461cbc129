"""dlib's CNN detector as the fallback for input images the HOG aligners find no face in (facex_data.cnn_faces):
it finds the real portrait HOG misses, finds nothing in the animal photos, and aligns the face in its box exactly as
the aligner aligns the face in its own."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from facex_data.cnn_faces import align_box, detect_faces_cnn, features_cnn, supports
from facex_data.extractors import ExtractorOptions, build_extractors
from facex_data.faces import detect_faces

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def offline():
    return build_extractors("offline", ExtractorOptions(crop_size=256))


def image(real_data, name: str) -> np.ndarray:
    return np.asarray(Image.open(real_data / "images" / name).convert("RGB"))


def test_the_aligners_own_box_gives_exactly_its_own_detection(offline, real_data):
    """align_box repeats DlibAligner.align from the box on: if one changes without the other, this fails."""
    frame = image(real_data, "portrait_02.jpg")
    own = offline.aligner.align(frame)
    again = align_box(offline.aligner, frame, own.bbox, own.n_faces)
    np.testing.assert_array_equal(again.crop, own.crop)
    np.testing.assert_array_equal(again.landmarks, own.landmarks)
    np.testing.assert_array_equal(again.transform, own.transform)
    np.testing.assert_array_equal(again.points5, own.points5)


def test_the_aligners_boxes_list_every_face_its_own_first(offline, real_data):
    """DlibAligner.boxes (what a face index counts): every HOG face, larger first, the one align keeps first."""
    big = np.asarray(Image.fromarray(image(real_data, "portrait_05.jpg")).resize((300, 300)))
    small = np.asarray(Image.fromarray(image(real_data, "portrait_02.jpg")).resize((200, 200)))
    for order in ((big, small), (small, big)):
        canvas = np.full((360, 640, 3), 90, np.uint8)
        canvas[: order[0].shape[0], : order[0].shape[1]] = order[0]
        canvas[50 : 50 + order[1].shape[0], 320 : 320 + order[1].shape[1]] = order[1]
        kept = offline.aligner.align(canvas)
        boxes = offline.aligner.boxes(canvas)
        assert len(boxes) == kept.n_faces == 2 and boxes[0] == kept.bbox
        assert (boxes[0][2] - boxes[0][0]) > (boxes[1][2] - boxes[1][0])
        assert sorted(boxes) == sorted(detect_faces(canvas, upsample=0))


def test_cnn_finds_the_frontal_portrait_hog_misses_and_aligns_it(offline, real_data):
    frame = image(real_data, "portrait_01.jpg")  # glasses and a grimace: HOG finds nothing, even upsampled
    assert detect_faces(frame, upsample=1) == [] and offline.features(frame[None]) == [None]
    boxes = detect_faces_cnn(frame)
    assert len(boxes) == 1
    left, top, right, bottom = boxes[0]
    # in the image's own pixels (found on a copy scaled to 480 px): around the face in the middle of the portrait
    assert 0.25 < (right - left) / 720 < 0.45
    assert 0.4 < (left + right) / 1440 < 0.6 and 0.4 < (top + bottom) / 1440 < 0.6
    found = features_cnn(offline, frame)
    assert found is not None and found.detection.n_faces == 1 and found.detection.bbox == boxes[0]
    # aligned like every other face: its eyes land where the crop template puts eyes
    template = offline.aligner.template
    eyes = found.detection.points5[:2]
    assert np.abs(eyes - template[:2]).max() < 0.04 * 256, (eyes, template[:2])
    assert found.identity.shape == (128,) and np.isfinite(found.identity).all()


def iou(a, b) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_a_cnn_box_aligns_a_face_about_as_the_hog_box_does(offline, real_data):
    for name in ("portrait_02.jpg", "portrait_04.jpg", "painting_01.jpg"):  # 720, 900 and 729 px: each scaled down
        frame = image(real_data, name)
        hog = offline.aligner.align(frame)
        box = detect_faces_cnn(frame)[0]
        assert iou(box, hog.bbox) > 0.5, (name, box, hog.bbox)  # 0.58-0.64: MMOD's boxes sit a little higher
        cnn = align_box(offline.aligner, frame, box, 1)
        # the 68 landmarks start from the box: another box moves them a little, not off the face
        assert np.abs(cnn.landmarks - hog.landmarks).mean() < 0.02 * 256, name


def test_no_face_in_the_animal_photos(offline, real_data):
    for name in ("dog_01.jpg", "cat_01.jpg"):
        frame = image(real_data, name)
        assert detect_faces_cnn(frame) == [] and features_cnn(offline, frame) is None, name


def test_only_the_dlib_aligners_have_the_fallback(offline):
    class Scrfd:  # any other aligner: SCRFD finds such faces itself
        pass

    assert supports(offline)
    other = dataclasses.replace(offline, aligner=Scrfd())
    assert not supports(other) and features_cnn(other, np.zeros((64, 64, 3), np.uint8)) is None
