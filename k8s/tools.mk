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
