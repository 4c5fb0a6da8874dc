# Every target sets up what it needs: a fresh clone runs `make demo` or `make test` directly.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REPO ?= model_repository
MODEL ?= pnasnet_large
SOURCE ?= https://tfhub.dev/google/imagenet/pnasnet_large/feature_vector/5
FALLBACK_TWIN ?= tiny
USERS ?= 8
DURATION ?= 20s

.PHONY: venv demo test serve export loadtest bench lint clean

venv: $(STAMP)

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all]"
	touch $(STAMP)

-include k8s/tools.mk

demo: venv
	$(PY) -m demo --repository $(REPO) --model $(MODEL) --fallback-twin $(FALLBACK_TWIN)

test: venv $(TEST_DEPS)
	$(PY) -m pytest -q

export: venv
	$(PY) -m export --source $(SOURCE) --repository $(REPO) --model $(MODEL) --keep 2 \
		--fallback-twin $(FALLBACK_TWIN)

# Serves what is exported; exports first when the repository holds no version yet.
serve: venv
	@ls -d $(REPO)/$(MODEL)/[0-9]* >/dev/null 2>&1 || $(MAKE) --no-print-directory export
	$(PY) -m serve --repository $(REPO)

# Against a running server (`make serve` in another terminal, or TRITON_GRPC_URL).
loadtest: venv
	$(PY) -m loadtest --users $(USERS) --duration $(DURATION)

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf build .pytest_cache
