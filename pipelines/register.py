"""DVC stage `register`: log each trained model as an MLflow pyfunc, register it, move `champion` on merit.

    python pipelines/register.py [--params params.yaml] [--models generalist reenact swap]

For each model dir `register.models_dir`/<name>/ (`register.models`): logs it in an MLflow run (artifacts:
the safetensors trainable part + config; the backbone is referenced by path), registers a new version of
`<prefix>-<name>` (`tracking.model_prefix`), tags it with its headline metric, and points the `champion`
alias at it only when that metric is at least as good as the current champion's. The headline comes from
the evaluate stage (`register.metrics`: `<name>.headline`); without it, the held-out denoising loss the
training stage recorded (<model dir>/train_metrics.json; lower is better).

Writes `register.out` (data/registry.json): per model, the new version, its headline, and the champion
after the decision. Works unchanged against a shared `mlflow server` (tracking.uri: http://...).

    mlflow.pyfunc.load_model("models:/facex-swap@champion")   # or: facex swap --model models:/facex-swap@champion
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (DVC, ray job submit): make `pipelines` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facex_model.model import TRAIN_METRICS  # noqa: E402
from pipelines.config import ParamsError, load_params, repo_relative  # noqa: E402
from pipelines.stage_clock import timed  # noqa: E402
from pipelines.tracking import dvc_hash, ensure_experiment, git_commit, tracking_uri  # noqa: E402

ALIAS = "champion"


def headline_for(name: str, model_dir: Path, metrics_file: Path) -> dict[str, Any]:
    """{"name", "value", "higher_is_better", "source"}: the evaluate stage's headline, else the held-out loss."""
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        if name in metrics and "headline" in metrics[name]:
            head = dict(metrics[name]["headline"])
            return {**head, "value": float(head["value"]), "source": repo_relative(metrics_file)}
    train_metrics = model_dir / TRAIN_METRICS
    if not train_metrics.is_file():
        raise FileNotFoundError(f"{train_metrics} not found: run the training stage for {name} first")
    value = json.loads(train_metrics.read_text()).get("heldout_loss")
    return {
        "name": "heldout_loss",
        "value": float("nan") if value is None else float(value),
        "higher_is_better": False,
        "source": repo_relative(train_metrics),
    }


def at_least_as_good(new: dict[str, Any], champion: dict[str, Any] | None) -> tuple[bool, str]:
    """Whether `new` may take the champion alias, and why (NaN never wins; unlike metrics: the new protocol wins)."""
    if champion is None:
        return True, "no champion yet"
    if not math.isfinite(new["value"]):
        return False, f"new {new['name']} is {new['value']}"
    if champion["name"] != new["name"]:
        return True, f"champion was judged by {champion['name']}, now by {new['name']}: the newer protocol decides"
    if not math.isfinite(champion["value"]):
        return True, f"champion's {champion['name']} is {champion['value']}"
    better = new["value"] >= champion["value"] if new["higher_is_better"] else new["value"] <= champion["value"]
    sign = ">=" if new["higher_is_better"] else "<="
    verdict = "" if better else "not "
    return better, f"{new['name']} {new['value']:.6g} {verdict}{sign} champion's {champion['value']:.6g}"


def _champion(client: Any, registered: str) -> tuple[Any, dict[str, Any] | None]:
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(registered, ALIAS)
    except MlflowException:
        return None, None
    tags = version.tags or {}
    if "headline.name" not in tags:
        return version, None
    return version, {
        "name": tags["headline.name"],
        "value": float(tags["headline.value"]),
        "higher_is_better": tags.get("headline.higher_is_better") == "True",
    }


def register_model(name: str, model_dir: Path, metrics_file: Path, prefix: str, experiment_id: str) -> dict[str, Any]:
    import mlflow

    from facex_model.pyfunc import log_model

    registered = f"{prefix}-{name}"
    head = headline_for(name, model_dir, metrics_file)
    client = mlflow.MlflowClient()
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"register-{name}") as run:
        mlflow.set_tags({"git_commit": git_commit(), "facex.stage": "register", "facex.model": name,
                         "dvc.model_md5": dvc_hash(model_dir)})  # fmt: skip
        mlflow.log_metric(f"headline.{head['name']}", head["value"])
        info = log_model(model_dir, artifact_path="model", registered_model_name=registered)
    version = str(info.registered_model_version)
    tags = {"name": head["name"], "value": repr(head["value"]), "higher_is_better": head["higher_is_better"]}
    for key, value in tags.items():
        client.set_model_version_tag(registered, version, f"headline.{key}", str(value))
    client.set_model_version_tag(registered, version, "run_id", run.info.run_id)
    old_version, old_head = _champion(client, registered)
    move, reason = at_least_as_good(head, old_head)
    if move:
        client.set_registered_model_alias(registered, ALIAS, version)
    champion = version if move else (old_version.version if old_version is not None else None)
    print(f"{registered} v{version}: {head['name']} = {head['value']:.6g} -> champion "
          f"{'moved to' if move else 'stays at'} v{champion} ({reason})")  # fmt: skip
    return {
        "registered_model": registered,
        "version": version,
        "headline": head,
        "champion_moved": move,
        "champion_version": champion,
        "reason": reason,
        "uri": f"models:/{registered}@{ALIAS}",
    }


def _shown(uri: str) -> str:
    """The tracking URI as the summary records it: a sqlite file inside the repo by its repo-relative path (the
    params' own form), so that the summary reads the same in every checkout."""
    prefix = "sqlite:///"
    return prefix + repo_relative(uri[len(prefix) :]) if uri.startswith(prefix) else uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: $FACEX_PARAMS or params.yaml)")
    parser.add_argument("--models", nargs="+", help="model names under the models dir (default: register.models)")
    parser.add_argument("--models-dir", type=Path, help="where the model folders are (default: register.models_dir)")
    parser.add_argument("--metrics", type=Path, help="evaluate stage's metrics.json (default: register.metrics)")
    parser.add_argument("--out", type=Path, help="where to write the registry summary (default: register.out)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cfg = params.register
    names = args.models or list(cfg.models)
    metrics_file = args.metrics or cfg.metrics
    models_dir = Path(args.models_dir or cfg.models_dir)
    out = args.out or cfg.out
    missing = [n for n in names if not (models_dir / n / "config.json").is_file()]
    if missing:
        print(f"error: no trained model in {', '.join(str(models_dir / n) for n in missing)}; run the training "
              "stages first (dvc repro)", file=sys.stderr)  # fmt: skip
        return 2
    import mlflow

    try:
        experiment = ensure_experiment(params)
        mlflow.set_registry_uri(tracking_uri(params))
        results = {}
        for name in names:
            results[name] = register_model(name, models_dir / name, metrics_file, params.tracking.model_prefix,
                                           experiment)  # fmt: skip
    except (FileNotFoundError, ConnectionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"tracking_uri": _shown(tracking_uri(params)), "models": results}
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"registry summary in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(timed(main))
