"""dvc.yaml cannot drift from the code and the params: every stage's deps cover what its entry point imports, every
path a stage reads from an earlier stage is that stage's output, and each stage reads its own params section."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from facex_train.code import module_closure, script_closure
from facex_train.train import TRAJECTORY_ROOTS
from pipelines.config import DEFAULT_PARAMS, load_params

REPO = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
SHARED = {"weights", "compute", "split", "tracking"}  # sections several stages read; every other one has one owner
OWNER = {"demo_clips": "demo_clips", "extract": "extract", "pretrain": "pretrain", "train_generalist": "train",
         "finetune": "train", "evaluate": "evaluate", "register": "register", "examples": "examples",
         "ablate": "ablations", "ablations": "ablations", "benchmark": "benchmark"}  # fmt: skip


def _script(stage: dict) -> Path:
    cmd = stage["do"]["cmd"] if "do" in stage else stage["cmd"]
    return REPO / re.search(r"python (\S+\.py)", cmd).group(1)


def _deps(stage: dict) -> list[Path]:
    deps = stage["do"]["deps"] if "do" in stage else stage["deps"]
    return [REPO / d for d in deps]


def _covered(path: Path, deps: list[Path]) -> bool:
    return any(path == d or path.is_relative_to(d) for d in deps)


@pytest.mark.parametrize("name", sorted(DVC))
def test_stage_deps_cover_every_project_module_its_entry_point_imports(name):
    stage = DVC[name]
    deps = _deps(stage)
    missing = [str(p.relative_to(REPO)) for p in script_closure(_script(stage)) if not _covered(p, deps)]
    assert not missing, f"dvc.yaml stage {name} lacks deps on {missing}"
    code = [d for d in deps if d.suffix == ".py" or d.is_dir() and not d.is_relative_to(REPO / "data")]
    stale = [str(d.relative_to(REPO)) for d in code if not d.exists()]
    assert not stale, f"dvc.yaml stage {name} names deps that do not exist: {stale}"


def test_the_training_code_hash_covers_what_the_training_stages_depend_on():
    hashed = set(module_closure(TRAJECTORY_ROOTS))
    for name in ("train_generalist", "finetune"):
        deps = _deps(DVC[name])
        assert all(_covered(p, deps) for p in hashed), name
    library = {p for p in script_closure(_script(DVC["train_generalist"])) if "facex_model" in p.parts}
    # every model module the stage imports shapes the hashed trajectory, but the tracking server check (where the
    # run is logged, never what it learns)
    assert {p for p in library if p.name != "mlflow_server.py"} <= hashed


def _outs() -> dict[Path, str]:
    out = {}
    for name, stage in DVC.items():
        body = stage.get("do", stage)
        for item in body.get("outs", []) + body.get("metrics", []) + body.get("plots", []):
            path = item if isinstance(item, str) else next(iter(item))
            out[REPO / path.replace("${key}", "*")] = name
    return out


@pytest.mark.parametrize("params_file", [DEFAULT_PARAMS, REPO / "params" / "celebvhq-sd15.yaml"])
def test_what_a_stage_reads_from_another_is_a_path_in_its_own_section_and_that_stages_output(params_file):
    params = load_params(params_file)
    reads = {
        "extract": [params.extract.input_dir],
        "train_generalist": [params.train.shards],
        "evaluate": [params.evaluate.shards, params.evaluate.models_dir],
        "register": [params.register.models_dir, params.register.metrics],
        "examples": [params.examples.clips_dir, params.examples.models_dir],
    }
    writes = {
        "demo_clips": params.demo_clips.out_dir, "extract": params.extract.out_dir, "train_generalist":
        params.train.out_dir / "generalist", "evaluate": params.evaluate.out_dir / "metrics.json",
    }  # fmt: skip
    outs = _outs()
    for stage, paths in reads.items():
        for path in paths:
            producers = {name for out, name in outs.items() if path == out or out.is_relative_to(path)
                         or path.is_relative_to(out) or out.match(str(path / "*"))}  # fmt: skip
            if params_file != DEFAULT_PARAMS and stage == "extract":
                continue  # the real profile reads CelebV-HQ from outside the pipeline
            assert producers, f"{params_file.name}: {stage} reads {path}, which no stage writes"
            deps = _deps(DVC[stage])
            assert _covered(path, deps) or any(d.is_relative_to(path) for d in deps), (stage, path)
    for stage, path in writes.items():
        assert path in outs or path.parent in outs or any(path.is_relative_to(o) for o in outs), (stage, path)


def test_each_stage_reads_its_own_section_and_only_shared_others():
    for name, stage in DVC.items():
        body = stage.get("do", stage)
        sections = {p.split(".")[0] for p in body["params"]}
        assert OWNER[name] in sections, name
        assert sections - {OWNER[name]} <= SHARED, f"{name} reads another stage's params: {sections - SHARED}"


def test_a_training_job_holds_the_train_section_instead_of_copying_its_fields():
    from facex_train.config import ComputeConfig, TrainConfig
    from facex_train.train import TrainJob

    job_fields = {f.name: f.type for f in dataclasses.fields(TrainJob)}
    copied = set(job_fields) & ({f.name for f in dataclasses.fields(TrainConfig)} |
                                {f.name for f in dataclasses.fields(ComputeConfig)})  # fmt: skip
    assert not copied, f"TrainJob repeats settings of the train/compute sections: {copied}"
    assert {job_fields["train"], job_fields["compute"]} == {"TrainConfig", "ComputeConfig"}
