"""The `facex` console script: every installed command has help, the data commands end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from facex_data.cli import app, load_commands
from facex_data.demo_clips import DemoClipsConfig

EXPECTED = {"version", "demo-clips", "extract", "weights check", "swap", "headswap", "reenact", "edit", "inpaint",
            "animate", "detect-watermark", "benchmark run", "benchmark list", "benchmark pairs"}  # fmt: skip


def facex(*args: str) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    return subprocess.run([str(Path(sys.executable).parent / "facex"), *args], capture_output=True, text=True)


def all_commands() -> list[str]:
    """Every leaf command of the loaded app, as the words a user types (`weights check`)."""
    root = typer.main.get_command(load_commands(app))

    def walk(group, prefix: str) -> list[str]:
        out = []
        context = typer.Context(group)
        for name in group.list_commands(context):
            command = group.get_command(context, name)
            words = f"{prefix} {name}".strip()
            out += walk(command, words) if hasattr(command, "list_commands") else [words]
        return out

    return sorted(walk(root, ""))


def test_every_installed_package_adds_its_commands():
    assert set(all_commands()) == EXPECTED


def test_help_lists_commands():
    result = facex("--help")
    assert result.returncode == 0
    for command in ("demo-clips", "extract", "weights", "swap", "reenact", "detect-watermark", "version"):
        assert command in result.stdout


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_every_command_has_help(command):
    result = facex(*command.split(), "--help")
    assert result.returncode == 0 and "Usage" in result.stdout, result.stderr
    assert f"facex {command}" in " ".join(result.stdout.split())


def test_version_names_the_stack():
    out = facex("version").stdout
    assert "facex-model" in out and "facex-train" in out and "torch" in out and "diffusers" in out


def test_demo_clips_command_writes_a_clip_set(tmp_path):
    out = tmp_path / "s"
    result = facex("demo-clips", "--out", str(out), "--size", "96", "--clips-per-person", "1",
                   "--min-seconds", "0.2", "--max-seconds", "0.2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    info = json.loads((out / "celebvhq_info.json").read_text())
    people = len(DemoClipsConfig().people)  # one clip of each default person
    assert people >= 2 and len(info["clips"]) == people and len(list(out.rglob("*.mp4"))) == people


def test_demo_clips_command_missing_portrait_is_one_clear_line(tmp_path):
    result = facex("demo-clips", "--out", str(tmp_path), "--portrait", str(tmp_path / "nope.jpg"))
    assert result.returncode != 0
    assert "portrait file not found" in result.stderr and "Traceback" not in result.stderr
