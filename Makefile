# The two commands of README.md. Both create the virtual environment on first use:
# torch 2.13.0 (CPU) goes in first, so that the project's torch range is already met and
# pip does not pull a multi-GB CUDA build; then the project with its dev extra.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= conf/beta15.yaml
PYTEST_ARGS ?=

.PHONY: venv run test lint prepare clean-runs

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

## run: the main job on the embedded default (builds missing artifacts first)
run: venv
	$(PY) -m suite fit --config $(CONFIG)

## test: the whole test suite (about 10 minutes on 2 CPU cores)
test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check suite lightning_modules datamodules tests benchmarks

clean-runs:
	rm -rf outputs multirun checkpoints
