"""How long each DVC stage took, kept beside the run instead of measured by hand.

Every stage script runs its `main` through `timed`: when DVC runs it (DVC sets ``DVC_STAGE`` to the stage's name,
e.g. ``finetune@swap``), one line per run goes to ``.work/stage_times.jsonl`` (git-ignored, not a DVC output, so it
never changes a stage's hash): the stage, when it started, its wall seconds, its exit status and the host. The
Makefile's ``demo`` and ``ablations`` targets end with the stages they ran:

    python pipelines/stage_clock.py --since EPOCH_SECONDS   # the stages run since then, in order, and their total
    python pipelines/stage_clock.py                         # every recorded run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

LOG = Path(__file__).resolve().parents[1] / ".work" / "stage_times.jsonl"
STAGE_ENV = "DVC_STAGE"  # set by `dvc repro` for each stage command it runs


def timed(main: Callable[[], int | None]) -> int | None:
    """Run a stage's `main`, and under DVC record how long it took and how it ended (also when it raised)."""
    stage = os.environ.get(STAGE_ENV)
    started = time.time()
    status: int | str = "error"
    try:
        code = main()
        status = code or 0
        return code
    except SystemExit as exit_:
        status = 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1  # sys.exit's rules
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if stage:
            _append({"stage": stage, "started": round(started, 1), "seconds": round(time.time() - started, 1),
                     "exit": status, "host": platform.node(), "cpus": os.cpu_count()})  # fmt: skip


def _append(record: dict) -> None:
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("a") as log:
        log.write(json.dumps(record) + "\n")


def records(since: float = 0.0) -> list[dict]:
    """The recorded stage runs that started at or after `since` (epoch seconds), oldest first."""
    if not LOG.is_file():
        return []
    rows = []
    for line in LOG.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill: the rest still count
        if row.get("started", 0) >= since:
            rows.append(row)
    return sorted(rows, key=lambda r: r["started"])


def summary(rows: list[dict], since: float | None = None) -> str:
    """A table of the stage runs `rows`: name, seconds, and how it ended where not 0; the total below."""
    if not rows:
        return "stage times: no stage ran (DVC found every stage up to date)"
    width = max(len(r["stage"]) for r in rows)
    lines = [f"stage times ({len(rows)} stage run(s); {LOG.relative_to(LOG.parents[1])}):"]
    for row in rows:
        ended = "" if row["exit"] == 0 else f"  (exit {row['exit']})"
        lines.append(f"  {row['stage']:<{width}}  {row['seconds']:>8.1f} s{ended}")
    total = sum(r["seconds"] for r in rows)
    lines.append(f"  {'stages':<{width}}  {total:>8.1f} s = {total / 60:.1f} min")
    if since is not None:
        wall = time.time() - since
        lines.append(f"  {'wall':<{width}}  {wall:>8.1f} s = {wall / 60:.1f} min (with DVC's own checks)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--since", type=float, help="only the runs that started at or after this epoch second")
    args = parser.parse_args(argv)
    print(summary(records(args.since or 0.0), args.since))
    return 0


if __name__ == "__main__":
    sys.exit(main())
