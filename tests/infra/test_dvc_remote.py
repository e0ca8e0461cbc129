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
    # shrink the sample stage so the round trip is about DVC, not about encoding video
    params = (origin / "params.yaml").read_text().replace("clips_per_person: 2", "clips_per_person: 1")
    params = params.replace("size: 512", "size: 128").replace("max_seconds: 4.0", "max_seconds: 2.0")
    (origin / "params.yaml").write_text(params)
    dvc("repro", "sample", cwd=origin)
    dvc("remote", "add", "-d", "--local", "testremote", str(remote), cwd=origin)
    dvc("push", "sample", cwd=origin)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-qam", "sample outputs"], cwd=origin, check=True)

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    assert not (clone / "data" / "sample").exists()
    dvc("remote", "add", "-d", "--local", "testremote", str(remote), cwd=clone)
    dvc("pull", "sample", cwd=clone)
    assert tree_digest(clone / "data" / "sample") == tree_digest(origin / "data" / "sample")
    status = dvc("status", "sample", cwd=clone)
    assert "up to date" in status.stdout
