import dataclasses
import json
import statistics

import pytest
import torch
from safetensors.torch import load_file

from facex_data.schema import UNKNOWN
from facex_model.backbone import load_backbone
from facex_model.model import WEIGHTS_NAME, FaceXConfig, FaceXModel, write_config


def _step(model, batch, drop_mask=None, seed=0, lr=1e-3):
    opt = torch.optim.Adam(model.trainable_parameters(), lr=lr)  # no weight decay: a zero gradient moves nothing
    loss = model.training_loss(batch, generator=torch.Generator().manual_seed(seed), drop_mask=drop_mask)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def test_trainable_parameters_are_exactly_frc_adapters_fpn_and_phi_inp(tiny_model):
    model = tiny_model()
    got = {id(p) for p in model.trainable_parameters()}
    expected = {id(model.null_f_sd)}
    for module in (
        model.frc,
        model.identity_encoder,
        model.region_encoder,
        model.representation_adapter,
        model.inpaint_encoder,
        model.sd_adapter,
    ):
        expected |= {id(p) for p in module.parameters()}
    assert got == expected
    frozen = [*model.unet.parameters(), *model.vae.parameters(), *model.image_encoder.parameters()]
    assert not any(id(p) in got for p in frozen)
    assert not any(p.requires_grad for p in frozen)

    with_vision = tiny_model(train_vision_encoder=True)
    pooled_norm = {id(p) for p in with_vision.image_encoder.post_layernorm.parameters()}  # feeds no f_SD
    vision = {id(p) for p in with_vision.image_encoder.parameters()} - pooled_norm
    assert vision <= {id(p) for p in with_vision.trainable_parameters()}
    assert not pooled_norm & {id(p) for p in with_vision.trainable_parameters()}


def test_one_step_moves_trainable_parameters_and_no_frozen_one(tiny_model, make_batch):
    model = tiny_model()
    batch = make_batch(batch=3)
    for side in ("source", "target"):
        batch[f"{side}_parsing"][1] = UNKNOWN  # every region absent in sample 1: the absent tokens get gradients
    drop = torch.tensor([False, False, True])  # sample 2 is unconditional: the null f_SD gets gradients
    trainable = {id(p) for p in model.trainable_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def changed():
        return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}

    _step(model, batch, drop)
    moved = changed()
    frozen = {n for n, p in model.named_parameters() if id(p) not in trainable}
    assert frozen and not (moved & frozen)
    # behind a zero-initialised ZeroConv the FRC attention gets no gradient on step one (as in ControlNet)
    behind_zero_conv = {n for n in before if n.startswith("frc.layers.") and ".zero_conv." not in n}
    trainable_names = {n for n, p in model.named_parameters() if id(p) in trainable}
    assert moved == trainable_names - behind_zero_conv

    _step(model, batch, drop, seed=1)
    moved = changed()
    assert moved == trainable_names
    assert not (moved & frozen)


def test_dropped_conditions_ignore_the_inputs(tiny_model, make_batch):
    model = tiny_model()
    batch = make_batch()
    other = make_batch(seed=5)
    other["target_image"] = batch["target_image"]
    drop = torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        a = model.training_loss(batch, generator=torch.Generator().manual_seed(0), drop_mask=drop)
        b = model.training_loss(other, generator=torch.Generator().manual_seed(0), drop_mask=drop)
        c = model.training_loss(other, generator=torch.Generator().manual_seed(0), drop_mask=~drop)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_training_loss_is_deterministic_given_a_generator(tiny_model, make_batch):
    model = tiny_model()
    batch = make_batch()
    with torch.no_grad():
        a = model.training_loss(batch, generator=torch.Generator().manual_seed(3))
        b = model.training_loss(batch, generator=torch.Generator().manual_seed(3))
        c = model.training_loss(batch, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_logit_normal_sampling_trains_the_noisy_steps_it_asks_for(tiny_model, make_batch, monkeypatch):
    """Uniform by default; logit_normal=(mean, std) draws t / T = sigmoid(N(mean, std)), from the generator."""
    model = tiny_model()
    batch = make_batch()
    seen = []
    add_noise = model.scheduler.add_noise
    monkeypatch.setattr(model.scheduler, "add_noise", lambda x, n, t: seen.append(t.clone()) or add_noise(x, n, t))
    with torch.no_grad():
        for seed in range(40):
            model.training_loss(batch, generator=torch.Generator().manual_seed(seed))
        uniform = torch.cat(seen)
        seen.clear()
        for seed in range(40):
            model.training_loss(batch, generator=torch.Generator().manual_seed(seed), logit_normal=(3.0, 0.5))
        noisy = torch.cat(seen)
        seen.clear()
        a = model.training_loss(batch, generator=torch.Generator().manual_seed(5), logit_normal=(3.0, 0.5))
        b = model.training_loss(batch, generator=torch.Generator().manual_seed(5), logit_normal=(3.0, 0.5))
    assert torch.equal(a, b) and torch.equal(seen[0], seen[1])
    assert uniform.min() < 300 and uniform.max() > 700  # the default spreads over the schedule
    assert noisy.min() >= 730 and noisy.max() <= 999  # sigmoid(3 - 4 x 0.5) = 0.73: every draw is a noisy step
    assert noisy.float().median() > 900


def _outputs(model, batch):
    with torch.no_grad():
        f_sd = model.encode_conditions(batch)
        latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        return f_sd, model.predict_noise(latents, torch.tensor([5, 900]), f_sd)


def test_save_load_round_trip_gives_identical_outputs(tiny_model, make_batch, tmp_path):
    model = tiny_model()
    batch = make_batch()
    _step(model, batch)
    _step(model, batch, seed=1)
    model.save_pretrained(tmp_path / "facex")

    saved = load_file(tmp_path / "facex" / WEIGHTS_NAME)
    assert not any(k.startswith(("unet.", "vae.", "image_encoder.")) for k in saved)
    assert json.loads((tmp_path / "facex" / "config.json").read_text())["backbone_path"] == str(
        model.config.backbone_path
    )

    loaded = FaceXModel.from_pretrained(tmp_path / "facex")
    for a, b in zip(_outputs(model, batch), _outputs(loaded, batch)):
        assert torch.equal(a, b)


def test_relative_paths_name_the_backbone_from_the_folder_and_survive_moving_both(make_batch, tmp_path, tiny_backbone):
    """The pipeline's model folders name their backbone relative to themselves: the same config.json bytes in every
    checkout (DVC's hashes), and a checkout moved as a whole still loads; a backbone that shares nothing but the
    filesystem's root with the folder stays absolute."""
    import shutil

    checkout = tmp_path / "checkout"
    shutil.copytree(tiny_backbone, checkout / "data" / "backbone")
    torch.manual_seed(0)
    model = FaceXModel(FaceXConfig.tiny(checkout / "data" / "backbone"))
    batch = make_batch()
    _step(model, batch)
    model.save_pretrained(checkout / "data" / "models" / "generalist", relative_paths=True)
    written = json.loads((checkout / "data" / "models" / "generalist" / "config.json").read_text())
    assert written["backbone_path"] == "../../backbone" and written["clip_path"] is None

    moved = shutil.move(checkout, tmp_path / "elsewhere")
    assert not (checkout / "data" / "backbone").exists()
    loaded = FaceXModel.from_pretrained(tmp_path / "elsewhere" / "data" / "models" / "generalist")
    assert loaded.config.backbone_path == str(tmp_path / "elsewhere" / "data" / "backbone") == str(
        moved / "data" / "backbone")  # fmt: skip
    for a, b in zip(_outputs(model, batch), _outputs(loaded, batch)):
        assert torch.equal(a, b)

    far = dataclasses.replace(model.config, backbone_path="/facex-nowhere/backbone")
    write_config(tmp_path, far, relative_paths=True)
    assert json.loads((tmp_path / "config.json").read_text())["backbone_path"] == "/facex-nowhere/backbone"


def test_loading_onto_a_different_base_unet(tiny_model, make_batch, tmp_path, other_backbone):
    model = tiny_model()
    batch = make_batch()
    _step(model, batch)
    _step(model, batch, seed=1)
    model.save_pretrained(tmp_path / "facex")

    moved = FaceXModel.from_pretrained(tmp_path / "facex", backbone_path=other_backbone)
    other_unet = load_backbone(other_backbone).unet
    for name, p in other_unet.state_dict().items():
        assert torch.equal(moved.unet.state_dict()[name], p)
    for name, p in model.trainable_state_dict().items():
        assert torch.equal(moved.trainable_state_dict()[name], p)
    f_sd, pred = _outputs(moved, batch)
    assert not torch.equal(pred, _outputs(model, batch)[1])
    loss = _step(moved, batch)  # and it keeps training on the new base
    assert torch.isfinite(loss)


def test_from_pretrained_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        FaceXModel.from_pretrained(tmp_path)


def _train(model, batch, steps, fixed):
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)
    shared = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        g = torch.Generator().manual_seed(0) if fixed else shared
        drop = torch.zeros(2, dtype=torch.bool) if fixed else None
        loss = model.training_loss(batch, generator=g, drop_mask=drop)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return statistics.mean(losses[:20]), statistics.mean(losses[-20:])


@pytest.mark.slow
def test_tiny_model_overfits_one_batch_with_fixed_noise(tiny_model, make_batch):
    first, last = _train(tiny_model(), make_batch(), 300, fixed=True)
    assert last <= 0.5 * first, (first, last)


@pytest.mark.slow
def test_tiny_model_loss_falls_with_resampled_noise(tiny_model, make_batch):
    first, last = _train(tiny_model(), make_batch(), 300, fixed=False)
    assert last < 0.9 * first, (first, last)


def test_reenact_needs_only_target_motion(tiny_model, make_batch):
    """Sides supply only what the task row takes from them: reenactment reads no target pixels."""
    model = tiny_model()
    batch = make_batch()
    for key in ("target_image", "target_parsing", "target_id"):
        del batch[key]
    with torch.no_grad():
        f_sd = model.encode_conditions(batch, "reenact")
        batch["target_pose"] = batch["target_pose"] + 1
        assert not torch.allclose(f_sd, model.encode_conditions(batch, "reenact"))
    with pytest.raises(KeyError, match="target_image"):
        model.encode_conditions(batch, "swap")


def test_swap_takes_lighting_from_target_and_texture_from_source(tiny_model, make_batch):
    model = tiny_model(vector_dims={"pose": 3, "expression": 10, "gaze": 2, "texture": 80, "lighting": 27})
    batch = make_batch()
    g = torch.Generator().manual_seed(9)
    for side in ("source", "target"):
        batch[f"{side}_texture"] = torch.randn(2, 80, generator=g)
        batch[f"{side}_lighting"] = torch.randn(2, 27, generator=g)

    def f_sd(**changes):
        with torch.no_grad():
            return model.encode_conditions({**batch, **changes}, "swap")

    base = f_sd()
    assert torch.equal(base, f_sd(source_lighting=batch["source_lighting"] + 1))
    assert not torch.allclose(base, f_sd(target_lighting=batch["target_lighting"] + 1))
    assert torch.equal(base, f_sd(target_texture=batch["target_texture"] + 1))
    assert not torch.allclose(base, f_sd(source_texture=batch["source_texture"] + 1))


def test_train_mode_leaves_the_frozen_backbone_in_eval(tiny_model):
    model = tiny_model().train()
    assert model.frc.training and model.sd_adapter.training
    assert not model.unet.training and not model.vae.training and not model.image_encoder.training
    assert tiny_model(train_vision_encoder=True).train().image_encoder.training


def test_without_frc_nothing_of_it_is_built_trained_saved_or_reinstalled(tiny_model, tmp_path):
    from facex_model.frc import FRCAttnProcessor

    full, ablated = tiny_model(), tiny_model(use_frc=False)
    assert ablated.frc is None and "frc" not in ablated.trainable_modules()
    frc_params = {id(p) for p in full.frc.parameters()}
    assert frc_params <= {id(p) for p in full.trainable_parameters()}
    assert len(ablated.trainable_parameters()) == len(full.trainable_parameters()) - len(frc_params)
    processors = ablated.unet.attn_processors.values()
    assert not any(isinstance(p, FRCAttnProcessor) for p in processors)
    ablated.save_pretrained(tmp_path / "m")
    loaded = FaceXModel.from_pretrained(tmp_path / "m")
    assert loaded.frc is None and not any(isinstance(p, FRCAttnProcessor) for p in loaded.unet.attn_processors.values())
    assert not any(k.startswith("frc.") for k in loaded.trainable_state_dict())


def test_without_the_region_assembler_the_inpainting_reference_is_blank(tiny_model, make_batch):
    batch = make_batch()
    reference, hole = tiny_model(region_assembler=False).assemble_reference(batch, "swap")
    assert torch.equal(reference, torch.zeros_like(reference)) and torch.equal(hole, torch.ones_like(hole))
    full_reference, _ = tiny_model().assemble_reference(batch, "swap")
    assert full_reference.abs().sum() > 0


def test_without_the_representation_assembler_the_source_no_longer_reaches_f_sd(tiny_model, make_batch):
    batch, other = make_batch(seed=0), make_batch(seed=1)
    changed = {**batch, **{k: v for k, v in other.items() if k.startswith("source_")}}  # another source, same target
    with torch.no_grad():
        full = tiny_model().eval()
        assert not torch.allclose(full.encode_conditions(batch, "reenact"), full.encode_conditions(changed, "reenact"))
        ablated = tiny_model(representation_assembler=False, region_assembler=False).eval()
        assert torch.equal(ablated.encode_conditions(batch, "reenact"), ablated.encode_conditions(changed, "reenact"))


@pytest.mark.parametrize("task", ["headswap", "swap", "reenact"])
def test_every_trainable_parameter_gets_a_gradient_in_every_step(tiny_model, make_batch, task):
    """What lets DDP run without find_unused_parameters: no trainable parameter sits out a step, dropped
    conditions or not, with the vision encoder trained too."""
    model = tiny_model(train_vision_encoder=True).train()
    for drop in (torch.zeros(2, dtype=torch.bool), torch.tensor([True, False])):
        model.zero_grad(set_to_none=True)
        model.training_loss(make_batch(), task, generator=torch.Generator().manual_seed(0), drop_mask=drop).backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, missing[:5]
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for p in model.parameters() if p.requires_grad}


def test_precomputed_moments_give_the_latents_the_encoder_would(tiny_model, make_batch):
    model = tiny_model().eval()
    images = make_batch()["target_image"]
    with torch.no_grad():
        moments = model.vae.encode(images).latent_dist.parameters
        direct = model.encode_latents(images, torch.Generator().manual_seed(3))
        stored = model.encode_latents(images, torch.Generator().manual_seed(3), moments.half().float())
    torch.testing.assert_close(stored, direct, rtol=0, atol=2e-2)


def test_every_attention_runs_through_pytorch_sdpa(tiny_model):
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from facex_model.frc import FRCAttnProcessor

    model = tiny_model()
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    frc_layers = [m for m in model.frc.modules() if isinstance(m, Attention)]
    assert frc_layers and len(attentions) > len(frc_layers)  # the U-Net's and FRC's own
    for attn in attentions:
        processor = attn.processor
        if isinstance(processor, FRCAttnProcessor):  # attn2: the frozen cross-attention, then FRC's
            processor = processor.base
        assert isinstance(processor, AttnProcessor2_0), type(processor)
