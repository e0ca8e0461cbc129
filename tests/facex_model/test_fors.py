import numpy as np
import pytest
import torch

from facex_model.fors import TASK_TABLE, RegionAssembler, edit_row
from facex_model.regions import PAPER_REGIONS

FACE_IDS = (1, 2, 3, 4, 5, 10, 11, 12, 13)
HEAD_IDS = (*FACE_IDS, 7, 8, 9, 17)


def np_dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Square dilation written independently of the code under test."""
    h, w = mask.shape
    padded = np.pad(mask, r)
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def np_erode(mask: np.ndarray, r: int) -> np.ndarray:
    h, w = mask.shape
    padded = np.pad(mask, r, constant_values=True)
    out = np.ones_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out &= padded[dy : dy + h, dx : dx + w]
    return out


def _side_tokens(model, batch, side):
    with torch.no_grad():
        return {
            "id": model.identity_encoder(batch[f"{side}_id"]),
            "regions": model.region_encoder(model.image_encoder, batch[f"{side}_image"], batch[f"{side}_parsing"]),
            "pose": batch[f"{side}_pose"],
            "expression": batch[f"{side}_expression"],
            "gaze": batch[f"{side}_gaze"],
        }


@pytest.mark.parametrize("task", ["reenact", "swap", "headswap"])
def test_representation_assembler_takes_each_region_from_the_side_the_table_says(task, tiny_model, make_batch):
    model = tiny_model()
    batch = make_batch(batch=2)
    reps = {side: _side_tokens(model, batch, side) for side in ("source", "target")}
    assert not torch.allclose(reps["source"]["regions"], reps["target"]["regions"])
    with torch.no_grad():
        assembled = model.representation_assembler(reps, task)
        f_rep = model.representation_adapter(assembled)

    row = TASK_TABLE[task]
    assert torch.equal(assembled["id"], reps["source"]["id"])  # ID always from the source
    for motion in ("pose", "expression", "gaze"):
        assert torch.equal(assembled[motion], reps["target"][motion])  # motion always from the target
    adapter = model.representation_adapter
    region_offset = adapter.token_embed["id"].shape[0]
    for i, region in enumerate(PAPER_REGIONS):
        side = row.regions[region]
        assert torch.equal(assembled["regions"][:, i], reps[side]["regions"][:, i]), (task, region)
        expected = adapter.proj["regions"](reps[side]["regions"][:, i]) + adapter.token_embed["regions"][i]
        assert torch.allclose(f_rep[:, region_offset + i], expected.detach(), atol=1e-6), (task, region)


def test_task_table_matches_paper_fig4():
    face = {"brows", "eyes", "nose", "lips", "skin"}

    def from_source(task):
        return {r for r in PAPER_REGIONS if TASK_TABLE[task].regions[r] == "source"}

    assert from_source("reenact") == set(PAPER_REGIONS)
    assert from_source("swap") == face
    assert from_source("headswap") == face | {"hair", "ears"}
    for task in ("reenact", "swap", "headswap"):
        assert TASK_TABLE[task].representations["id"] == "source"
        assert all(TASK_TABLE[task].representations[m] == "target" for m in ("pose", "expression", "gaze"))


def test_edit_row_with_glasses_region_from_reference(tiny_model, make_batch):
    model = tiny_model(regions=(*PAPER_REGIONS, "glasses"))
    batch = make_batch(batch=1, sides=("source", "target", "reference"))
    batch["reference_parsing"][0, 27:30, 18:46] = 6  # the reference wears glasses
    reps = {s: _side_tokens(model, batch, s) for s in ("source", "reference")}
    with torch.no_grad():
        assembled = model.representation_assembler(reps, edit_row(("glasses",)))
    glasses = len(PAPER_REGIONS)
    assert torch.equal(assembled["regions"][:, glasses], reps["reference"]["regions"][:, glasses])
    assert not torch.equal(reps["source"]["regions"][:, glasses], reps["reference"]["regions"][:, glasses])
    assert torch.equal(assembled["regions"][:, :glasses], reps["source"]["regions"][:, :glasses])


def test_region_assembler_reenact_is_the_whole_source(make_batch):
    batch = make_batch()
    ref, hole = RegionAssembler()(
        {"source": batch["source_image"], "target": batch["target_image"]},
        {"source": batch["source_parsing"], "target": batch["target_parsing"]},
        "reenact",
    )
    assert torch.equal(ref, batch["source_image"])
    assert hole.sum() == 0


def _assemble(batch, task):
    return RegionAssembler()(
        {"source": batch["source_image"], "target": batch["target_image"]},
        {"source": batch["source_parsing"], "target": batch["target_parsing"]},
        task,
    )


def test_region_assembler_swap_puts_source_face_in_dilated_union_on_target(make_batch):
    batch = make_batch(batch=1)
    ref, hole = _assemble(batch, "swap")
    src_face = np.isin(batch["source_parsing"][0].numpy(), FACE_IDS)
    tgt_face = np.isin(batch["target_parsing"][0].numpy(), FACE_IDS)
    r = round(TASK_TABLE["swap"].hole_dilate * 64)
    assert r >= 1
    expected_hole = np_dilate(src_face | tgt_face, r)
    assert (expected_hole & ~(src_face | tgt_face)).any()  # the dilation really widened the hole
    assert np.array_equal(hole[0, 0].numpy().astype(bool), expected_hole)

    src, tgt, out = batch["source_image"][0].numpy(), batch["target_image"][0].numpy(), ref[0].numpy()
    assert np.array_equal(out[:, src_face], src[:, src_face])
    assert np.array_equal(out[:, ~expected_hole], tgt[:, ~expected_hole])
    blank = expected_hole & ~src_face
    assert blank.any() and np.all(out[:, blank] == 0)


def test_region_assembler_headswap_grayscale_source_head_with_cut_edges(make_batch):
    batch = make_batch(batch=1)
    ref, hole = _assemble(batch, "headswap")
    row = TASK_TABLE["headswap"]
    src_head = np.isin(batch["source_parsing"][0].numpy(), HEAD_IDS)
    tgt_head = np.isin(batch["target_parsing"][0].numpy(), HEAD_IDS)
    expected_hole = np_dilate(src_head | tgt_head, round(row.hole_dilate * 64))
    pasted = np_erode(src_head, round(row.paste_erode * 64))
    edge = src_head & ~pasted
    assert edge.any() and pasted.any()

    src, tgt, out = batch["source_image"][0].numpy(), batch["target_image"][0].numpy(), ref[0].numpy()
    luma = 0.299 * src[0] + 0.587 * src[1] + 0.114 * src[2]
    for c in range(3):
        np.testing.assert_allclose(out[c][pasted], luma[pasted], atol=1e-6)
    assert not np.allclose(out[0][pasted], src[0][pasted])  # really grayscale, not the colour source
    assert np.all(out[:, edge] == 0)  # the head's edges are cut and left to inpaint
    assert np.array_equal(hole[0, 0].numpy().astype(bool), expected_hole)
    assert np.array_equal(out[:, ~expected_hole], tgt[:, ~expected_hole])


def test_edit_row_takes_hair_from_a_third_image(make_batch):
    batch = make_batch(batch=1, sides=("source", "target", "reference"))
    row = edit_row(("hair",))
    assert {r for r, s in row.regions.items() if s == "reference"} == {"hair"}
    ref, hole = RegionAssembler()(
        {s: batch[f"{s}_image"] for s in ("source", "reference")},
        {s: batch[f"{s}_parsing"] for s in ("source", "reference")},
        row,
    )
    hair = np.isin(batch["source_parsing"][0].numpy(), (17,)) | np.isin(batch["reference_parsing"][0].numpy(), (17,))
    expected_hole = np_dilate(hair, round(row.hole_dilate * 64))
    assert np.array_equal(hole[0, 0].numpy().astype(bool), expected_hole)
    src = batch["source_image"][0].numpy()
    assert np.array_equal(ref[0].numpy()[:, ~expected_hole], src[:, ~expected_hole])


def test_edit_row_through_the_model_uses_the_reference_side(tiny_model, make_batch):
    model = tiny_model()
    batch = make_batch(batch=1, sides=("source", "target", "reference"))
    with torch.no_grad():
        f_sd = model.encode_conditions(batch, edit_row(("hair",)))
        batch["reference_image"] = -batch["reference_image"]
        assert not torch.allclose(f_sd, model.encode_conditions(batch, edit_row(("hair",))))
        assert torch.allclose(
            f_sd, model.encode_conditions({**batch, "reference_image": -batch["reference_image"]}, edit_row(("hair",)))
        )
