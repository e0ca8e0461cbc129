"""DVC remote: the pipeline's outputs pushed to a remote come back byte-identical in a fresh clone."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # stages call `python`: make it this interpreter, as `make` does by putting the venv first on PATH
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.slow
def test_push_then_pull_into_a_fresh_clone_restores_identical_outputs(tmp_path):
    origin, remote = tmp_path / "origin", tmp_path / "remote"
    subprocess.run(["git", "clone", "-q", str(REPO), str(origin)], check=True)
    # shrink the demo_clips stage so the round trip is about DVC, not about encoding video
    import yaml

    params = yaml.safe_load((origin / "params.yaml").read_text())
    params["demo_clips"].update(clips_per_person=1, size=128, max_seconds=2.0, people=["astronaut", "grace_hopper"])
    (origin / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc("repro", "demo_clips", cwd=origin)
    dvc("remote", "add", "-d", "--local", "testremote", str(remote), cwd=origin)
    dvc("push", "demo_clips", cwd=origin)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-qam", "demo clips outputs"], cwd=origin, check=True)

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    assert not (clone / "data" / "demo_clips").exists()
    dvc("remote", "add", "-d", "--local", "testremote", str(remote), cwd=clone)
    dvc("pull", "demo_clips", cwd=clone)
    assert tree_digest(clone / "data" / "demo_clips") == tree_digest(origin / "data" / "demo_clips")
    status = dvc("status", "demo_clips", cwd=clone)
    assert "up to date" in status.stdout
