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

# `make bench-scaling`: seqprobe's sweeps as the pairs (at length 10) and the prompt length (at 8
# pairs) grow on MODEL, then LARGE_MODEL's z sweep in a 6 GB budget; each prints a table and writes
# JSON under reports/. LARGE_MODEL, a 1.1B random-weight model in bfloat16, takes an hour or more on
# a 2-core CPU. BENCH_REFERENCE= (empty) also runs transformer_lens where its estimate is under 10 min.
SCALING_PAIRS ?= 4,8,16,32
SCALING_LENGTHS ?= 10,20,40
SCALING_SITES ?= z,resid_pre
LARGE_MODEL ?= random:tinyllama-1.1b
LARGE_PAIRS ?= 8
LARGE_LENGTH ?= 20
BENCH_REFERENCE ?= --no-reference

.PHONY: suite test bench bench-scaling suite-arithmetic lint install clean

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

bench-scaling: $(STAMP)
	$(BIN)/seqprobe bench --model $(MODEL) --pairs $(SCALING_PAIRS) --length 10 --sites $(SCALING_SITES) \
		$(BENCH_REFERENCE) --out reports/bench-scaling-pairs.json $(ARGS)
	$(BIN)/seqprobe bench --model $(MODEL) --pairs 8 --length $(SCALING_LENGTHS) --sites $(SCALING_SITES) \
		$(BENCH_REFERENCE) --out reports/bench-scaling-length.json $(ARGS)
	$(BIN)/seqprobe bench --model $(LARGE_MODEL) --pairs $(LARGE_PAIRS) --length $(LARGE_LENGTH) --sites z \
		--max-memory 6GB --no-reference --out reports/bench-scaling-large.json $(ARGS)

# `make suite-arithmetic`: the FLOPs of each runner's matrix products in `make suite`, this
# machine's matmul rate, and the seconds those products take at that rate beside the start-up.
suite-arithmetic: $(STAMP)
	$(BIN)/python tools/suite_arithmetic.py --model $(MODEL) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check seqprobe tests tools conftest.py
	$(BIN)/ruff format --check seqprobe tests tools conftest.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
