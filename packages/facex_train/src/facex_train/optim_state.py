"""An optimizer's state as flat tensors (for a safetensors file) plus its json-able param groups, and back."""

from __future__ import annotations

import torch


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], list]:
    """``optimizer.state_dict()`` -> ({"optim.<param index>.<key>": tensor}, param_groups)."""
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, state["param_groups"]


def unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list) -> dict:
    """The inverse of :func:`flatten_optimizer` (tensors not named ``optim.*`` are ignored)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": groups}
