import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from facex_data.schema import UNKNOWN
from facex_model.backbone import tiny_clip_vision_config
from facex_model.ford import FPNAdapter, IdentityEncoder, RegionEncoder, mask_pool
from facex_model.regions import PAPER_REGIONS


def test_mask_pool_ignores_pixels_outside_the_mask():
    torch.manual_seed(0)
    features = torch.randn(1, 5, 8, 8)
    masks = torch.zeros(1, 2, 32, 32)
    masks[0, 0, 8:16, 4:12] = 1  # covers feature cells rows 2..3, cols 1..2 exactly
    masks[0, 1, :, 16:] = 1
    absent = torch.zeros(2, 5)
    pooled = mask_pool(features, masks, absent)
    assert torch.allclose(pooled[0, 0], features[0, :, 2:4, 1:3].mean(dim=(-2, -1)), atol=1e-6)

    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:4, 1:3] = False
    scribbled = features.clone()
    scribbled[0][:, outside] = torch.randn(5, int(outside.sum())) * 100
    assert torch.equal(mask_pool(scribbled, masks, absent)[0, 0], pooled[0, 0])
    assert not torch.equal(mask_pool(scribbled, masks, absent)[0, 1], pooled[0, 1])


def test_mask_pool_partial_cells_are_area_weighted():
    features = torch.zeros(1, 1, 2, 2)
    features[0, 0, 0, 0], features[0, 0, 0, 1] = 1.0, 4.0
    masks = torch.zeros(1, 1, 4, 4)
    masks[0, 0, 0:2, 0:2] = 1  # whole cell (0, 0)
    masks[0, 0, 0, 2] = 1  # a quarter of cell (0, 1)
    pooled = mask_pool(features, masks, torch.zeros(1, 1))
    assert torch.allclose(pooled, torch.tensor([[[(1.0 * 1 + 4.0 * 0.25) / 1.25]]]))


def test_empty_region_yields_its_absent_token_not_nan():
    features = torch.randn(2, 3, 4, 4)
    masks = torch.zeros(2, 2, 16, 16)
    masks[0, 0, :4, :4] = 1
    absent = torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
    pooled = mask_pool(features, masks, absent)
    assert torch.isfinite(pooled).all()
    assert torch.equal(pooled[0, 1], absent[1])
    assert torch.equal(pooled[1, 0], absent[0])
    assert torch.equal(pooled[1, 1], absent[1])
    assert not torch.equal(pooled[0, 0], absent[0])


def test_fpn_recovers_a_finer_map_than_the_vit_grid():
    fpn = FPNAdapter(in_dim=8, out_dim=6, num_levels=3)
    grids = [torch.randn(2, 8, 4, 4) for _ in range(3)]
    assert fpn(grids).shape == (2, 6, 16, 16)


def test_region_encoder_on_unknown_parsing_gives_absent_tokens():
    torch.manual_seed(0)
    clip = CLIPVisionModel(CLIPVisionConfig(**tiny_clip_vision_config())).eval()
    encoder = RegionEncoder(vision_dim=32, out_dim=16, fpn_layers=[1, 2])
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    parsing = torch.full((2, 64, 64), UNKNOWN)
    parsing[0, 10:30, 10:30] = 1
    tokens = encoder(clip, images, parsing)
    assert tokens.shape == (2, len(PAPER_REGIONS), 16)
    assert torch.equal(tokens[1], encoder.absent_tokens.detach())
    skin = PAPER_REGIONS.index("skin")
    assert not torch.equal(tokens[0, skin], encoder.absent_tokens[skin].detach())


def test_identity_encoder_accepts_token_maps_and_single_vectors():
    enc = IdentityEncoder(id_dim=512, out_dim=8)
    assert enc(torch.randn(2, 64, 512)).shape == (2, 64, 8)
    enc = IdentityEncoder(id_dim=128, out_dim=8)
    assert enc(torch.randn(2, 128)).shape == (2, 1, 8)
