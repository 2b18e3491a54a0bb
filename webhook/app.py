"""The Flask application factory: nothing happens at import time.

`create_app(settings)` wires the store, the metrics registry and the session
manager into one `Service` and registers a blueprint per caller: Flagger,
Argo Rollouts, and operations (health, metrics, the runs API). Tests build
their own app with a test configuration, a fresh registry and, when they
need it, their own measurement factory.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, g, request
from prometheus_client import CollectorRegistry

from . import errors
from .config import Settings
from .metrics import Metrics
from .retention import Pruner
from .sessions import MeasurementFactory, SessionManager
from .store import Store, open_store


@dataclass
class Service:
    """Everything a request handler needs."""

    settings: Settings
    store: Store
    metrics: Metrics
    sessions: SessionManager
    pruner: Any = None  # retention.Pruner: prunes and compacts the store in the background
    datasets: Any = None  # datasets.DataSetWatcher: re-reads golden and reference sets that change

    def close(self) -> None:
        if self.datasets is not None:
            self.datasets.stop()
        if self.pruner is not None:
            self.pruner.stop()
        self.sessions.shutdown()
        self.store.close()


def service() -> Service:
    """The Service of the current app."""
    return current_app.extensions["shadowgate"]


def arrived() -> float:
    """When the current request began to arrive (time.perf_counter(), seconds).

    The HTTP front (webhook/front.py) records the first byte; with another
    server (Flask's dev server, the test client) it is when the app got it.
    """
    return g.get("started") or time.perf_counter()


def time_left(budget_s: float) -> float:
    """Seconds left of a `budget_s` deadline that counts from the request's arrival (>= 0)."""
    return max(0.0, budget_s - (time.perf_counter() - arrived()))


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None, store: Store | None = None,
               measurement_factory: MeasurementFactory | None = None) -> Flask:
    """Build the app. `registry` defaults to a fresh one; `store` to the configured one (`server.store`: a
    SQLite file, or a postgresql:// URL shared with other replicas)."""
    from . import argo, flagger, ops, reports

    app = Flask("shadowgate")
    # "//flagger/rollout" is a 404 in JSON, not an HTML redirect to "/flagger/rollout".
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_body_bytes
    app.json.compact = True  # Flagger shows the body in its events: keep it on one line
    app.json.sort_keys = False
    metrics = Metrics(registry)
    store = store if store is not None else open_store(settings.store_path)
    svc = Service(settings=settings, store=store, metrics=metrics,
                  sessions=SessionManager(settings, store, metrics, measurement_factory))
    app.extensions["shadowgate"] = svc
    srv = settings.server
    svc.pruner = Pruner(store, metrics.registry, retention_days=srv.retention_days,
                        compact_after_days=srv.compact_after_days, interval_s=srv.prune_interval_s,
                        keep_raw_windows=srv.keep_raw_windows)
    svc.pruner.start()
    from .datasets import DataSetWatcher

    # Owned by the service and stopped with it (only sets with `reload_s` are watched).
    svc.datasets = DataSetWatcher(settings).start()

    errors.register(app)
    app.register_blueprint(flagger.bp)
    app.register_blueprint(argo.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(reports.bp)

    @app.before_request
    def _start_timer() -> None:
        # From the first byte when the front says so: queueing counts against deadlines.
        g.started = request.environ.get("shadowgate.arrived") or time.perf_counter()

    @app.after_request
    def _observe(resp):
        caller = request.blueprint
        if caller in ("flagger", "argo") and "started" in g:
            hook = g.get("hook_label", "unknown")
            metrics.observe_call(caller, hook, resp.status_code, time.perf_counter() - g.started)
        if 300 <= resp.status_code < 400 and resp.mimetype == "text/html":
            # Werkzeug's routing redirects come as HTML: every answer is JSON.
            resp.set_data(json.dumps({"redirect": resp.headers.get("Location")}))
            resp.mimetype = "application/json"
        if request.method == "OPTIONS" and not resp.get_data():
            # Werkzeug's automatic OPTIONS answer is empty: every answer is JSON.
            resp.set_data(json.dumps({"allow": sorted(resp.allow)}))
            resp.mimetype = "application/json"
        return resp

    return app
