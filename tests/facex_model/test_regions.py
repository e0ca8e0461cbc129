import torch

from facex_data.schema import UNKNOWN
from facex_model.regions import PAPER_REGIONS, region_masks


def test_bisenet_ids_group_into_paper_regions():
    parsing = torch.tensor([[[0, 1, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 17]]])
    masks = region_masks(parsing, PAPER_REGIONS)[0, :, 0]
    expected = {
        "background": [0],
        "skin": [1],
        "brows": [2, 3],
        "eyes": [4, 5],
        "ears": [6, 7],
        "nose": [8],
        "lips": [9, 10, 11],
        "hair": [12],
    }
    for name, cols in expected.items():
        row = masks[PAPER_REGIONS.index(name)]
        assert row.nonzero().flatten().tolist() == cols, name


def test_unknown_pixels_belong_to_no_region():
    parsing = torch.full((1, 4, 4), UNKNOWN)
    parsing[0, 0, 0] = 1
    masks = region_masks(parsing)
    assert masks.sum().item() == 1
    assert masks[0, PAPER_REGIONS.index("skin"), 0, 0] == 1


def test_region_masks_match_a_membership_test_per_region_for_every_class_value():
    from facex_model.regions import ALL_REGIONS, REGION_CLASS_IDS

    parsing = torch.randint(0, 19, (3, 9, 11), generator=torch.Generator().manual_seed(0))
    parsing[0, 0] = UNKNOWN
    for dtype in (torch.uint8, torch.int64):
        masks = region_masks(parsing.to(dtype), ALL_REGIONS)
        for row, name in enumerate(ALL_REGIONS):
            expected = torch.isin(parsing, torch.tensor(REGION_CLASS_IDS[name])).float()
            assert torch.equal(masks[:, row], expected), (name, dtype)
    assert masks.dtype == torch.float32 and masks.shape == (3, len(ALL_REGIONS), 9, 11)
    assert masks[0, :, 0].sum() == 0  # UNKNOWN pixels: no region
