"""FaceX model: FORD representations, FORS assemblers and the Facial Representation Controller on a frozen
Stable Diffusion 1.5, and the pipeline that runs every task. What a user installs to *run* FaceX: training,
evaluation and metrics live in ``facex_train``.

    from facex_model import FaceXPipeline
    pipe = FaceXPipeline.from_pretrained("data/models/swap")

Imports are lazy, so ``import facex_model`` (and the ``facex`` command's start-up) loads no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "FaceXPipeline": "facex_model.pipeline",
    "FaceXOutput": "facex_model.pipeline",
    "Edit": "facex_model.pipeline",
    "FaceXModel": "facex_model.model",
    "FaceXConfig": "facex_model.model",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'facex_model' has no attribute {name!r}")
