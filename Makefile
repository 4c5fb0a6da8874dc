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

.PHONY: venv demo test test-unit serve export loadtest sweep loadtest-gate bench bench-twin bench-optimize bench-loadgen perf-analyzer bench-metrics export-onnx serve-onnx lint clean bench-cpu serve-tf

venv: $(STAMP)

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==26.3
	$(PY) -m pip install -q -e ".[all]"
	touch $(STAMP)

-include k8s/tools.mk
-include k8s/monitoring-tools.mk

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

SERVE_ARGS ?=
# Serves what is exported; exports first when the repository holds no version yet.
serve: venv
	@ls -d $(REPO)/$(MODEL)/[0-9]* >/dev/null 2>&1 || $(MAKE) --no-print-directory export
	$(PY) -m serve --repository $(REPO) --exit-with-parent $(SERVE_ARGS)

.PHONY: reload soak

# The running local server loads the newest exported version (then its uint8 ensemble): no restart.
reload: venv
	$(PY) -m serve reload --model $(MODEL)

# Sustained load near the knee for SOAK_DURATION: per-minute requests, failures, p50/p99 and RSS.
SOAK_DURATION ?= 10m
SOAK_ARGS ?=
soak: venv
	@ls -d $(REPO)/$(MODEL)/[0-9]* >/dev/null 2>&1 || $(MAKE) --no-print-directory export
	$(PY) -m bench.soak --repository $(REPO) --model $(MODEL) --duration $(SOAK_DURATION) $(SOAK_ARGS)

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

# The local server on the ONNX model instead of the OpenVINO IR (about TensorFlow's speed on CPU;
# for checking the ONNX model through a real Triton).
serve-onnx: venv
	$(PY) -m serve --repository $(REPO) --config-name local_onnx

# Faithful twin: build/export cost, latency in-process vs through the local Triton server.
bench-twin: venv
	$(PY) -m bench.twin_bench

# CPU: TensorFlow vs onnxruntime (batch 1, 8) and conversion time on the faithful twin.
bench-optimize: venv
	$(PY) bench/optimize_bench.py --source twin:pnasnet_large

# Triton's C++ load generator, for bench-loadgen only: perf_analyzer 2.51 from the tritonclient
# 2.51.0 manylinux1 wheel (later wheels need a newer glibc or ship no binary). Its two shared
# libraries come with nvidia-pytriton under hashed names; they are linked under the plain ones.
PERF_DIR := build/perf_analyzer
PERF_ANALYZER := $(PERF_DIR)/bin/perf_analyzer
perf-analyzer: $(PERF_ANALYZER)
$(PERF_ANALYZER): | venv
	mkdir -p $(PERF_DIR)/bin $(PERF_DIR)/lib
	$(PY) -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
		--python-version 3.11 tritonclient==2.51.0 -d $(PERF_DIR)
	$(PY) -c "import zipfile, sys; z = zipfile.ZipFile(sys.argv[1]); \
		open(sys.argv[2], 'wb').write(z.read('tritonclient-2.51.0.data/data/bin/perf_analyzer'))" \
		$(PERF_DIR)/tritonclient-2.51.0-py3-none-manylinux1_x86_64.whl $@.tmp
	libs=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/nvidia_pytriton.libs; \
		test -d $$libs && ln -sf $$libs/libb64-*.so.0d $(PERF_DIR)/lib/libb64.so.0d && \
		ln -sf $$libs/libcudart-*.so.12* $(PERF_DIR)/lib/libcudart.so.12
	chmod +x $@.tmp && mv $@.tmp $@

# Locust's raw user against perf_analyzer at 8 and 32 concurrent requests, on a local tiny twin.
LOADGEN_ARGS ?=
bench-loadgen: venv $(PERF_ANALYZER)
	$(PY) -m bench.loadgen_bench --concurrency 8,32 $(LOADGEN_ARGS)

# Triton's latency summaries (summary_latencies=true): req/s and p95 with and without, same load.
bench-metrics: venv
	$(PY) -m bench.metrics_cost_bench

# CPU serving: TensorFlow vs OpenVINO f32/bf16 vs onnxruntime in process (batch 1, 8), then the local
# Triton end to end on the TensorFlow and OpenVINO configs with the load test (faithful twin).
bench-cpu: venv
	$(PY) bench/optimize_bench.py --source twin:pnasnet_large --rounds 3 --json reports/bench-cpu.json

# The local server on TensorFlow instead of the default OpenVINO IR.
serve-tf: venv
	@ls -d $(REPO)/$(MODEL)/[0-9]* >/dev/null 2>&1 || $(MAKE) --no-print-directory export
	$(PY) -m serve --repository $(REPO) --config-name local_tf

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf build .pytest_cache
