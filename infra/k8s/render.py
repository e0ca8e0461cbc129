"""Render the FaceX Kubernetes manifests: each `${name}` in them becomes its value from values.yaml.

    python infra/k8s/render.py                                   # every manifest, in apply order
    python infra/k8s/render.py raycluster.yaml rayjob-extract.yaml
    python infra/k8s/render.py --values my-values.yaml --set gpu_workers_max=4 | kubectl apply -f -

A plain text substitution (no templating language): the manifests stay readable YAML, and a name with
no value is an error naming the file and the key rather than an empty field in the cluster. `$$` is a
literal `$` (for Kubernetes' own `$(VAR)` expansion).
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
# namespace and storage before what uses them; the jobs last, once the cluster and MLflow are there
ORDER = ("namespace.yaml", "storage.yaml", "load-shared.yaml", "mlflow.yaml", "raycluster.yaml",
         "rayjob-extract.yaml", "rayjob-train-generalist.yaml", "rayjob-finetune.yaml", "rayjob-evaluate.yaml",
         "rayjob-register.yaml")  # fmt: skip


class RenderError(ValueError):
    """A manifest names a value the values file does not have, or a --set is malformed."""


def load_values(path: Path = HERE / "values.yaml", overrides: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """values.yaml as strings, with `key=value` overrides applied (a key must already exist: typos fail)."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    values = {key: str(value) for key, value in raw.items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise RenderError(f"--set {item!r}: expected KEY=VALUE")
        if key not in values:
            raise RenderError(f"--set {key}: not a key of {path}; known: {', '.join(sorted(values))}")
        values[key] = value
    return values


def render_text(template: str, values: dict[str, str], where: str) -> str:
    try:
        return string.Template(template).substitute(values)
    except KeyError as err:
        raise RenderError(f"{where}: ${{{err.args[0]}}} has no value; add it to values.yaml") from err
    except ValueError as err:
        raise RenderError(f"{where}: {err}") from err


def render(names: list[str] | tuple[str, ...] = ORDER, values: dict[str, str] | None = None) -> list[dict]:
    """The manifests as Kubernetes objects (one per YAML document), rendered with `values`."""
    values = load_values() if values is None else values
    objects = []
    for name in names:
        path = HERE / name
        if not path.is_file():
            raise RenderError(f"{path}: no such manifest; known: {', '.join(ORDER)}")
        text = render_text(path.read_text(), values, str(path))
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


class _NoAliases(yaml.SafeDumper):
    """Writes a shared node out in full each time: the output reads like hand-written manifests."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifests", nargs="*", help=f"files in {HERE.name}/ (default: all, in apply order)")
    parser.add_argument("--values", type=Path, default=HERE / "values.yaml", help="values file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one value")
    args = parser.parse_args(argv)
    try:
        objects = render(args.manifests or ORDER, load_values(args.values, args.set))
    except RenderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    yaml.dump_all(objects, sys.stdout, Dumper=_NoAliases, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
