"""params.yaml -> typed, validated dataclasses.

The single source of configuration is a params file (``params.yaml`` by default, or the file named
by ``--params`` / ``FACEX_PARAMS``). Each top-level section maps to one dataclass, the only place its
defaults are written: a stage's own section belongs to the library that runs it (``facex_data.config``:
``DemoClipsConfig``, ``ExtractConfig``; ``facex_train.config``: ``PretrainConfig``, ``TrainConfig``,
``EvaluateConfig``, ``BenchmarkConfig``), or is defined here when only a stage script reads it (``register``,
``examples``);
``weights``, ``compute``, ``split`` and ``tracking`` are shared by several stages. A stage reads its own
section and the shared ones, never another stage's: what it needs from an earlier stage is a path in its
own section that ``dvc.yaml`` declares as a dependency (``tests/pipelines/test_dvc_stages.py`` checks
both). This module only parses and validates, so a typo in a key or a wrong type fails before any work
starts, with the key's full path in the message.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from facex_data.config import DemoClipsConfig, ExtractConfig
from facex_data.paths import InputPath
from facex_train.config import (
    AblationsConfig,
    BenchmarkConfig,
    ComputeConfig,
    EvaluateConfig,
    PretrainConfig,
    TrainConfig,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PARAMS = REPO_ROOT / "params.yaml"
PARAMS_ENV = "FACEX_PARAMS"


class ParamsError(ValueError):
    """A params file that does not match the schema; the message names the file and the key."""


@dataclass(frozen=True)
class WeightsParams:
    """The weights users bring (nothing is downloaded): the paper's extractors, FID Inception.

    ``dir`` is the one weights dir of every stage; being a DVC-tracked parameter, it always wins over
    ``$FACEX_WEIGHTS_DIR`` (which only library calls and commands outside the stages read). The backbone a
    training stage builds on is ``train.backbone``."""

    dir: Path = Path("weights")


@dataclass(frozen=True)
class SplitParams:
    """Which clips are held out of training for evaluation (the one rule: facex_data.layout.holdout_clips)."""

    holdout_every: int = 2  # clips sorted by id: every n-th one (n-1, 2n-1, ...) is held out; 0 = none


@dataclass(frozen=True)
class TrackingParams:
    """MLflow: where runs and the model registry live (a local sqlite store by default, or an http server)."""

    uri: str = "sqlite:///mlflow.db"  # relative sqlite paths are resolved against the repo
    experiment: str = "facex"
    artifact_dir: Path = Path("mlartifacts")  # artifact root for a local store (a server has its own)
    model_prefix: str = "facex"  # registered names: <prefix>-generalist, <prefix>-reenact, <prefix>-swap


@dataclass(frozen=True)
class RegisterParams:
    """The register stage (pipelines/register.py): which trained models, judged by which metrics file."""

    models_dir: Path = Path("data/models")  # the training stages' output
    models: tuple[str, ...] = ("generalist", "reenact", "swap")
    metrics: Path = Path("metrics/metrics.json")  # the evaluate stage's output (headlines); else the held-out loss
    out: Path = Path("data/registry.json")


@dataclass(frozen=True)
class ExamplesParams:
    """The examples stage (pipelines/examples.py): a grid per model and task on two people of the demo clips."""

    models_dir: Path = Path("data/models")
    models: tuple[str, ...] = ("generalist", "reenact", "swap")
    clips_dir: Path = Path("data/demo_clips")  # the demo_clips stage's output
    out_dir: Path = Path("data/examples")
    steps: int = 10
    scheduler: Literal["ddim", "euler", "dpm"] = "ddim"
    cfg_scale: float = 2.0
    seed: int = 0
    tile: int = 256


@dataclass(frozen=True)
class Params:
    """Every section of a params file."""

    demo_clips: DemoClipsConfig = field(default_factory=DemoClipsConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    weights: WeightsParams = field(default_factory=WeightsParams)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    split: SplitParams = field(default_factory=SplitParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    register: RegisterParams = field(default_factory=RegisterParams)
    examples: ExamplesParams = field(default_factory=ExamplesParams)
    ablations: AblationsConfig = field(default_factory=AblationsConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)


def repo_relative(path: str | os.PathLike) -> str:
    """`path` relative to the repository when it lies inside it (what outputs record: the same in every checkout),
    else as it is."""
    absolute = Path(os.path.abspath(path))
    return absolute.relative_to(REPO_ROOT).as_posix() if absolute.is_relative_to(REPO_ROOT) else str(path)


def params_path(explicit: str | os.PathLike | None = None) -> Path:
    """The params file to use: an explicit path, else ``$FACEX_PARAMS``, else the repo's params.yaml."""
    if explicit:
        return Path(explicit)
    if os.environ.get(PARAMS_ENV):
        return Path(os.environ[PARAMS_ENV])
    return DEFAULT_PARAMS


def load_params(path: str | os.PathLike | None = None, check_inputs: tuple[str, ...] = ()) -> Params:
    """Parse and validate a params file.

    ``check_inputs`` names the sections whose ``InputPath`` fields must exist now (the stage about
    to run); other sections' input paths may be outputs of stages that have not run yet.
    Relative paths come back absolute, resolved against the repo the file belongs to (its folder,
    or that folder's parent for files in ``params/``), so a stage behaves the same from any cwd.
    """
    file = params_path(path)
    if not file.is_file():
        raise ParamsError(f"params file {file} not found: pass --params FILE or set {PARAMS_ENV}")
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{file}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ParamsError(f"{file}: the top level must be a mapping of sections, got {type(raw).__name__}")
    params = _absolute(from_mapping(Params, raw, where=str(file), key=""), _base_dir(file))
    for section in check_inputs:
        _check_inputs(getattr(params, section), f"{file}: {section}")
    return params


def _base_dir(file: Path) -> Path:
    parent = file.resolve().parent
    return parent.parent if parent.name == "params" else parent


def from_mapping(cls: type, data: Any, where: str, key: str) -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and values of the wrong type."""
    label = key or "<top level>"
    if not isinstance(data, dict):
        raise ParamsError(f"{where}: {label}: expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        names = ", ".join(_join(key, u) for u in unknown)
        raise ParamsError(f"{where}: unknown key {names}; known keys here: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, where, _join(key, name))
    missing = [n for n, f in fields.items() if n not in kwargs and _has_no_default(f)]
    if missing:
        raise ParamsError(f"{where}: missing key {', '.join(_join(key, m) for m in missing)}")
    try:
        return cls(**kwargs)
    except ParamsError:
        raise
    except ValueError as err:  # a section's own check (__post_init__), e.g. "train.logit_std must be > 0"
        raise ParamsError(f"{where}: {err}") from err


def _has_no_default(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _join(prefix: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{prefix}[{name}]"
    return f"{prefix}.{name}" if prefix else name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = get_origin(tp)
    bad = ParamsError(f"{where}: {key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where, key)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where, key)
            except ParamsError:
                continue
        raise bad
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ParamsError(f"{where}: {key}: expected one of {choices}, got {value!r}")
        return value
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, list):
            raise bad
        args = get_args(tp)
        item = args[0] if args else Any
        items = [_coerce(item, v, where, _join(key, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        kt, vt = get_args(tp) or (Any, Any)
        return {_coerce(kt, k, where, key): _coerce(vt, v, where, _join(key, str(k))) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if tp in (Path, InputPath):
        if not isinstance(value, str) or not value:
            raise bad
        return tp(value)
    raise ParamsError(f"{where}: {key}: unsupported field type {_type_name(tp)} in the schema")


def _absolute(obj: Any, base: Path) -> Any:
    """A copy of a parsed config with every relative Path field made absolute against ``base``."""
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(
            obj, **{f.name: _absolute(getattr(obj, f.name), base) for f in dataclasses.fields(obj) if f.init}
        )
    if isinstance(obj, Path):
        return obj if obj.is_absolute() else type(obj)(base / obj.expanduser())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_absolute(v, base) for v in obj)
    return obj


def _check_inputs(obj: Any, label: str) -> None:
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            _check_inputs(getattr(obj, f.name), f"{label}.{f.name}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_inputs(v, f"{label}[{i}]")
    elif isinstance(obj, InputPath) and not obj.exists():
        raise ParamsError(f"{label}: path {obj} does not exist; fix the path in the params file or create it")
