"""Fixtures shared by every suite: the demo models and one running stand-in.

- `demo_assets` (session): demo SavedModels, golden set and models.config,
  built once into the repo's `.cache/` and reused by later runs.
- `modelserver` (session): a stand-in TF Serving serving the demo config
  (model "digits", versions 1 and 2, labels stable=1 and canary=2), without
  faults. Tests must not change its faults: start an own server with
  `tests.servers.start_modelserver` for that.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers import start_modelserver

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".cache"


@pytest.fixture(scope="session")
def demo_assets():
    from demo.models import build_demo_assets

    return build_demo_assets(CACHE_DIR)


@pytest.fixture(scope="session")
def modelserver(demo_assets, tmp_path_factory):
    server = start_modelserver(tmp_path_factory.mktemp("modelserver"),
                               model_config=demo_assets.model_config)
    try:
        yield server
    finally:
        server.stop()
