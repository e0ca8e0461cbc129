"""Paper extractors: each architecture with random weights, saved as the public checkpoint is laid out,
loaded through the real loaders, run on a batch; wrong files refused with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facex_data import schema
from facex_data.extractors import AlignedFaces, ExtractorOptions
from facex_data.extractors.nets import CheckpointError, read_state_dict
from facex_data.extractors.nets.bisenet import BiSeNet
from facex_data.extractors.nets.heads import L2CS, ReconNet
from facex_data.extractors.nets.iresnet import IRESNET100, IResNet
from facex_data.extractors.nets.resnet import RESNET50
from facex_data.extractors.offline import crop_template
from facex_data.extractors.paper import (
    ArcFaceIdentity,
    BiSeNetParsing,
    Deep3DCoefficients,
    L2CSGaze,
    ScrfdAligner,
    layer4_tensor,
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
def faces() -> tuple[AlignedFaces, np.ndarray]:
    """Two random aligned crops with their 5 points where the aligner puts them."""
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (2, CROP, CROP, 3), dtype=np.uint8)
    points5 = np.stack([crop_template(CROP)] * 2).astype(np.float32)
    return AlignedFaces(crops, np.zeros((2, 68, 2), np.float32)), points5


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
    embedding, idmap = identity(*faces)
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
    emb_onnx, map_onnx = by_onnx(*faces)
    emb_torch, map_torch = ArcFaceIdentity(OPTIONS, pth)(*faces)
    assert map_onnx.shape == (2, 512, 8, 8) and map_onnx.dtype == np.float16
    np.testing.assert_allclose(emb_onnx, emb_torch, atol=1e-4)
    np.testing.assert_allclose(map_onnx.astype(np.float32), map_torch.astype(np.float32), atol=2e-3)


def test_arcface_onnx_fixed_to_one_image_still_runs_a_batch(tmp_path, faces):
    path = write_arcface_onnx(tmp_path / "r.onnx", SMALL, dynamic_batch=False)
    identity = ArcFaceIdentity(OPTIONS, path)
    assert identity.runner.per_sample
    embedding, idmap = identity(*faces)
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
    parsing = BiSeNetParsing(OPTIONS, path)(faces[0])
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
    coeffs = extractor(*faces)
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
    gaze = L2CSGaze(OPTIONS, path)(*faces)
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


def test_non_detector_onnx_is_refused_as_detector(tmp_path):
    path = write_arcface_onnx(tmp_path / "det_10g.onnx", SMALL)
    with pytest.raises(CheckpointError, match="not an SCRFD detector"):
        ScrfdAligner(OPTIONS, path)
