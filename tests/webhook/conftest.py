"""Fixtures for the webhook tests: a test configuration and an app driven by scripted windows."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from tests.webhook.scripted import Factory
from webhook.app import create_app
from webhook.config import load_settings

TOKEN = "s3cret-token-for-tests"


def base_config(tmp_path) -> dict:
    """A valid configuration with two analyses; golden set written to tmp_path."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "golden.npz", inputs=rng.random((64, 8)).astype(np.float32),
             labels=rng.integers(0, 10, 64))
    np.savez(tmp_path / "reference.npz", inputs=rng.random((64, 8)).astype(np.float32))
    target = {"protocol": "tfserving-grpc", "address": "127.0.0.1:1", "model": "digits"}
    analysis = {
        "stable": {**target, "label": "stable"},
        "canary": {**target, "label": "canary"},
        "golden": "golden.npz",
        "checks": {"drift": {"enabled": False}},
        # Windows close only when a hook asks: tests decide when.
        "interval_s": 3600,
    }
    return {
        "server": {"store": str(tmp_path / "runs.db"), "interval_s": 3600, "max_body_bytes": 4096},
        "analyses": {"digits": copy.deepcopy(analysis), "podinfo": copy.deepcopy(analysis)},
    }


@pytest.fixture
def config_dict(tmp_path):
    return base_config(tmp_path)


@pytest.fixture
def make_app(tmp_path):
    apps = []

    def make(config: dict | None = None, factory: Factory | None = None, **factory_defaults):
        cfg = config if config is not None else base_config(tmp_path)
        settings = load_settings(cfg, tmp_path)
        factory = factory or Factory(**factory_defaults)
        app = create_app(settings, registry=CollectorRegistry(), measurement_factory=factory)
        app.testing = True
        app.factory = factory
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["shadowgate"].close()


def payload(name="digits", namespace="test", checksum="85d557f47b", phase="Progressing", **metadata):
    """Flagger's webhook payload."""
    body = {"name": name, "namespace": namespace, "phase": phase, "checksum": checksum}
    if metadata:
        body["metadata"] = metadata
    return body
