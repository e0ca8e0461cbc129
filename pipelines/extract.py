"""DVC stage `extract`: clips -> WebDataset shards with the configured extractor backend (Ray).

    python pipelines/extract.py [--params params.yaml] [--input DIR] [--out DIR] [--runner ray|local]

Without a cluster it starts a local Ray and stops it at the end; under `ray job submit` (RAY_ADDRESS
set) it runs on that cluster. Re-running skips complete shards and redoes incomplete ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (DVC, ray job submit): make `pipelines` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facex_data.extraction import run_extraction  # noqa: E402
from facex_data.paths import InputPath  # noqa: E402
from pipelines.config import ParamsError, load_params  # noqa: E402
from pipelines.stage_clock import timed  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: $FACEX_PARAMS or params.yaml)")
    parser.add_argument("--input", type=Path, help="override extract.input_dir (CelebV-HQ layout)")
    parser.add_argument("--out", type=Path, help="override extract.out_dir")
    parser.add_argument("--runner", choices=("ray", "local"), help="override extract.runner")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, check_inputs=() if args.input else ("extract",))
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    overrides: dict = {}
    if args.input:
        if not args.input.is_dir():
            print(f"error: --input {args.input}: folder not found", file=sys.stderr)
            return 2
        overrides["input_dir"] = InputPath(args.input.resolve())
    if args.out:
        overrides["out_dir"] = args.out.resolve()
    if args.runner:
        overrides["runner"] = args.runner
    if args.no_progress:
        overrides["progress"] = False
    cfg = dataclasses.replace(params.extract, **overrides)
    try:
        summary = run_extraction(cfg, params.weights.dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary.table())
    print(f"shards and ledger.json in {cfg.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(timed(main))
