# Included by the top-level Makefile (beside tools.mk, whose edits rebuild .venv-k8s; this does not).
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
