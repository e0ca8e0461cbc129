"""The paper's extractor architectures in plain torch, with the state-dict key names of the public
checkpoints (torchvision's ResNet names where upstream used torchvision), and a safe checkpoint loader.

Depths are read from the checkpoint's keys, so a random-weight stand-in with fewer blocks loads
through the same code as the public file.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn


class CheckpointError(ValueError):
    """A weight file that is not the checkpoint the loader expects (wrong keys or shapes, or unsafe)."""


def read_state_dict(path: Path, unwrap: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Tensors of a third-party ``.pth``/``.pkl``, loaded with ``weights_only=True`` (no code runs).

    ``unwrap``: keys tried in order when the file holds a dict around the state dict
    (e.g. Deep3DFaceRecon's ``{"net_recon": ..., "optimizer": ..., "epoch": ...}``).
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects other than tensors, which could run "
            f"code when unpickled ({str(err).splitlines()[0]}). Use the original checkpoint from the source "
            "listed by `facex models check`."
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err}); re-download it") from err
    for key in unwrap:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    # checkpoints saved from nn.DataParallel prefix every key with "module."
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, what: str) -> nn.Module:
    """Load every tensor of ``state`` into ``model``; any missing, extra or mis-shaped key is refused."""
    own = model.state_dict()
    # checkpoints older than torch 0.4.1 carry no BatchNorm counters: torch fills those in itself
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} keys with the wrong shape (e.g. {k}: file {tuple(state[k].shape)}, "
                f"model {tuple(own[k].shape)})"
            )
        raise CheckpointError(f"{path} is not a {what} checkpoint: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def count_blocks(state: Mapping[str, torch.Tensor], prefix: str = "") -> list[int]:
    """Blocks per residual stage (layer1..layer4) from keys ``<prefix>layerN.<i>.``."""
    pattern = re.compile(rf"^{re.escape(prefix)}layer([1-4])\.(\d+)\.")
    counts = [0, 0, 0, 0]
    for key in state:
        m = pattern.match(key)
        if m:
            stage, block = int(m.group(1)) - 1, int(m.group(2))
            counts[stage] = max(counts[stage], block + 1)
    return counts
