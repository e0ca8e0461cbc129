"""Path types shared by the libraries' typed configs."""

from pathlib import Path


class InputPath(type(Path())):
    """A path that must exist when the stage reading it starts (params validation checks it)."""
