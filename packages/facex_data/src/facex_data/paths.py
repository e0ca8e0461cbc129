"""Path types shared by the libraries' typed configs, and how outputs name other folders."""

import os
from pathlib import Path


class InputPath(type(Path())):
    """A path that must exist when the stage reading it starts (params validation checks it)."""


def relative_path(path: str | os.PathLike, folder: str | os.PathLike) -> str:
    """`path` relative to `folder` (/-separated) where the two share a directory below the filesystem's root, else
    absolute: what an output records about another folder, the same bytes wherever a checkout holding both lies."""
    target, base = os.path.abspath(path), os.path.abspath(folder)
    if os.path.commonpath([target, base]) == Path(target).anchor:
        return Path(target).as_posix()
    return Path(os.path.relpath(target, base)).as_posix()
