"""Fixtures for the deployment tests: the runtime venv (no TensorFlow) and the chart's tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME_VENV = REPO / ".cache" / "runtime-venv"


@pytest.fixture(scope="session")
def runtime_python() -> Path:
    """The runtime venv's python, built by `make runtime-venv` (the Dockerfile's install script)."""
    if not (RUNTIME_VENV / ".installed-stamp").exists():
        subprocess.run(["make", "-s", "runtime-venv"], cwd=REPO, check=True, timeout=900)
    return RUNTIME_VENV / "bin" / "python"
