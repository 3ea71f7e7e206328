# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# They install every extra (.[all,dev]): the suite and the demo exercise all of stoke.
# TORCH_SPEC picks the torch build: the default takes the CPU wheel; on a CUDA machine pass e.g.
#   make test TORCH_SPEC="torch==2.11.0"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.stoke-installed

.PHONY: demo test lint install peers clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stoke demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The peers benchmarks/tokens.py compares with, where they install here. --no-deps: litdata declares
# torchvision (which does not load against the CPU torch) and cloud clients; its token path needs neither.
peers: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps litdata==0.2.76 lightning-utilities==0.15.3

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
