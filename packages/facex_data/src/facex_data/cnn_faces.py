"""dlib's CNN face detector (MMOD, shipped in face-recognition-models): where a dlib aligner's HOG detector finds no
face in an input image, this one often does (glasses, a grimace, hard light: HOG misses a plain frontal portrait
among the real test photos that MMOD finds at confidence 1.05).

Inference uses it as a fallback for the images a user hands in (`FaceXPipeline.detect`); extraction and video frames
keep HOG alone (MMOD costs about 2.5 s a frame on one core). The face it finds is aligned and measured exactly as
the aligner would have done from its own box: the same 68-point predictor, 5-point similarity and crop.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from facex_data.extractors import Detection, ExtractorSet, FaceFeatures
from facex_data.extractors.align import five_points, similarity_transform
from facex_data.extractors.offline import DlibAligner
from facex_data.faces import dlib_model_path

# the image is scaled down to this longest side first: MMOD then takes 1.3-2.5 s on one core (6 s at 720 px, 19 s at
# 1440) and still finds every face in the real test photos (at 320 px it misses both paintings); a small face in a
# large photo can fall below what it sees: such an input stays "no face"
MAX_SIDE = 480

Box = tuple[int, int, int, int]


@functools.lru_cache(maxsize=1)
def cnn_detector():
    """dlib's MMOD CNN face detector with the weights face-recognition-models ships."""
    import dlib

    return dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod_detector")))


def detect_faces_cnn(image: np.ndarray, max_side: int = MAX_SIDE) -> list[Box]:
    """(left, top, right, bottom) boxes, in `image` pixels, of the faces MMOD finds in an HxWx3 uint8 RGB image,
    largest first."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    found = cnn_detector()(np.ascontiguousarray(image), 0)
    boxes = [tuple(round(v / scale) for v in (d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()))
             for d in found]  # fmt: skip
    return sorted(boxes, key=lambda b: ((b[2] - b[0]) * (b[3] - b[1]), -b[0], -b[1]), reverse=True)


def align_box(aligner: DlibAligner, image: np.ndarray, box: Box, n_faces: int) -> Detection:
    """The face in `box` aligned as `aligner` aligns the largest face its HOG detector finds."""
    import dlib

    image = np.ascontiguousarray(image)
    shape = aligner.predictor(image, dlib.rectangle(*box))
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    m = similarity_transform(five_points(points), aligner.template)
    crop = cv2.warpAffine(image, m, (aligner.size, aligner.size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # fmt: skip
    landmarks = (points @ m[:, :2].T + m[:, 2]).astype(np.float32)
    return Detection(crop, landmarks, box, n_faces, m, five_points(landmarks).astype(np.float32))


def supports(extractors: ExtractorSet) -> bool:
    """Whether the backend aligns with dlib's HOG detector (offline, and paper with `detector: dlib`): the aligners
    this fallback can stand in for. SCRFD finds such faces itself."""
    return isinstance(extractors.aligner, DlibAligner)


def features_cnn(extractors: ExtractorSet, frame: np.ndarray) -> FaceFeatures | None:
    """The largest MMOD face of `frame` aligned and measured by `extractors` (its detection counts MMOD's faces),
    or None where MMOD finds none or the backend does not align with dlib."""
    if not supports(extractors):
        return None
    boxes = detect_faces_cnn(frame)
    if not boxes:
        return None
    return extractors.measured([align_box(extractors.aligner, frame, boxes[0], len(boxes))])[0]
