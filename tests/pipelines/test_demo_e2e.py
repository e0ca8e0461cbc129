"""The README's main command (`make demo`) in a temporary clone: every stage runs, then nothing reruns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def overlay_venv(path: Path) -> Path:
    """A throwaway venv that sees this venv's packages through a .pth line (no multi-GB reinstall).

    `make demo` then runs its real set-up in it: pip checks the lock (all satisfied) and installs
    the clone's two packages editable into the throwaway venv, not into the developer's one.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = next((path / "lib").glob("python3*/site-packages"))
    (site / "_facex_base.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path


@pytest.mark.slow
def test_make_demo_in_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    venv = overlay_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}

    def demo() -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", "demo", f"VENV={venv}"], cwd=clone, env=env, capture_output=True, text=True, timeout=1800
        )

    first = demo()
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    params = yaml.safe_load((clone / "params.yaml").read_text())
    clips = clone / params["demo_clips"]["out_dir"]
    info = json.loads((clips / "celebvhq_info.json").read_text())
    assert len(info["clips"]) == 2 * params["demo_clips"]["clips_per_person"]
    assert sorted(p.stem for p in clips.rglob("*.mp4")) == sorted(info["clips"])
    assert (clone / "dvc.lock").is_file()

    shards = clone / params["extract"]["out_dir"]
    tars = sorted(shards.glob("shard-*.tar"))
    assert tars and all(t.with_name(t.name.replace(".tar", ".stats.json")).is_file() for t in tars)
    ledger = json.loads((shards / "ledger.json").read_text())
    assert sorted(c["clip_id"] for c in ledger["clips"] if c["status"] == "written") == sorted(info["clips"])
    import webdataset as wds

    keys = [s["__key__"] for s in wds.WebDataset([str(t) for t in tars], shardshuffle=False)]
    assert len(keys) == sum(c["frames"] for c in ledger["clips"]) > 0

    # train_generalist -> finetune@reenact, finetune@swap: model folders with their training record
    models = clone / params["train"]["out_dir"]
    trained = {"generalist": params["train"]["generalist_steps"], **params["train"]["specialist_steps"]}
    for name, steps in trained.items():
        assert {"config.json", "facex_trainable.safetensors"} <= {p.name for p in (models / name).iterdir()}
        record = json.loads((models / name / "train_metrics.json").read_text())
        assert record["steps"] == steps == len(record["losses"])
    assert json.loads((models / "swap" / "config.json").read_text())["task"] == "swap"

    # evaluate -> register: every model has a headline, a registered version and a champion
    metrics = json.loads((clone / params["evaluate"]["out_dir"] / "metrics.json").read_text())
    assert set(metrics) == {"generalist", "reenact", "swap"}
    registry = json.loads((clone / params["register"]["out"]).read_text())["models"]
    for name in ("generalist", "reenact", "swap"):
        assert registry[name]["headline"]["value"] == pytest.approx(metrics[name]["headline"]["value"])
        assert registry[name]["champion_version"] == registry[name]["version"] == "1"
    import mlflow

    store = f"sqlite:///{clone / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    assert str(client.get_model_version_by_alias("facex-swap", "champion").version) == "1"

    # examples: one grid per model and task
    examples = clone / params["examples"]["out_dir"]
    index = json.loads((examples / "index.json").read_text())
    assert {g["model"] for g in index["grids"].values()} == {"generalist", "reenact", "swap"}
    assert all((examples / name).is_file() for name in index["grids"])

    second = demo()
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Data and pipelines are up to date" in second.stdout + second.stderr
    assert "Running stage" not in second.stdout + second.stderr
