"""The Flask application factory: nothing happens at import time.

`create_app(settings)` wires the store, the metrics registry and the session
manager into one `Service` and registers a blueprint per caller: Flagger,
Argo Rollouts, and operations (health, metrics, the runs API). Tests build
their own app with a test configuration, a fresh registry and, when they
need it, their own measurement factory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import Flask, current_app, g, request
from prometheus_client import CollectorRegistry

from . import errors
from .config import Settings
from .metrics import Metrics
from .sessions import MeasurementFactory, SessionManager
from .store import SQLiteStore, Store


@dataclass
class Service:
    """Everything a request handler needs."""

    settings: Settings
    store: Store
    metrics: Metrics
    sessions: SessionManager

    def close(self) -> None:
        self.sessions.shutdown()
        self.store.close()


def service() -> Service:
    """The Service of the current app."""
    return current_app.extensions["shadowgate"]


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None, store: Store | None = None,
               measurement_factory: MeasurementFactory | None = None) -> Flask:
    """Build the app. `registry` defaults to a fresh one; `store` to SQLite at the configured path."""
    from . import argo, flagger, ops

    app = Flask("shadowgate")
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_body_bytes
    app.json.compact = True  # Flagger shows the body in its events: keep it on one line
    app.json.sort_keys = False
    metrics = Metrics(registry)
    store = store if store is not None else SQLiteStore(settings.store_path)
    svc = Service(settings=settings, store=store, metrics=metrics,
                  sessions=SessionManager(settings, store, metrics, measurement_factory))
    app.extensions["shadowgate"] = svc

    errors.register(app)
    app.register_blueprint(flagger.bp)
    app.register_blueprint(argo.bp)
    app.register_blueprint(ops.bp)

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _observe(resp):
        caller = request.blueprint
        if caller in ("flagger", "argo") and "started" in g:
            hook = g.get("hook_label", "unknown")
            metrics.observe_call(caller, hook, resp.status_code, time.perf_counter() - g.started)
        return resp

    return app
