# Every target sets up .venv on first use, so a fresh clone needs nothing else.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench calibrate moe-tiles mutation clean gpu-bundle

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	@mkdir -p build
	$(BIN)/gimletc compile examples/coding_agent.py --cluster examples/clusters/mixed_rack.yaml --stack vllm -o build/plan.json --trace build/trace.json

test: $(STAMP)
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	$(BIN)/lint-imports --no-logo
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_estimate.py
	$(BIN)/python benchmarks/bench_compile.py
	$(BIN)/python benchmarks/bench_serving.py

# Plans with cuda binaries and the wheels a GPU machine without IREE's compiler needs (docs/runtime.md).
gpu-bundle: $(STAMP)
	$(BIN)/python benchmarks/gpu_bundle.py build/gpu-bundle

# The reference stack from the shared H200 rows, then every engine stack from aiconfigurator-core's
# kernel tables (vllm first: a table an engine lacks borrows that chip's vllm fit); each --write
# rewrites its profile and the tables in docs/cost-model.md.
ENGINE_SYSTEMS := a100_sxm h100_sxm h200_sxm b200_sxm
calibrate: $(STAMP)
	$(BIN)/gimletc calibrate src/gimletc/cost/data/h200_llama_calibration.json --write
	@for s in $(ENGINE_SYSTEMS); do for f in vllm sglang trtllm; do \
		$(BIN)/gimletc calibrate --from-aiconfigurator $$s --framework $$f --write || exit 1; done; done

# The fused-MoE tiles the engines ship (src/gimletc/cost/data/fused_moe_tiles.json), read from their wheels at
# the versions aiconfigurator-core measured (downloaded from PyPI, about 600 MB, into build/wheels); then
# `make calibrate`.
MOE_WHEELS := vllm==0.14.0 vllm==0.24.0 sglang==0.5.10 sglang==0.5.14
moe-tiles: $(STAMP)
	@mkdir -p build/wheels
	@for w in $(MOE_WHEELS); do $(BIN)/python -m pip download -q --no-deps $$w -d build/wheels || exit 1; done
	$(BIN)/python -c 'import sys; from gimletc.cost.moe_tiles import main; sys.exit(main(sys.argv[1:]))' --write \
		build/wheels/vllm-0.14.0-*.whl build/wheels/vllm-0.24.0-*.whl build/wheels/sglang-0.5.10-*.whl \
		build/wheels/sglang-0.5.14-*.whl

# Mutation testing (not CI): the `mutation` extra, then mutmut over the scope in pyproject.toml.
$(VENV)/.mutation: pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,mutation]'
	@touch $@

mutation: $(VENV)/.mutation
	$(BIN)/python tests/mutation.py

clean:
	rm -rf $(VENV) build mutants src/*.egg-info
