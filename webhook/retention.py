"""Retention: the store stops growing, and its size is on /metrics.

What goes when (bench/store_footprint.py measures what stays; README "Retention"):

- raw window data (samples, probe pairs: the bulk of a window) of a run
  that ended (succeeded/failed): at once when `server.compact_after_days`
  is 0, the moment post-rollout finishes the run (the store compacts it:
  SQLiteStore.compact_run), else that many days later. Each window keeps
  its verdict and a small summary of its raw data, so the run's report
  and the runs API read the same as before;
- raw window data of a run still going: all but its newest
  `keep_raw_windows` windows (a restart resumes from the stored gate
  state, never from raw windows); once the run was untouched for
  `STALE_AFTER_DAYS` (or compact_after_days, if longer: idle, or an Argo
  run, which never gets a post-rollout), it is compacted as a finished run
  is, its gate state kept (SQLiteStore.compact_stale);
- whole runs: finished more than `server.retention_days` ago, with their
  windows, checks and timeline (and runs nobody touched for that long:
  abandoned).

A background thread, started by the app (create_app) and stopped with it,
prunes and compacts every `server.prune_interval_s` (catching what came
after a run was compacted: a last window, the last hook calls), and reads
the store's size and row counts every minute for /metrics.

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
# Raw windows a live run keeps: the report reads the newest one's samples (histograms) and evidently's
# drift report the newest 50 (reporting/drift.py MAX_WINDOWS); older windows are read from their summaries.
KEEP_RAW_WINDOWS = 50
# A run neither finished nor updated for this long (idle, or abandoned by its controller) loses its raw data.
STALE_AFTER_DAYS = 1.0


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
    compact_after_days: raw data of runs finished longer ago is dropped; 0: when the run finishes.
    keep_raw_windows: raw windows a live run keeps (its newest; None: all).
    interval_s: seconds between passes; the first pass runs at start.

    The store's own part (compaction at a run's end, the live bound) is set
    here, from the same settings (SQLiteStore.set_raw_policy).
    """

    def __init__(self, store: Any, registry: CollectorRegistry | None, *, retention_days: float | None,
                 compact_after_days: float, interval_s: float, keep_raw_windows: int | None = KEEP_RAW_WINDOWS,
                 stale_after_days: float = STALE_AFTER_DAYS, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.retention_days = retention_days
        self.compact_after_days = compact_after_days
        self.keep_raw_windows = keep_raw_windows
        self.stale_after_days = max(stale_after_days, compact_after_days)
        self.interval_s = interval_s
        self.clock = clock
        self.last_stats: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.supported = all(hasattr(store, m) for m in ("prune", "compact", "stats"))
        if hasattr(store, "set_raw_policy"):
            store.set_raw_policy(compact_on_finish=compact_after_days == 0, keep_raw_windows=keep_raw_windows)
        self._registry = registry
        if registry is not None:
            self.pruned = Counter("shadowgate_store_pruned_runs", "Runs deleted by retention", registry=registry)
            self.compacted = Counter("shadowgate_store_compacted_windows",
                                     "Windows whose raw data was dropped (at a run's end, by a live run's "
                                     "bound or by a retention pass)", registry=registry)
            self._counted = 0
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
        if hasattr(self.store, "compact_stale"):
            compacted += self.store.compact_stale(now - self.stale_after_days * DAY_S)
        stats = self.refresh()
        if self._registry is not None:
            self.pruned.inc(pruned.get("runs", 0))
            self.last_prune.set(now)
        if pruned.get("runs") or compacted:
            log.info("retention: %d runs deleted (%s), %d windows compacted; store %.1f MB",
                     pruned.get("runs", 0), ", ".join(f"{k} {v}" for k, v in pruned.items() if k != "runs"),
                     compacted, stats["bytes"] / 1e6)
        return {"pruned": pruned, "compacted": compacted, "stats": stats}

    def refresh(self) -> dict[str, Any]:
        """Read the store's size and row counts for /metrics."""
        self.last_stats = self.store.stats()
        if self._registry is not None:
            total = getattr(self.store, "windows_compacted", None)
            if isinstance(total, int) and total > self._counted:  # the store counts every window it compacts
                self.compacted.inc(total - self._counted)
                self._counted = total
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
