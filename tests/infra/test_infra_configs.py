"""infra/ configs parse, validate against the schemas their tools ship, and agree with the repo."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from pipelines.config import load_params

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


def dockerfile_stages(text: str) -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined, comments dropped)."""
    stages: dict[str, list[str]] = {}
    current = None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = match.group(1)
            stages[current] = []
        elif current:
            stages[current].append(line)
    return stages


def package_version() -> str:
    text = (REPO / "packages" / "facex_model" / "pyproject.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, re.M).group(1)


def locked(name: str) -> str:
    text = (REPO / "requirements.lock").read_text()
    return re.search(rf"^{re.escape(name)}==(\S+)$", text, re.M).group(1)


def dockerfile_variants() -> set[str]:
    """The VARIANT build-arg values the Dockerfile has a base stage for (gpu, cpu)."""
    stages = dockerfile_stages((INFRA / "docker" / "Dockerfile").read_text())
    return {name.removesuffix("-base") for name in stages if name.endswith("-base")}


def test_dockerfile_copies_only_what_exists_runs_non_root_and_bakes_no_weights():
    text = (INFRA / "docker" / "Dockerfile").read_text()
    stages = dockerfile_stages(text)
    assert dockerfile_variants() == {"gpu", "cpu"}
    assert re.search(r"^FROM \$\{VARIANT\}-base AS facex$", text, re.M)
    steps = stages["facex"]
    copies = [s for s in steps if s.upper().startswith("COPY")]
    assert copies
    for copy in copies:
        sources = [a for a in copy.split()[1:-1] if not a.startswith("--")]
        for src in sources:
            assert (REPO / src).exists(), f"COPY {src} does not exist in the repo"
            assert not src.startswith(("models", "data", ".venv")), f"copies {src} into the image"
    users = [s.split()[1] for s in steps if s.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image runs as root"
    assert any("requirements.lock" in s for s in steps if s.upper().startswith("RUN"))
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"data", "models", ".venv", ".git"} <= set(ignored)


def test_ray_cluster_config_validates_against_rays_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((INFRA / "ray" / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    config["available_node_types"]["gpu_workers"]["min_workrs"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_workrs"):
        jsonschema.validate(config, schema)


def test_ray_cluster_uses_the_built_image_and_fits_the_real_profile():
    config = yaml.safe_load((INFRA / "ray" / "cluster.yaml").read_text())
    name, tag = config["docker"]["image"].rsplit("/", 1)[-1].split(":")
    version, variant = tag.rsplit("-", 1)
    assert name == "facex" and version == package_version() and variant in dockerfile_variants()
    real = load_params(REPO / "params" / "celebvhq-sd15.yaml")
    gpu = config["available_node_types"]["gpu_workers"]
    assert gpu["resources"]["GPU"] * gpu["max_workers"] >= real.compute.num_workers
    assert config["head_node_type"] in config["available_node_types"]


def test_mlflow_compose_binds_localhost_pins_the_locked_mlflow_and_uses_postgres():
    compose = yaml.safe_load((INFRA / "mlflow" / "docker-compose.yml").read_text())
    services = compose["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
    command = " ".join(services["mlflow"]["command"].split())
    assert "--backend-store-uri postgresql+psycopg2://" in command
    dockerfile = (INFRA / "mlflow" / "Dockerfile").read_text()
    assert f"mlflow:v{locked('mlflow')}" in dockerfile
    assert f"psycopg2-binary=={locked('psycopg2-binary')}" in dockerfile
    assert services["mlflow"]["image"].endswith(f":{locked('mlflow')}")


def test_image_installs_insightface_like_make_setup_and_mounts_the_real_profiles_weights_dir():
    steps = dockerfile_stages((INFRA / "docker" / "Dockerfile").read_text())["facex"]
    runs = [s for s in steps if s.upper().startswith("RUN")]
    lock_at = next(i for i, s in enumerate(runs) if "requirements.lock" in s)
    pin = re.search(r"^INSIGHTFACE := (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    assert any(f"--no-deps {pin}" in s for s in runs[lock_at + 1 :]), f"the image does not install {pin} after the lock"
    env = " ".join(s for s in steps if s.upper().startswith("ENV "))
    weights_dir = re.search(r"FACEX_WEIGHTS_DIR=(\S+)", env).group(1)
    real = load_params(REPO / "params" / "celebvhq-sd15.yaml")
    assert str(real.weights.dir) == weights_dir
    assert any(s.upper().startswith("VOLUME") and weights_dir in s for s in steps)
    cluster = yaml.safe_load((INFRA / "ray" / "cluster.yaml").read_text())
    assert any(opt.split()[-1].split(":")[1] == weights_dir for opt in cluster["docker"]["run_options"] if "-v" in opt)
    packages = sorted(p.name for p in (REPO / "packages").iterdir() if (p / "pyproject.toml").is_file())
    install = next(s for s in runs if "./packages/" in s)
    assert all(f"./packages/{name}" in install for name in packages), install
