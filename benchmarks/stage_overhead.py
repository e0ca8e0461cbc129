"""Where a training stage's wall time goes besides its steps: imports, Ray's start, Ray Train's start and wind-down.

Runs one training stage of the params (default `reenact`, the demo's finetune; `generalist` needs no trained model)
for `--steps` steps as `pipelines/train.py` runs it, without MLflow, and prints each phase's seconds: the stack's
import in a fresh process (what each Ray Train worker pays too), `ray.init`, `TorchTrainer.fit` outside the steps
(controller, placement group, workers' start and imports, model build, the final held-out loss, grid and checkpoint)
and the steps themselves (the `timings` the workers record), then Ray's shutdown; and, for scale, the same Ray
Train run with a loop that only reports (Ray Train's own start and wind-down: no floor below it without Ray Train).

    python benchmarks/stage_overhead.py [--stage reenact] [--steps 20] [--params params.yaml]

Needs data/shards and data/backbone (and data/models/generalist for a specialist). About a minute on 2 idle cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the stages' params loader (pipelines/ is not an installed package)


def fresh_import_seconds(module: str) -> float:
    """Seconds a new interpreter takes to import `module` (as a Ray Train worker does on its first call)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def report_only(config: dict) -> None:
    """A Ray Train loop that does nothing but report: what any TorchTrainer.fit costs around its loop."""
    import ray.train

    ray.train.report({"done": 1})


def empty_fit_seconds(workers: int, storage: str) -> float:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = time.perf_counter()
    TorchTrainer(report_only, scaling_config=ScalingConfig(num_workers=workers),
                 run_config=RunConfig(name="bench-overhead-empty", storage_path=storage)).fit()  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--stage", default="reenact", help="generalist, or a specialist in train.specialist_steps")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    phases: dict[str, float] = {"import facex_train.train (fresh process)": fresh_import_seconds("facex_train.train")}
    started = time.perf_counter()
    from pipelines.config import load_params
    from pipelines.train import build_job

    params = load_params(args.params, check_inputs=("train",))
    job, _ = build_job(params, args.stage)
    phases["driver: imports, params, job"] = time.perf_counter() - started

    import ray

    from facex_train.train import fit, ray_session

    with tempfile.TemporaryDirectory() as tmp:
        run = dataclasses.replace(
            job, name=f"bench-overhead-{args.stage}", steps=args.steps, tracking_uri=None, model_dir=f"{tmp}/model",
            storage_path=f"{tmp}/ray", train=dataclasses.replace(job.train, checkpoint_every=args.steps),
        )  # fmt: skip
        mark = time.perf_counter()
        with ray_session(job.compute.num_workers):
            phases["ray.init"] = time.perf_counter() - mark
            mark = time.perf_counter()
            summary = fit(run)
            fitted = time.perf_counter() - mark
            empty = empty_fit_seconds(job.compute.num_workers, f"{tmp}/ray")
            mark = time.perf_counter()
        shutdown = time.perf_counter() - mark
        assert not ray.is_initialized()
    steps = sum(t[0] for t in summary["timings"])
    phases["Ray Train outside the steps"] = fitted - steps
    phases[f"the {len(summary['timings'])} steps"] = steps
    phases["ray.shutdown"] = shutdown
    stage = sum(v for k, v in phases.items() if "fresh process" not in k)
    print(f"\n{args.stage}, {args.steps} steps, {job.compute.num_workers} worker(s): {stage:.1f} s in this process")
    for name, seconds in phases.items():
        share = "" if "fresh process" in name else f"{seconds / stage:>7.0%}"
        print(f"  {name:<44} {seconds:>7.1f} s {share}")
    outside = stage - steps
    print(f"outside the steps: {outside:.1f} s per stage run (the steps: {steps / len(summary['timings']):.3f} s each)")
    print(f"for scale, TorchTrainer.fit of a loop that only reports ({job.compute.num_workers} workers): {empty:.1f} s")


if __name__ == "__main__":
    main()
