"""Shard samples / extracted features -> model inputs, and model images back to pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facex_data import schema
from facex_model import features


def _offline_sample(size: int = 32) -> dict:
    rng = np.random.default_rng(0)
    tdmm = np.arange(schema.TDMM_DIM["offline"], dtype=np.float32)
    parsing = np.full((size, size), schema.UNKNOWN, np.uint8)
    parsing[8:24, 8:24] = schema.CLASS_ID["nose"]
    return {
        "image": torch.from_numpy(rng.integers(0, 256, (3, size, size), dtype=np.uint8)),
        "parsing": torch.from_numpy(parsing),
        "id": torch.from_numpy(rng.standard_normal(128).astype(np.float32)),
        "tdmm": torch.from_numpy(tdmm),
        "gaze": torch.tensor([0.1, -0.2]),
        "meta": {"extractors": {"backend": "offline"}},
    }


def test_offline_sample_maps_to_the_tiny_config_layout():
    x = features.sample_inputs(_offline_sample(), resolution=16)
    assert x["image"].shape == (3, 16, 16) and x["image"].min() >= -1 and x["image"].max() <= 1
    assert x["parsing"].dtype == torch.long and set(x["parsing"].unique().tolist()) == {10, 255}
    assert x["id"].shape == (1, 128)
    assert x["pose"].tolist() == [0.0, 1.0, 2.0]  # angles 0:3, translation 3:6 is not a model input
    assert x["expression"].tolist() == [float(i) for i in range(6, 16)]
    dims = features.backend_config("offline")["vector_dims"]
    assert {k: v.shape[-1] for k, v in x.items() if k in dims} == {k: v for k, v in dims.items() if v}


def test_paper_sample_uses_the_identity_map_as_tokens():
    tdmm = np.arange(257, dtype=np.float32)
    idmap = np.random.default_rng(1).standard_normal((512, 8, 8)).astype(np.float16)
    x = features.side_inputs(
        image=np.zeros((20, 20, 3), np.uint8),
        parsing=np.zeros((20, 20), np.uint8),
        identity=np.zeros(512, np.float32),
        tdmm=tdmm,
        gaze=np.zeros(2, np.float32),
        idmap=idmap,
        backend="paper",
        resolution=8,
    )
    assert x["id"].shape == (64, 512)
    assert torch.equal(x["id"][9], torch.from_numpy(idmap[:, 1, 1].astype(np.float32)))  # row-major tokens
    assert x["expression"].tolist() == list(map(float, range(80, 144)))
    assert x["pose"].tolist() == [224.0, 225.0, 226.0]
    assert x["texture"].shape == (80,) and x["lighting"].shape == (27,)


def test_collate_prefixes_sides():
    one = features.sample_inputs(_offline_sample(), resolution=8)
    batch = features.collate_sides([{"source": one, "target": one}] * 3)
    assert batch["source_image"].shape == (3, 3, 8, 8) and batch["target_id"].shape == (3, 1, 128)


def test_to_uint8_inverts_image_tensor_and_clamps():
    hwc = np.random.default_rng(4).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    images = torch.stack([features.image_tensor(h, 8) for h in hwc])
    assert np.array_equal(features.to_uint8(images), hwc)  # (B, 3, H, W) -> (B, H, W, 3)
    assert np.array_equal(features.to_uint8(images[0]), hwc[0])  # (3, H, W) -> (H, W, 3)
    assert features.to_uint8(torch.full((3, 1, 1), 5.0)).tolist() == [[[255, 255, 255]]]


def test_wrong_tdmm_length_is_refused():
    with pytest.raises(ValueError, match="257"):
        features.tdmm_parts(np.zeros(16, np.float32), "paper")


def test_image_resize_is_an_area_average_and_layout_independent():
    rng = np.random.default_rng(2)
    hwc = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = features.image_tensor(hwc, 8)
    assert torch.equal(x, features.image_tensor(torch.from_numpy(hwc).permute(2, 0, 1), 8))  # (3,H,W) == (H,W,3)
    block = hwc[4:8, 12:16].reshape(-1, 3).astype(np.float64).mean(0)  # output pixel (1, 3) = mean of its 4x4 block
    assert np.allclose((x[:, 1, 3].numpy() + 1) * 127.5, block, atol=0.51)
    up = features.image_tensor(hwc, 64)
    assert up.shape == (3, 64, 64) and up.min() >= -1 and up.max() <= 1
    same = features.image_tensor(hwc, 32)
    assert torch.allclose(same, torch.from_numpy(hwc).permute(2, 0, 1).float() / 127.5 - 1)
    with pytest.raises(ValueError, match="RGB"):
        features.image_tensor(np.zeros((8, 8), np.uint8), 4)


def test_parsing_resize_never_blends_labels():
    parsing = np.zeros((30, 30), np.uint8)
    parsing[:, 15:] = schema.UNKNOWN
    parsing[10:20, :] = schema.CLASS_ID["nose"]
    small = features.parsing_tensor(parsing, 7)
    assert small.dtype == torch.long and set(small.unique().tolist()) <= {0, schema.CLASS_ID["nose"], schema.UNKNOWN}
    big = features.parsing_tensor(torch.from_numpy(parsing), 60)
    assert torch.equal(big[::2, ::2], torch.from_numpy(parsing).long())  # x2 nearest repeats each label
