# Every target sets up what it needs: a fresh clone runs `make demo` or `make test` directly.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REPO ?= model_repository
MODEL ?= pnasnet_large
SOURCE ?= https://tfhub.dev/google/imagenet/pnasnet_large/feature_vector/5
FALLBACK_TWIN ?= pnasnet_large
USERS ?= 8
DURATION ?= 20s
LOADTEST_ARGS ?=
SWEEP_USERS ?= 1,2,4,8,16
STEP ?= 20s
MAX_P95_MS ?= 1000
MAX_ERROR_RATE ?= 0.001

.PHONY: venv demo test test-unit serve export loadtest sweep loadtest-gate bench bench-twin bench-optimize export-onnx serve-onnx lint clean

venv: $(STAMP)

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==26.3
	$(PY) -m pip install -q -e ".[all]"
	touch $(STAMP)

-include k8s/tools.mk

demo: venv
	$(PY) -m demo --repository $(REPO) --model $(MODEL)

test: venv $(TEST_DEPS)
	$(PY) -m pytest -q

# The client's logic on an in-memory server (client.testing): no TensorFlow, no tritonserver.
test-unit: venv
	$(PY) -m pytest -q tests/unit

export: venv
	$(PY) -m export --source $(SOURCE) --repository $(REPO) --model $(MODEL) --keep 2 \
		--fallback-twin $(FALLBACK_TWIN)

# Serves what is exported; exports first when the repository holds no version yet.
serve: venv
	@ls -d $(REPO)/$(MODEL)/[0-9]* >/dev/null 2>&1 || $(MAKE) --no-print-directory export
	$(PY) -m serve --repository $(REPO)

# Against a running server (`make serve` in another terminal, or TRITON_GRPC_URL).
loadtest: venv
	$(PY) -m loadtest --users $(USERS) --duration $(DURATION) $(LOADTEST_ARGS)

# Latency vs throughput over a series of user counts: table, PNG plot, knee.
sweep: venv
	$(PY) -m loadtest sweep --users $(SWEEP_USERS) --step-duration $(STEP) --out reports/sweep \
		$(LOADTEST_ARGS)

# A release gate: exits non-zero when the p95 or error-rate SLO is missed.
loadtest-gate: venv
	$(PY) -m loadtest --users $(USERS) --duration $(DURATION) --max-p95-ms $(MAX_P95_MS) \
		--max-error-rate $(MAX_ERROR_RATE) --fail-on-unreliable --out reports/gate $(LOADTEST_ARGS)

# Client: preprocessing vs naive and scaled decode, bytes per transport, embed_many throughput.
bench: venv
	$(PY) bench/client_bench.py

# <model>_onnx from the newest exported version (tf2onnx; parity checked in onnxruntime).
export-onnx: venv
	$(PY) -m export.onnx --repository $(REPO) --model $(MODEL)

# The local server on the ONNX model instead of the SavedModel (slower on CPU; for checking it).
serve-onnx: venv
	$(PY) -m serve --repository $(REPO) --config-name local_onnx

# Faithful twin: build/export cost, latency in-process vs through the local Triton server.
bench-twin: venv
	$(PY) -m bench.twin_bench

# CPU: TensorFlow vs onnxruntime (batch 1, 8) and conversion time on the faithful twin.
bench-optimize: venv
	$(PY) bench/optimize_bench.py --source twin:pnasnet_large

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf build .pytest_cache
