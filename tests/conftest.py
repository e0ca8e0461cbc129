"""Shared fixtures: the real footage beside the checkout, and a small generated sample set."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "real"

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")


def slow_seconds(item: pytest.Item) -> float:
    """About how long a test takes on 2 idle cores: `@pytest.mark.slow(seconds=N)`, 20 for a bare `slow`, else 0."""
    mark = item.get_closest_marker("slow")
    return 0.0 if mark is None else float(mark.kwargs.get("seconds", 20))


def pytest_collection_modifyitems(config, items):
    import torch

    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "real" in item.keywords and not REAL_DATA.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"real footage not found at {REAL_DATA}"))

    # Longest modules first, each module's tests together and in their own order: `make test` hands out whole
    # modules to its workers (pytest-xdist --dist loadfile), so the two end-to-end runs start at once on separate
    # workers instead of one of them starting last.
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    weight: dict[str, float] = {}
    for item in items:
        weight[module(item)] = weight.get(module(item), 0.0) + slow_seconds(item)
    rank = {name: i for i, name in enumerate(weight)}
    items.sort(key=lambda item: (-weight[module(item)], rank[module(item)]))


@pytest.fixture(autouse=True, scope="module")
def mlflow_uris_back_as_they_were():
    """After each module, MLflow's process-wide tracking and registry URIs are back as they were before it. A module
    that pointed them at a server it then stopped (the PostgreSQL tests) made a later module in the same process wait
    minutes on HTTP retries to the dead server (a 6 s CLI test took 253 s once the suite's order changed):
    `mlflow.set_registry_uri` also exports MLFLOW_REGISTRY_URI, which `set_registry_uri(None)` leaves set."""
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/data/real (videos/p01..p06.mp4, images/...); tests using it carry @pytest.mark.real."""
    return REAL_DATA


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory) -> Path:
    """Small demo clips in CelebV-HQ's layout (2 people x 1 clip, 256 px, ~1.2 s) for fast tests."""
    from facex_data.demo_clips import DemoClipsConfig, make_demo_clips

    out = tmp_path_factory.mktemp("sample")
    cfg = DemoClipsConfig(out_dir=out, seed=7, clips_per_person=1, size=256, min_seconds=1.0, max_seconds=1.4,
                          people=("astronaut", "grace_hopper"))  # fmt: skip
    make_demo_clips(cfg, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """A random tiny SD-architecture backbone in the diffusers layout (model, training and latents tests share it)."""
    from facex_model.backbone import build_tiny_backbone

    return build_tiny_backbone(tmp_path_factory.mktemp("tiny_sd"), seed=0)


@pytest.fixture(scope="session")
def model_dir(tiny_backbone, tmp_path_factory) -> Path:
    """A saved FaceX model (random trainable part) on the tiny backbone: what inference and benchmark tests load."""
    import torch

    from facex_model.model import FaceXConfig, FaceXModel

    torch.manual_seed(0)
    return FaceXModel(FaceXConfig.tiny(tiny_backbone)).save_pretrained(tmp_path_factory.mktemp("facex_tiny"))


@pytest.fixture(scope="session")
def pipe(model_dir):
    from facex_model.pipeline import FaceXPipeline

    return FaceXPipeline.from_pretrained(model_dir)
