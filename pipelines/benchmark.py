"""DVC stage `benchmark@<run>`: one of the paper's protocols (``facex benchmark list``) on one model, for each entry of
``benchmark.runs`` in the params file (none by default: the protocols read your copies of FF++, VoxCeleb1, FFHQ).

    python pipelines/benchmark.py RUN [--params params.yaml] [--no-progress]

Writes ``benchmark.out_dir/<protocol>/<RUN>/``: metrics.json, pairs.csv, pairs.jsonl (the pinned pair list), grid.png
and table.md (the paper's layout beside its published rows), as ``facex benchmark run`` does; metrics go to MLflow
(tracking.uri): to the run that registered a ``models:/`` model, else to a new run. Resumes an interrupted run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (DVC, ray job submit): make `pipelines` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facex_train.benchmark.protocols import PairSettings  # noqa: E402
from facex_train.benchmark.runner import BenchmarkError, RunSettings, run_benchmark  # noqa: E402
from pipelines.config import ParamsError, load_params  # noqa: E402
from pipelines.stage_clock import timed  # noqa: E402
from pipelines.tracking import ensure_experiment, tracking_uri  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="an entry of benchmark.runs")
    parser.add_argument("--params", help="params file (default: $FACEX_PARAMS or params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    runs = params.benchmark.runs
    if args.run not in runs:
        names = ", ".join(runs) or "none"
        print(f"error: benchmark.runs has no entry {args.run!r} (entries: {names})", file=sys.stderr)
        return 2
    cfg = runs[args.run]
    settings = RunSettings(steps=cfg.steps, cfg_scale=cfg.cfg_scale, scheduler=cfg.scheduler, seed=cfg.seed,
                           identity_model=cfg.identity_model, fid_features=cfg.fid_features,
                           watermark=cfg.watermark)  # fmt: skip
    out_dir = params.benchmark.out_dir / cfg.protocol / args.run
    try:
        run_benchmark(
            cfg.protocol, dict(cfg.roots), cfg.model, out_dir, settings, PairSettings(cfg.seed, cfg.max_pairs),
            weights_dir=params.weights.dir, device="cuda" if params.compute.use_gpu else "cpu",
            progress=not args.no_progress, tracking_uri=tracking_uri(params), experiment_id=ensure_experiment(params),
        )  # fmt: skip
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.run}: results in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(timed(main))
