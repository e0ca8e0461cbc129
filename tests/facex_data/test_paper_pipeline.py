"""`extractors: paper` end to end on the sample set with random-weight stand-ins: shards with the
paper's shapes (512-d ArcFace embedding + 512x8x8 map, 19-class parsing, 257 coefficients, gaze)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facex_data import schema
from facex_data.extraction import ExtractConfig, run_extraction
from facex_data.layout import complete_shards
from facex_data.paths import InputPath
from facex_data.shards import decode_arrays, iter_samples
from facex_data.standins import write_random_standins


@pytest.fixture(scope="module")
def paper_shards(tmp_path_factory, small_sample):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("paper")
    write_random_standins(root / "weights")
    cfg = ExtractConfig(
        input_dir=InputPath(small_sample),
        out_dir=root / "shards",
        extractors="paper",
        detector="dlib",
        runner="local",
        crop_size=128,
        batch_size=4,
        progress=False,
    )
    summary = run_extraction(cfg, root / "weights")
    torch.set_num_threads(threads)
    return cfg, summary, root / "weights"


def test_paper_backend_returns_none_for_a_frame_without_a_face(paper_shards):
    from skimage import data

    from facex_data.extractors import build_extractors

    cfg, _, weights = paper_shards
    torch.set_num_threads(1)
    extractors = build_extractors("paper", cfg.extractor_options(weights))
    face = data.astronaut()
    out = extractors.features(np.stack([np.zeros_like(face), face]))
    assert out[0] is None
    assert out[1].idmap.shape == (512, 8, 8) and out[1].identity.shape == (512,)
    assert out[1].detection.points5.shape == (5, 2)


def test_paper_measure_of_aligned_faces_equals_features_of_frames(paper_shards):
    """The one interface: measuring a detection's aligned face gives what features() gave for the frame."""
    from skimage import data

    from facex_data.extractors import AlignedFaces, build_extractors

    cfg, _, weights = paper_shards
    torch.set_num_threads(1)
    extractors = build_extractors("paper", cfg.extractor_options(weights))
    (found,) = extractors.features(data.astronaut()[None])
    m = extractors.measure(AlignedFaces.from_detections([found.detection]))
    assert np.allclose(m.identity[0], found.identity, atol=1e-6) and np.array_equal(m.parsing[0], found.parsing)
    assert np.allclose(m.tdmm[0], found.tdmm, atol=1e-5) and np.allclose(m.gaze[0], found.gaze, atol=1e-6)
    assert np.array_equal(m.idmap[0], found.idmap)


def test_paper_extraction_writes_shards_with_the_papers_shapes(paper_shards):
    cfg, summary, _ = paper_shards
    assert summary.clips_written == 2 and summary.samples > 0
    samples = [s for url in complete_shards(cfg.out_dir) for s in iter_samples(url)]
    assert len(samples) == summary.samples
    for raw in samples:
        assert set(schema.SAMPLE_KEYS) | {schema.IDMAP} == set(raw) - {"__key__"}
    sample = decode_arrays(samples[0])
    assert sample["id"].shape == (512,) and sample["id"].dtype == np.float32
    assert sample["idmap"].shape == (512, 8, 8) and sample["idmap"].dtype == np.float16
    assert sample["tdmm"].shape == (257,) and sample["gaze"].shape == (2,)
    assert sample["parsing"].shape == (128, 128) and int(sample["parsing"].max()) < len(schema.PARSING_CLASSES)
    assert sample["image"].shape == (128, 128, 3) and sample["lmk"].shape == (68, 2)
    meta = sample["meta"]["extractors"]
    assert meta["backend"] == "paper"
    assert meta["parsing_classes"] == list(schema.PARSING_CLASSES)
    assert meta["identity"]["weights"]["glint360k_r100.pth"]
    assert meta["tdmm_layout"]["angles"] == [224, 227]
    assert meta["idmap"]["shape"] == [512, 8, 8]
    from facex_model.regions import PAPER_REGIONS, region_masks  # the one place classes group into regions

    masks = region_masks(torch.from_numpy(sample["parsing"])[None].long(), PAPER_REGIONS)
    assert masks.shape == (1, len(PAPER_REGIONS), 128, 128)


def test_paper_tokens_and_named_coefficients_read_back(paper_shards):
    cfg, _, _ = paper_shards
    raw = next(iter_samples(complete_shards(cfg.out_dir)[0]))
    import io

    idmap = np.load(io.BytesIO(raw[schema.IDMAP]))
    tokens = idmap.reshape(512, -1).T
    assert tokens.shape == (64, 512)
    named = schema.split_tdmm(np.load(io.BytesIO(raw[schema.TDMM])), "paper")
    assert named["angles"].shape == (3,) and named["lighting"].shape == (27,)
    assert json.loads(raw[schema.META])["schema_version"] == schema.SCHEMA_VERSION


def test_offline_shards_have_no_identity_map(tmp_path, small_sample):
    cfg = ExtractConfig(
        input_dir=InputPath(small_sample),
        out_dir=tmp_path,
        runner="local",
        crop_size=128,
        progress=False,
        clips_per_shard=4,
    )
    run_extraction(cfg)
    sample = decode_arrays(next(iter_samples(complete_shards(tmp_path)[0])))
    assert "idmap" not in sample and sample["id"].shape == (128,)
