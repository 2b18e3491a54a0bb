"""A small simulated user population: the CTR the analysis reads from Prometheus.

Each visit shows a page of `page_size` digits, predicted by the version the
router sends the visit to (the canary gets `weight` percent of visits, as
Istio's weights split real traffic; stable gets the rest). One REST predict
per page, as a web front end would call TF Serving (`POST
/v1/models/digits/labels/<label>:predict`, a batch of `page_size` rows, each
drawn from the golden set, so the truth is known; plain HTTP, so the demo
process needs no TensorFlow). Each item is an impression; the user clicks it with
probability `p_right` when the prediction is right and `p_wrong` when it is
wrong, so a less accurate model earns fewer clicks per impression. A page
that fails (error or deadline) shows nothing: no impressions.

Exported on a prometheus_client HTTP server (its own registry) as

    impressions_total{app="digits", version="stable"|"canary"}
    clicks_total{app="digits", version="stable"|"canary"}
    user_page_errors_total{app="digits", version=...}

which Prometheus scrapes and the analysis' `ctr:` queries read, as in
examples/analyses.yaml. Visits leave on a fixed timetable from a small
thread pool; a visit that cannot start because every worker is busy is
skipped (counted in `skipped`), so a slow canary never makes the loop lag.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

APP = "digits"


@dataclass(frozen=True)
class ClickModel:
    """How users click: probabilities per impression (0..1)."""

    p_right: float = 0.30
    p_wrong: float = 0.03

    def clicks(self, right: np.ndarray, rng: np.random.Generator) -> int:
        """Clicks on one page; `right` is a boolean array, one entry per item shown."""
        p = np.where(right, self.p_right, self.p_wrong)
        return int(np.count_nonzero(rng.random(p.shape) < p))

    def expected_ctr(self, accuracy: float) -> float:
        """Clicks per impression for a model right on `accuracy` (0..1) of the items."""
        return accuracy * self.p_right + (1.0 - accuracy) * self.p_wrong


class Users:
    """Visits at `rate` pages per second, routed by `weight`; counters on an HTTP port.

    stable / canary: REST base URLs (http://host:port) of the two versions;
    the canary is called only while `weight` > 0. `set_weight(percent)` is the
    router (Flagger's and Argo's SetRoutes).
    """

    def __init__(self, stable: str, canary: str, inputs: np.ndarray, labels: np.ndarray, *, port: int,
                 rate: float = 20.0, page_size: int = 20, clicks: ClickModel | None = None,
                 timeout_s: float = 2.0, seed: int = 1, workers: int = 4) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.urls = {v: f"{base.rstrip('/')}/v1/models/{APP}/labels/{v}:predict"
                     for v, base in (("stable", stable), ("canary", canary))}
        self.inputs, self.labels = inputs, labels
        self.port, self.rate, self.page_size, self.timeout_s = port, rate, page_size, timeout_s
        self.model = clicks or ClickModel()
        self.registry = CollectorRegistry()
        self.impressions = Counter("impressions", "items shown to users", ["app", "version"], registry=self.registry)
        self.clicks = Counter("clicks", "items users clicked", ["app", "version"], registry=self.registry)
        self.errors = Counter("user_page_errors", "pages that failed to load", ["app", "version"],
                              registry=self.registry)
        for v in ("stable", "canary"):  # every series exists from the first scrape
            self.impressions.labels(APP, v)
            self.clicks.labels(APP, v)
            self.errors.labels(APP, v)
        self.weight = 0
        self.skipped = 0
        self._totals = {v: [0, 0] for v in ("stable", "canary")}
        self._seed = seed
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="user")
        self._busy = threading.Semaphore(workers)
        self._clients: dict[str, object] = {}
        self._clients_lock = threading.Lock()
        self._local = threading.local()
        self._thread: threading.Thread | None = None
        self._server = None

    # ------------------------------------------------------------ control

    def set_weight(self, percent: int) -> None:
        """Share of visits routed to the canary, in percent (0..100)."""
        self.weight = max(0, min(100, int(percent)))

    def start(self) -> None:
        """Serve the counters and start visiting (returns at once)."""
        from prometheus_client import start_http_server

        self._server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self._thread = threading.Thread(target=self._timetable, name="users", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._clients_lock:
            for c in self._clients.values():
                c.close()
            self._clients.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def totals(self) -> dict[str, tuple[int, int]]:
        """version -> (impressions, clicks) so far."""
        with self._clients_lock:
            return {v: (n, k) for v, (n, k) in self._totals.items()}

    # ------------------------------------------------------------ visits

    def _timetable(self) -> None:
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += period
            version = "canary" if self._rng.random() * 100.0 < self.weight else "stable"
            if self._busy.acquire(blocking=False):
                try:
                    self._pool.submit(self._visit, version)
                except RuntimeError:  # shut down
                    self._busy.release()
                    return
            else:
                self.skipped += 1
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()  # fell behind: do not burst to catch up

    def _session(self):
        """One HTTP session (kept-alive connections) per worker thread."""
        import requests

        key = threading.get_ident()
        with self._clients_lock:
            c = self._clients.get(key)
            if c is None:
                c = self._clients[key] = requests.Session()
            return c

    def _predict(self, version: str, rows: np.ndarray) -> np.ndarray:
        """Predicted classes of `rows` from `version` (TF Serving's columnar REST format)."""
        r = self._session().post(self.urls[version], json={"inputs": {"x": rows.tolist()}}, timeout=self.timeout_s)
        r.raise_for_status()
        return np.asarray(r.json()["outputs"]["classes"]).reshape(-1)

    def _visit(self, version: str) -> None:
        try:
            rng = getattr(self._local, "rng", None)
            if rng is None:
                rng = self._local.rng = np.random.default_rng([self._seed, threading.get_ident() % 2**32])
            rows = rng.integers(0, len(self.labels), self.page_size)
            try:
                predicted = self._predict(version, self.inputs[rows])
            except Exception:  # the page did not load: nothing shown, nothing clicked
                self.errors.labels(APP, version).inc()
                return
            right = predicted == self.labels[rows]
            clicked = self.model.clicks(right, rng)
            self.impressions.labels(APP, version).inc(len(rows))
            self.clicks.labels(APP, version).inc(clicked)
            with self._clients_lock:
                self._totals[version][0] += len(rows)
                self._totals[version][1] += clicked
        finally:
            self._busy.release()
