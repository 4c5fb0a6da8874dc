# Offline Kubernetes checks for `make test`: kubernetes-validate, checkov and the prometheus-operator
# models live in their own virtualenv, so their dependencies never touch the project's .venv.
# Included by the top-level Makefile; rebuilt only when the pins change.
K8S_VENV := .venv-k8s
K8S_STAMP := $(K8S_VENV)/.installed
K8S_TOOL_PINS := k8s/requirements-tools.txt k8s/constraints-tools.txt

.PHONY: k8s-tools
k8s-tools: $(K8S_STAMP)

$(K8S_STAMP): $(K8S_TOOL_PINS) k8s/tools.mk
	test -x $(K8S_VENV)/bin/python || python3 -m venv $(K8S_VENV)
	$(K8S_VENV)/bin/python -m pip install -q pip==26.3
	$(K8S_VENV)/bin/python -m pip install -q -r k8s/requirements-tools.txt -c k8s/constraints-tools.txt
	touch $(K8S_STAMP)

TEST_DEPS += k8s-tools

# Prometheus server and promtool (Debian's `prometheus`; PyPI has neither): the observability tests
# start a real Prometheus against the local Triton and run `promtool test rules` on the alerts.
# Installed with apt-get when missing and running as root (CI, the development machines); anywhere
# else this stops with the one command to run. On a systemd host the package also enables its own
# prometheus.service on :9090; the tests never use it (they start theirs on a free port).
.PHONY: prometheus-tools
prometheus-tools:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; \
	else \
		echo "prometheus and promtool are missing. Install them with:  sudo apt-get install -y --no-install-recommends prometheus" >&2; \
		exit 1; \
	fi

TEST_DEPS += prometheus-tools
