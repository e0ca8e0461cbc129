"""DVC stage `sample`: write the embedded CelebV-HQ-layout sample set.

    python pipelines/make_sample.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (DVC, ray job submit): make `pipelines` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facex_data.sample import make_sample_set  # noqa: E402
from pipelines.config import ParamsError, load_params  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: $FACEX_PARAMS or params.yaml)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, check_inputs=("sample",))
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cfg = params.sample
    info = make_sample_set(cfg)
    frames = sum(c["frames"] for c in info["clips"].values())
    print(f"wrote {len(info['clips'])} clips ({frames} frames) to {cfg.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
