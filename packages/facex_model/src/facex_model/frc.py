"""FRC — the Facial Representation Controller (paper §3.4).

Every BasicTransformerBlock of the frozen U-Net keeps attn1/attn2 (attn2 now attends to f_SD instead of text) and
gains a trainable cross-attention right after attn2: v = v + ZeroConv(CrossAttn_ft(v, f_SD)).
It is installed through diffusers' attention-processor extension point (`Attention.set_processor` on each attn2),
so the U-Net's own modules and state-dict keys stay untouched and any SD-1.5 checkpoint loads unchanged.
"""

from __future__ import annotations

import functools

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class ZeroConv(nn.Linear):
    """A 1x1 projection on tokens, zero-initialised so the controller starts as the identity on the U-Net."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, dim)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


def grid_positions(tokens: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(tokens, dim) fixed 2-D sine-cosine codes of a square token grid, row-major as diffusers flattens a feature
    map (MAE's get_2d_sincos_pos_embed): any resolution, no parameters."""
    side = round(tokens**0.5)
    if side * side != tokens or dim % 4:
        return torch.zeros(tokens, dim, device=device, dtype=dtype)  # not a square grid: no position code
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, device=device, dtype=torch.float32) / (dim // 4))
    ys, xs = torch.meshgrid(torch.arange(side, device=device), torch.arange(side, device=device), indexing="ij")
    parts = [f(axis.reshape(-1, 1).float() * freqs) for axis in (ys, xs) for f in (torch.sin, torch.cos)]
    return torch.cat(parts, dim=1).to(dtype)


@functools.lru_cache(maxsize=64)
def _cached_positions(tokens: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    with torch.inference_mode(False):  # an ordinary tensor even if first asked for under inference mode, so that
        return grid_positions(tokens, dim, device, dtype)  # a later training step can save it for backward


def position_code(tokens: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`grid_positions`, made once per shape, device and dtype and then reused (read-only: never modify it in place):
    each FRC controller asks for it on every U-Net call, and remaking it costs 32 small operations, a fifth of a
    256-px U-Net call's operations with FRC installed, where the GPU waits on per-operation overhead. While
    torch.compile traces, it is computed in the graph instead (a cache must not keep a traced tensor)."""
    if torch.compiler.is_compiling():
        return grid_positions(tokens, dim, device, dtype)
    return _cached_positions(tokens, dim, torch.device(device), dtype)


class FRCCrossAttention(nn.Module):
    """ZeroConv(CrossAttn_ft(LN(v) + P, f_SD)): the residual a transformer block adds after its frozen cross-attention.

    P is a learned projection (zero at the start) of the fixed 2-D position code of each token of v, so that the
    controller can learn to read f_Inp's grid tokens (each carrying its own place in I_R) at the matching place; the
    frozen U-Net's features carry little position of their own. `positional=False` leaves P out."""

    def __init__(self, dim: int, cross_attention_dim: int, num_heads: int, positional: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.position = ZeroConv(dim) if positional else None
        self.attn = Attention(
            query_dim=dim,
            cross_attention_dim=cross_attention_dim,
            heads=num_heads,
            dim_head=dim // num_heads,
            out_bias=True,
        )
        self.zero_conv = ZeroConv(dim)

    def forward(self, hidden_states: torch.Tensor, f_sd: torch.Tensor) -> torch.Tensor:
        query = self.norm(hidden_states)
        if self.position is not None:
            code = position_code(hidden_states.shape[1], hidden_states.shape[2], query.device, query.dtype)
            query = query + self.position(code)
        return self.zero_conv(self.attn(query, encoder_hidden_states=f_sd))


class FRCAttnProcessor:
    """attn2's processor: the frozen cross-attention on f_SD, then the FRC residual on the updated tokens.

    The block adds our return value to v (its residual), so returning a + ZeroConv(CrossAttn_ft(v + a, f_SD)) gives
    exactly v' = v + a; v'' = v' + ZeroConv(CrossAttn_ft(v', f_SD)). v itself is captured from norm2's input.
    """

    def __init__(self, controller: FRCCrossAttention, base: object | None = None) -> None:
        self.controller = controller
        self.base = base if base is not None else AttnProcessor2_0()
        self.residual: torch.Tensor | None = None

    def capture_residual(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.residual = args[0]

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        out = self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual, self.residual = self.residual, None
        if residual is None or residual.shape != out.shape:
            raise RuntimeError("FRC: attn2 was called outside a BasicTransformerBlock with layer-norm; cannot find v")
        f_sd = encoder_hidden_states if encoder_hidden_states is not None else hidden_states
        return out + self.controller(residual + out, f_sd)


def transformer_blocks(unet: UNet2DConditionModel) -> dict[str, BasicTransformerBlock]:
    return {name: m for name, m in unet.named_modules() if isinstance(m, BasicTransformerBlock) and m.attn2 is not None}


class FacialRepresentationController(ModelMixin, ConfigMixin):
    """One FRCCrossAttention per U-Net transformer block, keyed by the block's module path."""

    @register_to_config
    def __init__(self, block_names: list[str], block_dims: list[int], cross_attention_dim: int, num_heads: int = 8,
                 positional: bool = True):  # fmt: skip
        super().__init__()
        self.layers = nn.ModuleDict(
            {
                _key(name): FRCCrossAttention(dim, cross_attention_dim, num_heads, positional)
                for name, dim in zip(block_names, block_dims)
            }
        )
        self._installed: list[tuple[Attention, object, torch.utils.hooks.RemovableHandle]] = []

    @classmethod
    def for_unet(
        cls, unet: UNet2DConditionModel, num_heads: int = 8, positional: bool = True
    ) -> FacialRepresentationController:
        blocks = transformer_blocks(unet)
        return cls(
            block_names=list(blocks),
            block_dims=[b.norm2.normalized_shape[0] for b in blocks.values()],
            cross_attention_dim=unet.config.cross_attention_dim,
            num_heads=num_heads,
            positional=positional,
        )

    def install(self, unet: UNet2DConditionModel) -> None:
        """Route every transformer block's attn2 through FRC; the U-Net's own weights are not touched."""
        if self._installed:
            raise RuntimeError("FRC is already installed; call remove() first")
        blocks = transformer_blocks(unet)
        if sorted(_key(n) for n in blocks) != sorted(self.layers.keys()):
            raise ValueError("this FRC was built for a U-Net with different transformer blocks (not SD-architecture?)")
        for name, block in blocks.items():
            if block.norm_type != "layer_norm":
                raise ValueError(f"FRC supports layer-norm transformer blocks; {name} uses {block.norm_type}")
            processor = FRCAttnProcessor(self.layers[_key(name)], base=block.attn2.processor)
            hook = block.norm2.register_forward_pre_hook(processor.capture_residual)
            self._installed.append((block.attn2, block.attn2.processor, hook))
            block.attn2.set_processor(processor)

    def remove(self) -> None:
        """Give every attn2 its original processor back (the plain base U-Net)."""
        for attn, base, hook in self._installed:
            hook.remove()
            attn.set_processor(base)
        self._installed = []

    @property
    def installed(self) -> bool:
        return bool(self._installed)


def _key(block_name: str) -> str:
    return block_name.replace(".", "__")
