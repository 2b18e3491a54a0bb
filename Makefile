# The two commands of the README: `make demo` and `make test`.
# Both create .venv and install what is needed; a second run is quick.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SYSSTAMP := .cache/.system-deps-stamp

.PHONY: demo demo-deps test venv system-deps bench clean runtime-venv k8s-schemas

venv: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# tensorflow-serving-api pins the full `tensorflow` wheel; we run on
	# tensorflow-cpu, which provides the same modules (see README).
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Debian packages the tests use: a real Prometheus server, `hey`, Chromium
# (the report pages are loaded in it headless, driven by Playwright) and
# PostgreSQL (the replicas' shared store; tests/store start a throwaway cluster).
system-deps: $(SYSSTAMP)

$(SYSSTAMP): Makefile
	@mkdir -p .cache
	@if ! command -v prometheus >/dev/null || ! command -v hey >/dev/null || ! test -x /usr/bin/chromium \
	    || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus hey chromium postgresql >/dev/null; \
	fi
	touch $(SYSSTAMP)

# The runtime image's set of wheels (no TensorFlow) in a venv of its own,
# installed by the same script as the Dockerfile: tests/deploy measure it and
# start the service from it.
RUNTIME_VENV  := .cache/runtime-venv
RUNTIME_STAMP := $(RUNTIME_VENV)/.installed-stamp
runtime-venv: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): requirements-runtime.txt requirements-runtime-nodeps.txt requirements-nodeps.txt pyproject.toml deploy/install-runtime.sh
	rm -rf $(RUNTIME_VENV)
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/python -m pip install -q --upgrade pip
	EDITABLE=1 sh deploy/install-runtime.sh $(RUNTIME_VENV)/bin/python .
	touch $@

# Published schemas of the custom resources the chart and examples use (npm's
# @kubernetes-models: Argo Rollouts, Istio, prometheus-operator), for
# tests/deploy. Into .cache, never committed.
K8S_MODELS := .cache/k8s-models
K8S_STAMP  := $(K8S_MODELS)/.installed-stamp
k8s-schemas: $(K8S_STAMP)

$(K8S_STAMP): tests/deploy/crd/package.json
	mkdir -p $(K8S_MODELS)
	cp tests/deploy/crd/package.json $(K8S_MODELS)/package.json
	cd $(K8S_MODELS) && npm install --no-audit --no-fund --no-package-lock --loglevel=error
	touch $@

# Fast tests three at a time (pytest-xdist, one file per worker), then the slow
# end-to-end ones (several real servers each) two at a time. Both phases always
# run; the target fails if either does. `make test PYTEST_ARGS=-x` passes options on.
test: venv system-deps runtime-venv k8s-schemas
	@rc=0; \
	$(PY) -m pytest -m "not slow" -n 3 --dist loadfile $(PYTEST_ARGS) || rc=1; \
	$(PY) -m pytest -m slow -n 2 --dist loadfile --durations=15 $(PYTEST_ARGS) || rc=1; \
	exit $$rc

# The demo's one Debian package: a real Prometheus, its CTR source.
demo-deps:
	@if ! command -v prometheus >/dev/null && ! test -x /usr/bin/prometheus; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  echo "installing the Debian package prometheus (the demo's CTR source) ..."; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	fi

# `make demo DEMO_ARGS="--exit"`; `.venv/bin/shadowgate demo --help` lists the knobs.
# The service runs from the runtime venv, as in the image (no TensorFlow: it starts in a second).
demo: venv demo-deps runtime-venv
	$(PY) -m demo $(DEMO_ARGS)

bench: venv system-deps
	$(PY) -m bench $(BENCH)

clean:
	rm -rf $(VENV) .cache
