"""The three packages as users install them: each declares what it imports, runtime apart from training, no cycles.

- facex-data: data (extraction, shards, extractors, layout, weights) and the `facex` command;
- facex-model: the runtime (model, inference, video, watermark, task commands): no Ray, MLflow or torchmetrics on
  its inference path;
- facex-train: training, evaluation, metrics.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"facex_data": "facex-data", "facex_model": "facex-model", "facex_train": "facex-train"}
TRAINING_ONLY = ("ray", "mlflow", "torchmetrics")


def _modules(package: str) -> dict[str, Path]:
    root = REPO / "packages" / package / "src"
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, level) of every import statement anywhere in a file (functions included)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level))
    return out


def _requirements(package: str) -> dict[str, set[str]]:
    """Declared distributions: {"": dependencies, extra: its dependencies}, names normalised."""
    project = tomllib.loads((REPO / "packages" / package / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}

    out = {"": names(project.get("dependencies", []))}
    out |= {extra: names(reqs) for extra, reqs in project.get("optional-dependencies", {}).items()}
    return out


def _module_owners() -> dict[str, set[str]]:
    """Top-level importable name -> installed distributions providing it, read from each one's file list (so
    packages without an accurate top_level.txt, dlib-bin's `dlib` say, are found too)."""
    owners: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"].lower().replace("_", "-")
        for file in dist.files or []:
            top = file.parts[0].split(".")[0]
            if top and not file.parts[0].endswith((".dist-info", ".egg-info", ".pth")):
                owners.setdefault(top, set()).add(name)
    return owners


def test_every_package_declares_every_third_party_module_it_imports():
    dists = _module_owners()
    problems = []
    for package, dist in PACKAGES.items():
        declared = set().union(*_requirements(package).values())
        for module, path in _modules(package).items():
            for name, level in _imports(path):
                top = name.split(".")[0]
                if level or not top or top in sys.stdlib_module_names or top == "__future__":
                    continue
                if top in PACKAGES:
                    if top != package and PACKAGES[top] not in declared:
                        problems.append(f"{module} imports {top}, which {dist} does not depend on")
                    continue
                if not dists.get(top, set()) & declared:
                    problems.append(f"{module} imports {top} ({', '.join(sorted(dists.get(top, {'?'})))}), "
                                    f"which packages/{package}/pyproject.toml does not declare")  # fmt: skip
    assert not problems, "\n".join(problems)


def test_the_data_package_depends_on_neither_other_package_and_the_runtime_not_on_training():
    assert not {"facex-model", "facex-train"} & set().union(*_requirements("facex_data").values())
    assert "facex-train" not in set().union(*_requirements("facex_model").values())
    runtime = _requirements("facex_model")[""]
    assert not set(TRAINING_ONLY) & runtime and not set(TRAINING_ONLY) & _requirements("facex_data")[""]


def test_no_import_cycles_between_project_modules():
    modules = {m: p for package in PACKAGES for m, p in _modules(package).items()}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for name, level in _imports(path):
            if level:
                base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                name = ".".join(base[: len(base) - level + 1] + ([name] if name else []))
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):  # a package's own __init__ is no edge
                edges.add(name)
        graph[module] = edges
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_running_a_face_swap_imports_no_ray_mlflow_or_torchmetrics(tmp_path):
    """`from facex_model import FaceXPipeline` and a whole swap through it (tiny model, packaged photo)."""
    code = f"""
import sys, json
from facex_model import FaceXPipeline
after_import = sorted(m for m in {TRAINING_ONLY!r} if m in sys.modules)
import numpy as np, torch, skimage.data
from facex_model.backbone import build_tiny_backbone
from facex_model.model import FaceXConfig, FaceXModel
torch.manual_seed(0)
folder = FaceXModel(FaceXConfig.tiny(build_tiny_backbone(sys.argv[1] + "/b"))).save_pretrained(sys.argv[1] + "/m")
face = skimage.data.astronaut()
out = FaceXPipeline.from_pretrained(folder)("swap", source=face, target=face[:, ::-1].copy(), steps=1)
print(json.dumps({{"after_import": after_import, "after_swap": sorted(m for m in {TRAINING_ONLY!r} if m in sys.modules),
                  "size": list(out.image.size)}}))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code, str(tmp_path)], capture_output=True,
                            text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"after_import": [], "after_swap": [], "size": [512, 512]}
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert not set(TRAINING_ONLY) & imported and "facex_model" in imported


def test_loading_the_facex_commands_imports_no_torch_or_training_stack():
    """Every `facex` call loads every installed package's commands (facex-train's `benchmark` too) before it runs
    one: that must not import torch, Ray, MLflow or torchmetrics, or every `facex swap` pays seconds for them."""
    code = ("import sys; from facex_data.cli import load_commands; app = load_commands(); "
            f"print(sorted(m for m in {(*TRAINING_ONLY, 'torch')!r} if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path / "bin" / "python"


def _pip(python: Path, *args: str) -> None:
    # --no-compile: byte-compiling every installed file (torch's thousands) is not what this test checks; the
    # imports below compile what they load
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check",
                             *args], capture_output=True, text=True, timeout=1500)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def _import_all(python: Path, modules: list[str]) -> subprocess.CompletedProcess:
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\nprint('ok')"
    return subprocess.run([str(python), "-c", code, *modules], capture_output=True, text=True, timeout=600)


@pytest.mark.slow(seconds=140)
def test_a_clean_install_from_the_packages_own_pyprojects(tmp_path):
    """A fresh venv with only torch (as the lock pins it) and the packages' declared dependencies: the runtime
    installs without Ray, MLflow or torchmetrics, every runtime module imports and `facex` runs; then the training
    package, after which every module of every package imports."""
    torch_pin = next(line for line in (REPO / "requirements.lock").read_text().splitlines()
                     if line.startswith("torch=="))  # fmt: skip
    import shutil

    sources = tmp_path / "packages"  # a copy: building writes build/ folders beside the sources
    shutil.copytree(REPO / "packages", sources, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    python = _venv(tmp_path / "venv")
    _pip(python, torch_pin)
    _pip(python, str(sources / "facex_data"), str(sources / "facex_model"))
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    names = {d["name"].lower() for d in json.loads(installed.stdout)}
    assert not set(TRAINING_ONLY) & names, f"the runtime pulled in {set(TRAINING_ONLY) & names}"
    runtime = [m for p in ("facex_data", "facex_model") for m in _modules(p) if m != "facex_model.pyfunc"]
    result = _import_all(python, runtime)
    assert result.returncode == 0, result.stderr[-3000:]
    facex = tmp_path / "venv" / "bin" / "facex"
    help_text = subprocess.run([str(facex), "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "swap" in help_text.stdout and "extract" in help_text.stdout

    _pip(python, str(sources / "facex_train"))
    everything = [m for p in PACKAGES for m in _modules(p)]
    result = _import_all(python, everything)
    assert result.returncode == 0, result.stderr[-3000:]
    assert subprocess.run([str(facex), "version"], capture_output=True, text=True).returncode == 0
    listed = subprocess.run([str(facex), "benchmark", "list"], capture_output=True, text=True)  # facex-train's command
    assert listed.returncode == 0 and "ffpp-swap" in listed.stdout, listed.stderr[-2000:]
    reference = subprocess.run([str(python), "-c", "from facex_train.benchmark.protocols import published_tables as p; "
                                "print(sorted(p()['protocols']))"], capture_output=True, text=True)  # fmt: skip
    assert "reconstruction" in reference.stdout, reference.stderr[-2000:]  # the reference data ships in the wheel
    site = sysconfig.get_paths(vars={"base": str(tmp_path / "venv")})["purelib"]
    assert not any(Path(site).glob("__editable__*facex*")), "the packages were installed from their sources"
