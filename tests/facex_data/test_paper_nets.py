"""Paper extractors: each architecture with random weights, saved as the public checkpoint is laid out,
loaded through the real loaders, run on a batch; wrong files refused with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facex_data import schema
from facex_data.extractors import AlignedFaces, ExtractorOptions
from facex_data.extractors.align import crop_template
from facex_data.extractors.nets import CheckpointError, read_state_dict
from facex_data.extractors.nets.bisenet import BiSeNet
from facex_data.extractors.nets.heads import L2CS, ReconNet
from facex_data.extractors.nets.iresnet import IRESNET100, IResNet
from facex_data.extractors.nets.resnet import RESNET50
from facex_data.extractors.paper import (
    DEEP3D_INPUT,
    ArcFaceIdentity,
    BiSeNetParsing,
    Deep3DCoefficients,
    L2CSGaze,
    ScrfdAligner,
    _ranked,
    deep3d_crop,
    layer4_tensor,
    load_lm3d,
)
from facex_data.standins import SMALL, write_arcface_onnx, write_lm3d, write_scrfd

CROP = 128
OPTIONS = ExtractorOptions(crop_size=CROP)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def faces() -> AlignedFaces:
    """Two random aligned crops with their 5 points where the aligner puts them."""
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (2, CROP, CROP, 3), dtype=np.uint8)
    points5 = np.stack([crop_template(CROP)] * 2).astype(np.float32)
    return AlignedFaces(crops, np.zeros((2, 68, 2), np.float32), points5)


def test_iresnet100_public_layout_loads_and_gives_embedding_and_8x8_map(tmp_path, faces):
    torch.manual_seed(0)
    model = IResNet(IRESNET100)
    state = model.state_dict()
    # arcface_torch's glint360k backbone.pth: these keys and shapes
    assert state["conv1.weight"].shape == (64, 3, 3, 3)
    assert state["layer3.29.conv2.weight"].shape == (256, 256, 3, 3)
    assert state["layer4.0.downsample.0.weight"].shape == (512, 256, 1, 1)
    assert state["fc.weight"].shape == (512, 512 * 7 * 7)
    assert state["features.weight"].shape == (512,)
    path = tmp_path / "glint360k_r100.pth"
    torch.save(state, path)
    identity = ArcFaceIdentity(OPTIONS, path)
    embedding, idmap = identity(faces)
    assert embedding.shape == (2, schema.ID_DIM["paper"]) and embedding.dtype == np.float32
    assert idmap.shape == (2, *schema.IDMAP_SHAPE) == (2, 512, 8, 8) and idmap.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5)
    assert np.isfinite(idmap.astype(np.float32)).all()


def test_arcface_onnx_surgery_exposes_layer4_and_matches_torch(tmp_path, faces):
    torch.manual_seed(0)
    pth = tmp_path / "r.pth"
    torch.save(IResNet(SMALL).state_dict(), pth)
    onnx_path = write_arcface_onnx(tmp_path / "r.onnx", SMALL, seed=0)
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    assert [o.name for o in graph.output] == ["embedding"]  # as shipped: the map is not an output
    assert layer4_tensor(graph).startswith("/layer4/")
    by_onnx = ArcFaceIdentity(OPTIONS, onnx_path)
    assert by_onnx.runner.trunk is not None  # the 128-px map comes from the extracted trunk
    emb_onnx, map_onnx = by_onnx(faces)
    emb_torch, map_torch = ArcFaceIdentity(OPTIONS, pth)(faces)
    assert map_onnx.shape == (2, 512, 8, 8) and map_onnx.dtype == np.float16
    np.testing.assert_allclose(emb_onnx, emb_torch, atol=1e-4)
    np.testing.assert_allclose(map_onnx.astype(np.float32), map_torch.astype(np.float32), atol=2e-3)


def test_arcface_onnx_fixed_to_one_image_still_runs_a_batch(tmp_path, faces):
    path = write_arcface_onnx(tmp_path / "r.onnx", SMALL, dynamic_batch=False)
    identity = ArcFaceIdentity(OPTIONS, path)
    assert identity.runner.per_sample
    embedding, idmap = identity(faces)
    assert embedding.shape == (2, 512) and idmap.shape == (2, 512, 8, 8)


def test_arcface_onnx_without_a_head_is_refused(tmp_path):
    from facex_data.standins import export_onnx

    path = export_onnx(torch.nn.Conv2d(3, 4, 3), torch.zeros(1, 3, 112, 112), tmp_path / "conv.onnx", "x", ["y"], {})
    with pytest.raises(CheckpointError, match="no ArcFace head"):
        ArcFaceIdentity(OPTIONS, path)


def test_bisenet_79999_iter_layout_gives_19_class_map_at_crop_size(tmp_path, faces):
    torch.manual_seed(0)
    state = BiSeNet(19).state_dict()
    assert state["cp.resnet.conv1.weight"].shape == (64, 3, 7, 7)
    assert state["cp.arm16.conv.conv.weight"].shape == (128, 256, 3, 3)
    assert state["ffm.convblk.conv.weight"].shape == (256, 256, 1, 1)
    assert state["conv_out.conv_out.weight"].shape == (19, 256, 1, 1)
    assert state["conv_out16.conv_out.weight"].shape == (19, 64, 1, 1)
    path = tmp_path / "79999_iter.pth"
    torch.save(state, path)
    parsing = BiSeNetParsing(OPTIONS, path)(faces)
    assert parsing.shape == (2, CROP, CROP) and parsing.dtype == np.uint8
    assert parsing.max() < 19


def test_bisenet_with_other_class_count_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "79999_iter.pth"
    torch.save(BiSeNet(11).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"wrong shape .*conv_out.*\(11, 256, 1, 1\)"):
        BiSeNetParsing(OPTIONS, path)


@pytest.mark.parametrize("pupil", [False, True])
def test_deep3dfacerecon_checkpoint_gives_257_or_261_coefficients(tmp_path, faces, pupil):
    torch.manual_seed(0)
    net = ReconNet(RESNET50, pupil=pupil)
    state = net.state_dict()
    assert state["backbone.layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert state["final_layers.6.weight"].shape == (1, 2048, 1, 1)
    path = tmp_path / "epoch_20.pth"
    torch.save({"net_recon": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 20}, path)
    extractor = Deep3DCoefficients(OPTIONS, path, write_lm3d(tmp_path / "similarity_Lm3D_all.mat"))
    coeffs = extractor(faces)
    dim = 261 if pupil else 257
    assert coeffs.shape == (2, dim) and coeffs.dtype == np.float32
    named = schema.split_tdmm(coeffs, "paper")
    assert {k: v.shape[1] for k, v in named.items()} == {
        "identity": 80,
        "expression": 64,
        "texture": 80,
        "angles": 3,
        "lighting": 27,
        "translation": 3,
        **({"pupil": 4} if pupil else {}),
    }
    schema.check_sample_arrays(
        "paper",
        np.zeros(512, np.float32),
        coeffs[0],
        np.zeros(2, np.float32),
        np.zeros((68, 2), np.float32),
        np.zeros((CROP, CROP), np.uint8),
        CROP,
    )


def test_deep3dfacerecon_without_the_net_recon_wrapper_keys_is_refused(tmp_path):
    path = tmp_path / "epoch_20.pth"
    torch.save(BiSeNet(19).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a Deep3DFaceRecon checkpoint"):
        Deep3DCoefficients(OPTIONS, path, write_lm3d(tmp_path / "lm.mat"))


def test_l2cs_gaze360_checkpoint_gives_yaw_pitch_radians(tmp_path, faces):
    torch.manual_seed(0)
    state = L2CS(RESNET50, 90).state_dict()
    assert state["fc_yaw_gaze.weight"].shape == (90, 2048)
    assert state["fc_finetune.weight"].shape == (3, 2051)
    path = tmp_path / "L2CSNet_gaze360.pkl"
    torch.save(state, path)
    gaze = L2CSGaze(OPTIONS, path)(faces)
    assert gaze.shape == (2, schema.GAZE_DIM) and gaze.dtype == np.float32
    assert np.all(np.abs(gaze) <= np.pi)


def test_gaze_file_with_wrong_keys_is_refused(tmp_path):
    path = tmp_path / "L2CSNet_gaze360.pkl"
    torch.save(ReconNet(SMALL).state_dict(), path)
    with pytest.raises(CheckpointError, match="not an L2CS-Net checkpoint"):
        L2CSGaze(OPTIONS, path)


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "79999_iter.pth"
    torch.save({"weight": torch.zeros(1), "payload": _RunsCode(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="refused to load"):
        BiSeNetParsing(OPTIONS, path)
    assert not marker.exists()


def test_scrfd_onnx_through_insightface_gives_crop_68_landmarks_and_5_points(tmp_path):
    path = write_scrfd(tmp_path / "det_10g.onnx")
    aligner = ScrfdAligner(OPTIONS, path)
    frames = np.random.default_rng(1).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    detections = aligner(frames)
    for d in detections:
        assert d is not None and d.n_faces >= 1
        assert d.crop.shape == (CROP, CROP, 3) and d.crop.dtype == np.uint8
        assert d.landmarks.shape == (68, 2) and d.landmarks.dtype == np.float32
        assert d.points5.shape == (5, 2)
        # the detected 5 points land on the crop template (least squares: within a few pixels)
        np.testing.assert_allclose(d.points5, crop_template(CROP), atol=3.0)
    for frame, d in zip(frames, detections):  # the faces a face index counts: the kept one first, all of them
        boxes = aligner.boxes(frame)
        assert boxes[0] == d.bbox and len(boxes) == d.n_faces
    # the rank: larger first, ties by position (left, then top), as align picks its face
    ranked = _ranked(np.array([[5, 0, 15, 10, 0.9], [0, 0, 20, 20, 0.8], [0, 4, 10, 14, 0.9], [0, 0, 10, 10, 0.7]]))
    assert ranked.tolist() == [1, 3, 2, 0]


def test_non_detector_onnx_is_refused_as_detector(tmp_path):
    path = write_arcface_onnx(tmp_path / "det_10g.onnx", SMALL)
    with pytest.raises(CheckpointError, match="not an SCRFD detector"):
        ScrfdAligner(OPTIONS, path)


def _upstream_align_img(image: np.ndarray, lm5: np.ndarray, lm3d: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Deep3DFaceRecon_pytorch's `util/preprocess.py` POS + `resize_n_crop_img`, re-derived here from upstream's
    formulas in upstream's own array conventions ((2, N) points, (8, 1) solutions, numpy int32 casts), for a
    (H, W, 3) image and its 5 points after upstream's loader flipped y (`lm[:, -1] = H - 1 - lm[:, -1]`)."""
    from PIL import Image

    xp, x = lm5.T, lm3d.T  # POS(lm5p.transpose(), lm3D.transpose())
    npts = xp.shape[1]
    a = np.zeros([2 * npts, 8])
    a[0 : 2 * npts - 1 : 2, 0:3] = x.transpose()
    a[0 : 2 * npts - 1 : 2, 3] = 1
    a[1 : 2 * npts : 2, 4:7] = x.transpose()
    a[1 : 2 * npts : 2, 7] = 1
    b = np.reshape(xp.transpose(), [2 * npts, 1])
    k = np.linalg.lstsq(a, b, rcond=None)[0]
    s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    t = np.stack([k[3], k[7]], axis=0)
    s = 102.0 / s
    img = Image.fromarray(image)
    w0, h0 = img.size
    w = (w0 * s).astype(np.int32)
    h = (h0 * s).astype(np.int32)
    left = (w / 2 - 224.0 / 2 + ((t[0] - w0 / 2) * s).item()).astype(np.int32)
    up = (h / 2 - 224.0 / 2 + ((h0 / 2 - t[1]) * s).item()).astype(np.int32)
    img = img.resize((int(w), int(h)), resample=Image.Resampling.BICUBIC)
    img = img.crop((int(left), int(up), int(left) + 224, int(up) + 224))
    return np.asarray(img), (int(w), int(h), int(left), int(up))


def test_deep3dfacerecon_crop_equals_upstream_align_img(tmp_path):
    """Same integer truncations, PIL BICUBIC resize and crop offsets as upstream (pixel for pixel), on faces of
    several sizes and positions, including crops that reach past the image (filled with black as PIL does)."""
    lm3d = load_lm3d(write_lm3d(tmp_path / "similarity_Lm3D_all.mat"))
    rng = np.random.default_rng(3)
    for size, scale, shift in ((128, 0.5, (0, 0)), (256, 0.45, (9.3, -4.1)), (512, 0.3, (-60.7, 40.2)),
                               (256, 1.1, (0.5, 0.5))):  # fmt: skip
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        jitter = rng.normal(0, 1.5, (5, 2))
        points5 = (crop_template(size) - size / 2) * scale / 0.55 + size / 2 + np.array(shift) + jitter
        points5 = points5.astype(np.float32)
        ours = deep3d_crop(image, points5, lm3d)
        flipped = points5.copy()
        flipped[:, 1] = size - 1 - flipped[:, 1]
        theirs, (w, h, left, up) = _upstream_align_img(image, flipped, lm3d)
        assert ours.shape == theirs.shape == (DEEP3D_INPUT, DEEP3D_INPUT, 3)
        assert np.array_equal(ours, theirs), (size, scale, shift, w, h, left, up)
    assert left < 0 or up < 0 or left + 224 > w or up + 224 > h  # the last face reaches past the image
