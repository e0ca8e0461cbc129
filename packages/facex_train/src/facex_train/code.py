"""Which project source files a module depends on, read from the code's import statements (nothing is run).

The training stages hash this closure (:func:`closure_digest`) into their run names and the pretrain stage into its
checkpoint names (a change to any of these files starts a fresh run instead of resuming a stale one), and the test
of ``dvc.yaml`` checks every stage's ``deps`` against the closure of its entry point, so neither list is kept by
hand.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path

FIRST_PARTY = ("facex_data", "facex_model", "facex_train", "pipelines")


@functools.cache
def _package_dir(top: str) -> Path | None:
    spec = importlib.util.find_spec(top)  # a top-level name: located, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def module_file(name: str) -> Path | None:
    """The source file of a first-party module or package (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``)."""
    parts = name.split(".")
    if parts[0] not in FIRST_PARTY:
        return None
    root = _package_dir(parts[0])
    if root is None:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imported_modules(name: str, path: Path) -> set[str]:
    """First-party modules that ``path`` (module ``name``) imports anywhere in its body, functions included."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(name, path).split(".")
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {m for m in out if module_file(m) is not None}


def module_closure(roots: Iterable[str]) -> list[Path]:
    """Source files of ``roots`` and of every first-party module they import, directly or not, with the
    ``__init__.py`` of every package on the way (importing ``a.b`` runs ``a/__init__.py``); sorted."""
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name)
        if path is None:
            raise ModuleNotFoundError(f"{name} is not a first-party module ({', '.join(FIRST_PARTY)})")
        seen[name] = path
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo.extend(parents)
        todo.extend(imported_modules(name, path) - set(seen))
    return sorted(set(seen.values()))


def closure_digest(roots: Iterable[str]) -> str:
    """sha256 over the names and bytes of ``module_closure(roots)``: it changes with any source file they use."""
    digest = hashlib.sha256()
    for path in module_closure(roots):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def script_closure(script: Path) -> list[Path]:
    """The closure of a script run as ``python script.py`` (a pipelines/ entry point): itself and its imports."""
    script = Path(script).resolve()
    imports = imported_modules("__main__", script)
    return sorted({script, *module_closure(imports)})
