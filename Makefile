# Two entry points for people (see README): `make suite` and `make test`.
# Both create .venv on first use; the stamp file makes a second call skip the install.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.seqprobe-installed
# The CPU build of torch 2.13.0 installs from this machine's disk; any other pin would
# pull a multi-GB CUDA build, so it is installed first and pip keeps it.
TORCH_PIN ?= torch==2.13.0
MODEL ?= smollm2-135m
ARGS ?=

.PHONY: suite test bench lint install clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

suite: $(STAMP)
	$(BIN)/pytest cases/ --model $(MODEL) $(ARGS)

test: $(STAMP)
	$(BIN)/pytest tests/ $(ARGS)

bench: $(STAMP)
	$(BIN)/seqprobe bench --model $(MODEL) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check seqprobe tests conftest.py
	$(BIN)/ruff format --check seqprobe tests conftest.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
