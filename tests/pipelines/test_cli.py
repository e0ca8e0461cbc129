"""The `facex` console script: help for every command, and the sample command end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def facex(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facex_model.cli", *args], capture_output=True, text=True)


def test_help_lists_commands():
    result = facex("--help")
    assert result.returncode == 0
    for command in ("sample", "version"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["sample", "version"])
def test_every_command_has_help(command):
    result = facex(command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def test_version_names_the_stack():
    out = facex("version").stdout
    assert "facex-model" in out and "torch" in out and "diffusers" in out


def test_sample_command_writes_a_sample_set(tmp_path):
    out = tmp_path / "s"
    result = facex("sample", "--out", str(out), "--size", "96", "--clips-per-person", "1",
                   "--min-seconds", "0.2", "--max-seconds", "0.2")
    assert result.returncode == 0, result.stderr
    info = json.loads((out / "celebvhq_info.json").read_text())
    assert len(info["clips"]) == 2 and len(list(out.rglob("*.mp4"))) == 2


def test_sample_command_missing_portrait_is_one_clear_line(tmp_path):
    result = facex("sample", "--out", str(tmp_path), "--portrait", str(tmp_path / "nope.jpg"))
    assert result.returncode != 0
    assert "portrait file not found" in result.stderr and "Traceback" not in result.stderr
