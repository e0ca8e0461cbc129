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
