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

.PHONY: setup demo ablations test test-deps test-fast lint lock bench-extract bench-model bench-paper bench-infer bench-train bench-caption bench-specialists bench-heads bench-latents bench-overhead bench-gpu gpu-carry gpu-rehearse

## setup: create .venv if missing and install the pinned lock + both packages (no-op when nothing changed)
setup: $(STAMP)

$(STAMP): requirements.lock $(addsuffix /pyproject.toml,$(PKGS))
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_ABS)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -qq --disable-pip-version-check --no-deps $(INSIGHTFACE)
	$(BIN)/python -m pip install -qq --disable-pip-version-check --no-deps --no-build-isolation $(addprefix -e ,$(PKGS))
	@touch $@

## demo: the main job, every stage of the embedded default profile up to the registry and the example grids;
## it ends with the wall time of each stage DVC ran (pipelines/stage_clock.py)
demo: setup
	start=$$(date +%s); $(BIN)/python -m dvc repro register examples; status=$$?; \
	$(BIN)/python pipelines/stage_clock.py --since $$start; exit $$status

## ablations: paper Table 3 in miniature (one generalist per row, same budget): metrics/ablations.{json,md,csv}
ablations: setup
	start=$$(date +%s); $(BIN)/python -m dvc repro ablations; status=$$?; \
	$(BIN)/python pipelines/stage_clock.py --since $$start; exit $$status

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

## the embedded backbone's attention head count vs the pretrain and FaceX step times, side by side (needs data/backbone)
bench-heads: setup
	$(BIN)/python benchmarks/attention_heads.py

## the latent cache (train.latent_cache_mb) off vs on in the generalist stage as the demo runs it
bench-latents: setup
	$(BIN)/python benchmarks/latent_cache.py

## a training stage's wall time outside its steps: imports, Ray's and Ray Train's start, wind-down (needs data/models)
bench-overhead: setup
	$(BIN)/python benchmarks/stage_overhead.py

## on a CUDA machine with the project venv: the SD-1.5-scale table (train, infer, extract); --learn: the learning check
bench-gpu: setup
	$(BIN)/python benchmarks/gpu.py

## what the lent GPU machine (its own python3, no registry) needs carried: README "GPU benchmark"
gpu-carry: setup
	mkdir -p .whl && $(BIN)/python -m pip download --no-deps --only-binary=:all: -d .whl diffusers==$$($(BIN)/python -c "import diffusers; print(diffusers.__version__)")
	$(BIN)/python benchmarks/gpu.py --export-learn-data data/learn.npz

## the GPU machine's own packages (the versions its KINDS.md page lists: transformers 5.17, huggingface-hub 1.33,
## OpenCV 5.0; torch is the project's) in a venv of their own, with the carried diffusers wheel on PYTHONPATH as
## there: both prepared calls run at smoke shapes in the GPU's dtypes, so version skew and dtype bugs show here and
## not in the lent minutes (this found OpenCV 5's missing Haar cascades before the first GPU call)
GPU_REHEARSAL := $(abspath .work/gpu-rehearsal)
gpu-rehearse: gpu-carry
	@test -x $(GPU_REHEARSAL)/bin/python || $(PYTHON) -m venv $(GPU_REHEARSAL)
	$(GPU_REHEARSAL)/bin/python -m pip install -qq --disable-pip-version-check $$(grep -E '^torch==' requirements.lock) \
	  transformers==5.17.0 huggingface-hub==1.33.0 accelerate==1.15.0 torchmetrics==1.9.0 "opencv-python-headless==5.0.*" \
	  numpy scipy scikit-image pillow pyyaml safetensors requests regex filelock tqdm
	rm -rf $(GPU_REHEARSAL)/site && $(GPU_REHEARSAL)/bin/python -m pip install -qq --disable-pip-version-check --no-index \
	  --no-deps --target $(GPU_REHEARSAL)/site .whl/*.whl
	PYTHONPATH=$(GPU_REHEARSAL)/site OUT=$(GPU_REHEARSAL)/out $(GPU_REHEARSAL)/bin/python benchmarks/gpu.py --smoke --bf16
	PYTHONPATH=$(GPU_REHEARSAL)/site OUT=$(GPU_REHEARSAL)/out $(GPU_REHEARSAL)/bin/python benchmarks/gpu.py --smoke --bf16 --learn
