# Everything runs from a local virtual environment that these targets create.
# torch is installed first, pinned: `pip install torch==2.13.0` takes the CPU wheel (an unpinned torch
# pulls a multi-GB CUDA build).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install install-test system-deps demo test test-fast lint bench clean

# What the demo runs: compress with the OpenVINO target (the teacher's OpenVINO forms are among its baselines).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[openvino]"
	# quantize backend neural-compressor: onnx-neural-compressor pins numpy<2 (pandas 3 needs numpy 2) but runs
	# with numpy 2, so it goes in without its pins
	$(BIN)/pip install -q --no-deps onnx-neural-compressor==1.0 onnxruntime-extensions py-cpuinfo psutil prettytable wcwidth
	touch $@

# Tests, lint and benchmarks: every extra (PostgreSQL, dashboard, ExecuTorch) and the tools; kept out of the
# demo's minutes.
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## Main job on the embedded default: fine-tune the MiniLM teacher (cached), search SqueezeBERT students
## (convert -> distill -> int8 -> time), write the Pareto report to reports/quickstart/.
## --resume: a second `make demo` continues (or just re-reports) the same study.
demo: install
	$(BIN)/compress search recipes/quickstart.yaml --resume
	$(BIN)/compress report results/quickstart --out reports/quickstart

## Real components the tests use (a PostgreSQL server, headless Chromium): Debian packages, installed when missing.
system-deps:
	@bash .ci/system-deps

## The whole test suite (unit tests on tiny random models + integration tests on the embedded default,
## a real PostgreSQL server and a real browser).
test: install-test system-deps
	$(BIN)/python -m pytest -q

## Lint and types: ruff (rules and formatting) and mypy, as CI runs them.
lint: install-test
	$(BIN)/ruff check compress tests bench
	$(BIN)/ruff format --check compress tests bench
	$(BIN)/mypy

test-fast: install-test
	$(BIN)/python -m pytest -q -m "not integration"

## Benchmarks: tables on stdout, JSON in results/bench/ (distill first: speed uses its student).
bench: bench-distill bench-speed bench-prune bench-frontier bench-targets bench-tasks

## bench-NAME runs bench/NAME.py (distill, speed, prune, frontier, targets, tasks, real); not in .PHONY, where make
## would skip the pattern rule. bench-real needs the public GLUE / CoNLL-2003 copies in real-data/ (README, Real
## data), so `make bench` leaves it out.
bench-%: install-test
	$(BIN)/python bench/$*.py

clean:
	rm -rf $(VENV) results/cache .pytest_cache
