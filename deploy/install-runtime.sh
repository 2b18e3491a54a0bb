#!/bin/sh
# Installs Shadowgate's runtime (no TensorFlow) with the given Python:
#   deploy/install-runtime.sh PYTHON [SOURCE_DIR]
# EDITABLE=1 installs the project itself in editable mode (the tests' runtime
# venv); the image installs it as a normal package.
# The Dockerfile and `make runtime-venv` both run this, so the image and the
# runtime that the tests measure are the same set of wheels.
set -eu
PY=${1:?usage: install-runtime.sh PYTHON [SOURCE_DIR]}
SRC=${2:-.}
"$PY" -m pip install -q -r "$SRC/requirements-runtime.txt"
# Order matters: tensorflow-protobuf ships an old tensorflow_serving/ too;
# tensorflow-serving-api, installed after it, puts the official stubs back.
"$PY" -m pip install -q --no-deps -r "$SRC/requirements-runtime-nodeps.txt"
"$PY" -m pip install -q --no-deps --force-reinstall -r "$SRC/requirements-nodeps.txt"
if [ "${EDITABLE:-0}" = 1 ]; then
  "$PY" -m pip install -q --no-deps --no-build-isolation -e "$SRC"
else
  "$PY" -m pip install -q --no-deps --no-build-isolation "$SRC"
fi
