# FaceX: one-command set-up and run. `make demo` runs the whole pipeline on the embedded sample,
# `make test` runs the test suite; both create and update the project venv first.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
VENV_ABS := $(abspath $(VENV))
BIN := $(VENV_ABS)/bin
STAMP := $(VENV_ABS)/.facex-setup
PKGS := packages/facex_data packages/facex_model packages/facex_train
# insightface requires opencv-python (GUI build, needs libGL): install it without deps, its other deps are in the lock
INSIGHTFACE := insightface==2.1
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_ENABLE_TELEMETRY := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# the suite on TEST_WORKERS pytest-xdist workers, a whole test module per worker at a time, longest modules first
# (tests/conftest.py orders them): most tests leave a core idle (imports, subprocess and Ray start-up)
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: setup demo ablations test test-deps test-fast lint lock bench-extract bench-model bench-paper bench-infer bench-train bench-caption bench-specialists bench-gpu gpu-carry

## setup: create .venv if missing and install the pinned lock + both packages (no-op when nothing changed)
setup: $(STAMP)

$(STAMP): requirements.lock $(addsuffix /pyproject.toml,$(PKGS))
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_ABS)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -qq --disable-pip-version-check --no-deps $(INSIGHTFACE)
	$(BIN)/python -m pip install -qq --disable-pip-version-check --no-deps --no-build-isolation $(addprefix -e ,$(PKGS))
	@touch $@

## demo: the main job, every stage of the embedded default profile up to the registry and the example grids
demo: setup
	$(BIN)/python -m dvc repro register examples

## ablations: paper Table 3 in miniature (one generalist per row, same budget): metrics/ablations.{json,md,csv}
ablations: setup
	$(BIN)/python -m dvc repro ablations

PG_CTL := $(firstword $(wildcard /usr/lib/postgresql/*/bin/pg_ctl))

## test-deps: system packages the tests drive for real (PostgreSQL for the MLflow server tests)
test-deps:
ifeq ($(PG_CTL),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing PostgreSQL (the MLflow-server tests run it for real)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "note: PostgreSQL is not installed and this is not root: its tests will be skipped (apt-get install postgresql)"; fi
endif

## test: the whole test suite (CI runs exactly this)
test: setup test-deps
	$(BIN)/python -m pytest $(XDIST)

test-fast: setup
	$(BIN)/python -m pytest $(XDIST) -m "not slow"

lint: setup
	$(BIN)/ruff check .

## lock: re-resolve requirements.in into requirements.lock (in a scratch venv)
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q -r requirements.in
	.lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -vE '^(pip|facex-|insightface)' > requirements.lock
	rm -rf .lock-venv

## benchmarks (print side-by-side ratios measured in one run; not part of the test suite)
bench-extract: setup
	$(BIN)/python benchmarks/extract.py

bench-model: setup
	$(BIN)/python benchmarks/model_frc.py

bench-paper: setup
	$(BIN)/python benchmarks/paper_extractors.py

bench-infer: setup
	$(BIN)/python benchmarks/inference.py

bench-train: setup
	$(BIN)/python benchmarks/train.py

## how much its own pretraining captions steer the embedded backbone, beside FaceX's conditional gain (needs data/shards)
bench-caption: setup
	$(BIN)/python benchmarks/caption_gain.py

## each specialist minus the generalist on its own task's held-out denoising loss, paired (needs data/models)
bench-specialists: setup
	$(BIN)/python benchmarks/specialist_denoising.py

## on a CUDA machine with the project venv: the SD-1.5-scale table (train, infer, extract); --learn: the learning check
bench-gpu: setup
	$(BIN)/python benchmarks/gpu.py

## what the lent GPU machine (its own python3, no registry) needs carried: README "GPU benchmark"
gpu-carry: setup
	mkdir -p .whl && $(BIN)/python -m pip download --no-deps --only-binary=:all: -d .whl diffusers==$$($(BIN)/python -c "import diffusers; print(diffusers.__version__)")
	$(BIN)/python benchmarks/gpu.py --export-learn-data data/learn.npz
