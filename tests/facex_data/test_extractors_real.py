"""The offline extractors on real talking-head footage (../shared/data/real/videos)."""

from __future__ import annotations

import itertools

import decord
import numpy as np
import pytest

from facex_data import schema
from facex_data.extractors import available_backends, build_extractors
from facex_data.extractors.offline import L_EYE, MOUTH, R_EYE

pytestmark = pytest.mark.real
CLIPS = ("p01", "p02", "p03", "p04", "p05", "p06")


@pytest.fixture(scope="module")
def offline():
    return build_extractors("offline")


@pytest.fixture(scope="module")
def clip_features(real_data, offline) -> dict:
    """Three frames spread over each real clip -> FaceFeatures."""
    out = {}
    for name in CLIPS:
        vr = decord.VideoReader(str(real_data / "videos" / f"{name}.mp4"), num_threads=1)
        n = len(vr)
        feats = offline.features(vr.get_batch([n // 6, n // 2, 5 * n // 6]).asnumpy())
        assert all(f is not None for f in feats), f"{name}: a frame without a detected face"
        out[name] = feats
    return out


def test_identity_same_clip_closer_than_any_cross_clip_pair(clip_features):
    ids = {name: [f.identity for f in feats] for name, feats in clip_features.items()}
    same = max(np.linalg.norm(a - b) for v in ids.values() for a, b in itertools.combinations(v, 2))
    cross = min(
        np.linalg.norm(a - b) for (p, v), (q, w) in itertools.combinations(ids.items(), 2) for a in v for b in w
    )
    assert same < cross, f"max same-clip distance {same:.3f} >= min cross-clip distance {cross:.3f}"


def test_outputs_follow_the_schema(clip_features):
    f = clip_features["p01"][0]
    schema.check_sample_arrays("offline", f.identity, f.tdmm, f.gaze, f.detection.landmarks, f.parsing, 256)
    assert f.detection.crop.shape == (256, 256, 3) and f.detection.crop.dtype == np.uint8


def test_eye_classes_lie_inside_the_eye_landmarks(clip_features):
    for name, feats in clip_features.items():
        for f in feats:
            lmk = f.detection.landmarks
            for cls, eye in ((schema.CLASS_ID["l_eye"], L_EYE), (schema.CLASS_ID["r_eye"], R_EYE)):
                ys, xs = np.nonzero(f.parsing == cls)
                assert len(xs) > 0, f"{name}: no {schema.PARSING_CLASSES[cls]} pixels"
                lo, hi = lmk[eye].min(0) - 1, lmk[eye].max(0) + 1
                assert (xs >= lo[0]).all() and (xs <= hi[0]).all() and (ys >= lo[1]).all() and (ys <= hi[1]).all()


def test_lips_lie_below_the_nose_and_unknown_is_used_outside_the_face(clip_features):
    for name, feats in clip_features.items():
        for f in feats:
            nose_y = np.nonzero(f.parsing == schema.CLASS_ID["nose"])[0]
            for lip in ("u_lip", "l_lip"):
                lip_y = np.nonzero(f.parsing == schema.CLASS_ID[lip])[0]
                assert len(lip_y) and lip_y.mean() > nose_y.mean(), f"{name}: {lip} not below the nose"
            assert f.detection.landmarks[MOUTH, 1].mean() > f.detection.landmarks[30, 1]
            # hair/background cannot be told apart: the crop's corners must say "unknown", not "background"
            assert f.parsing[0, 0] == schema.UNKNOWN and f.parsing[-1, -1] == schema.UNKNOWN
            assert schema.CLASS_ID["hair"] not in f.parsing and schema.CLASS_ID["background"] not in f.parsing


def test_mirrored_frame_flips_the_sign_of_yaw(real_data, offline):
    yaw = slice(*schema.TDMM_LAYOUTS["offline"]["angles"])
    vr = decord.VideoReader(str(real_data / "videos" / "p03.mp4"), num_threads=1)  # the clip with head turns
    frames = vr.get_batch(list(range(0, len(vr), 90))).asnumpy()
    turned = 0
    for frame, mirror in zip(offline.features(frames), offline.features(frames[:, :, ::-1].copy())):
        y, ym = frame.tdmm[yaw][0], mirror.tdmm[yaw][0]
        if abs(y) > np.radians(8):  # a clear head turn; near-frontal yaw is within landmark noise
            turned += 1
            assert np.sign(ym) == -np.sign(y), f"yaw {np.degrees(y):.1f} deg, mirrored {np.degrees(ym):.1f} deg"
            assert abs(abs(ym) - abs(y)) < np.radians(8)
    assert turned >= 2, "the clip should contain clearly turned heads"


def test_describe_records_names_versions_and_weight_hashes(offline):
    desc = offline.describe()
    assert desc["backend"] == "offline" and "offline" in available_backends()
    assert len(desc["identity"]["weights"]["dlib_face_recognition_resnet_model_v1.dat"]) == 64
    assert len(desc["detector"]["weights"]["shape_predictor_68_face_landmarks.dat"]) == 64
    assert "hair" not in desc["parsing_classes"] and desc["parsing_unknown_value"] == 255


def test_unknown_backend_names_the_setting():
    with pytest.raises(ValueError, match="extract.extractors"):
        build_extractors("no-such-backend")
