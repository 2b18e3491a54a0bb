# The two commands of the README: `make demo` and `make test`.
# Both create .venv and install what is needed; a second run is quick.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SYSSTAMP := .cache/.system-deps-stamp

.PHONY: demo test venv system-deps bench clean

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

# Debian packages the tests use: a real Prometheus server and `hey`.
system-deps: $(SYSSTAMP)

$(SYSSTAMP):
	@mkdir -p .cache
	@if ! command -v prometheus >/dev/null || ! command -v hey >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus hey >/dev/null; \
	fi
	touch $(SYSSTAMP)

test: venv system-deps
	$(PY) -m pytest

demo: venv
	$(PY) -m demo

bench: venv system-deps
	$(PY) -m bench $(BENCH)

clean:
	rm -rf $(VENV) .cache
