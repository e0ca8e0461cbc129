"""DVC stage `demo_clips`: write the embedded profile's input, CelebV-HQ-layout clips of real portraits.

    python pipelines/demo_clips.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (DVC, ray job submit): make `pipelines` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facex_data.demo_clips import make_demo_clips  # noqa: E402
from pipelines.config import ParamsError, load_params  # noqa: E402
from pipelines.stage_clock import timed  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: $FACEX_PARAMS or params.yaml)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, check_inputs=("demo_clips",))
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cfg = params.demo_clips
    info = make_demo_clips(cfg)
    frames = sum(c["frames"] for c in info["clips"].values())
    print(f"wrote {len(info['clips'])} clips ({frames} frames) to {cfg.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(timed(main))
