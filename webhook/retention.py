"""Retention: the store stops growing, and its size is on /metrics.

A background thread, started by the app (create_app) and stopped with it:

- every `server.prune_interval_s`, runs finished more than
  `server.retention_days` ago are deleted with their windows, checks and
  timeline (and runs nobody touched for that long: abandoned), and the raw
  window data of runs finished more than `server.compact_after_days` ago is
  dropped (verdicts and checks stay);
- every minute, the store's size and row counts are read for /metrics.

The metrics are served from the last reading, so a scrape never waits on
the database: `shadowgate_store_bytes`, `shadowgate_store_free_bytes`,
`shadowgate_store_raw_bytes`, `shadowgate_store_rows{table}`,
`shadowgate_store_pruned_runs_total`, `shadowgate_store_compacted_windows_total`,
`shadowgate_store_last_prune_timestamp_seconds`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

DAY_S = 86400.0
STATS_INTERVAL_S = 60.0


class StoreCollector(Collector):
    """Exports the newest store reading (held by the Pruner) at scrape time, without touching SQLite."""

    def __init__(self, reading: Callable[[], dict[str, Any] | None]) -> None:
        self._reading = reading

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._reading()
        if not stats:
            return
        yield GaugeMetricFamily("shadowgate_store_bytes", "Size of the run store on disk (database and WAL, bytes)",
                                value=stats["bytes"])
        yield GaugeMetricFamily("shadowgate_store_free_bytes", "Free pages inside the store that SQLite reuses (bytes)",
                                value=stats["free_bytes"])
        yield GaugeMetricFamily("shadowgate_store_raw_bytes", "Raw window data (samples, probe pairs) kept (bytes)",
                                value=stats["raw_bytes"])
        rows = GaugeMetricFamily("shadowgate_store_rows", "Rows in the run store per table", labels=["table"])
        for table, n in sorted(stats["rows"].items()):
            rows.add_metric([table], n)
        yield rows


class Pruner:
    """Prunes and compacts `store` on a timer in a daemon thread; `run_once()` does one pass now.

    retention_days: finished runs older than this are deleted (None: kept).
    compact_after_days: raw data of runs finished longer ago is dropped.
    interval_s: seconds between passes; the first pass runs at start.
    """

    def __init__(self, store: Any, registry: CollectorRegistry | None, *, retention_days: float | None,
                 compact_after_days: float, interval_s: float, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.retention_days = retention_days
        self.compact_after_days = compact_after_days
        self.interval_s = interval_s
        self.clock = clock
        self.last_stats: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.supported = all(hasattr(store, m) for m in ("prune", "compact", "stats"))
        self._registry = registry
        if registry is not None:
            self.pruned = Counter("shadowgate_store_pruned_runs", "Runs deleted by retention", registry=registry)
            self.compacted = Counter("shadowgate_store_compacted_windows",
                                     "Windows whose raw data retention dropped", registry=registry)
            self.last_prune = Gauge("shadowgate_store_last_prune_timestamp_seconds",
                                    "When retention last finished a pass (unix seconds)", registry=registry)
            registry.register(StoreCollector(lambda: self.last_stats))

    def run_once(self, now: float | None = None) -> dict[str, Any]:
        """One pass: prune, compact, read stats. Returns {"pruned": {table: rows}, "compacted": n, "stats": ...}."""
        now = self.clock() if now is None else now
        pruned: dict[str, int] = {}
        if self.retention_days is not None:
            pruned = self.store.prune(now - self.retention_days * DAY_S)
        compacted = self.store.compact(now - self.compact_after_days * DAY_S)
        stats = self.refresh()
        if self._registry is not None:
            self.pruned.inc(pruned.get("runs", 0))
            self.compacted.inc(compacted)
            self.last_prune.set(now)
        if pruned.get("runs") or compacted:
            log.info("retention: %d runs deleted (%s), %d windows compacted; store %.1f MB",
                     pruned.get("runs", 0), ", ".join(f"{k} {v}" for k, v in pruned.items() if k != "runs"),
                     compacted, stats["bytes"] / 1e6)
        return {"pruned": pruned, "compacted": compacted, "stats": stats}

    def refresh(self) -> dict[str, Any]:
        """Read the store's size and row counts for /metrics."""
        self.last_stats = self.store.stats()
        return self.last_stats

    def start(self) -> None:
        if not self.supported or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        next_prune = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_prune:
                    self.run_once()
                    next_prune = time.monotonic() + self.interval_s
                else:
                    self.refresh()
            except Exception:
                if self._stop.is_set():
                    return  # the store closed under us while stopping
                log.exception("retention pass failed")
            self._stop.wait(min(STATS_INTERVAL_S, max(0.01, next_prune - time.monotonic())))
