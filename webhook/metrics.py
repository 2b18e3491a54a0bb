"""Prometheus metrics of the service, on a registry passed in (no globals).

Gauges are per analysis and version and hold the values of the newest closed
window, so a Flagger MetricTemplate or an Argo `prometheus` metric can use
them directly, e.g. `shadowgate_accuracy_ratio{analysis="digits",version="canary"}`.
When several runs of one analysis overlap, the newest window wins.

Units: seconds, ratios 0..1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from analyses.window import Window

# shadowgate_verdict: one number a threshold can read.
VERDICT_VALUES = {"pass": 1.0, "marginal": 0.5, "fail": 0.0, "nodata": -1.0}

# The judge's drift checks (analyses.checks): shadowgate_drift_score{kind=<name>}.
DRIFT_CHECKS = ("prediction_scores", "prediction_classes", "prediction_agreement", "input_drift")

_WEBHOOK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 8.0, 10.0)


def version_values(window: Window) -> dict[str, dict[str, float | None]]:
    """Per version ('stable', 'canary'): accuracy, p99 latency (s), error ratio and CTR of a window."""
    p = window.probes
    out: dict[str, dict[str, float | None]] = {}
    for version in ("stable", "canary"):
        traffic = getattr(window, version)
        pred = getattr(p, f"{version}_pred")
        ok = pred >= 0
        accuracy = float(np.mean(pred[ok] == p.labels[ok])) if ok.any() else None
        p99 = float(np.percentile(traffic.latencies_s, 99)) if traffic.latencies_s.size else None
        error_ratio = traffic.errors / traffic.requests if traffic.requests else None
        ctr = None
        if window.ctr is not None:
            clicks = getattr(window.ctr, f"{version}_clicks")
            shown = getattr(window.ctr, f"{version}_impressions")
            ctr = clicks / shown if shown > 0 else None
        out[version] = {"accuracy": accuracy, "latency_p99_s": p99, "error_ratio": error_ratio, "ctr": ctr}
    return out


class Metrics:
    """The collectors, registered on `registry` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        av = ["analysis", "version"]
        self.accuracy = Gauge("shadowgate_accuracy_ratio", "Golden-set accuracy of the newest window (0..1)",
                              av, registry=r)
        self.latency_p99 = Gauge("shadowgate_latency_p99_seconds", "P99 latency of the newest window (seconds)",
                                 av, registry=r)
        self.error_ratio = Gauge("shadowgate_error_ratio", "Failed requests / requests in the newest window",
                                 av, registry=r)
        self.ctr = Gauge("shadowgate_ctr_ratio", "Clicks / impressions in the newest window", av, registry=r)
        self.drift = Gauge("shadowgate_drift_score", "Drift check value of the newest window",
                           ["analysis", "kind"], registry=r)
        self.verdict = Gauge("shadowgate_verdict",
                             "Newest verdict: 1 pass, 0.5 marginal, 0 fail, -1 no data", ["analysis"], registry=r)
        self.score = Gauge("shadowgate_score", "Score of the newest verdict (0..1)", ["analysis"], registry=r)
        self.windows = Counter("shadowgate_windows", "Windows closed and judged", ["analysis", "outcome"],
                               registry=r)
        self.probes = Counter("shadowgate_probes", "Shadow probe requests by outcome (ok, error)",
                              ["analysis", "version", "outcome"], registry=r)
        self.load = Counter("shadowgate_load_requests", "Load requests by status (OK or the error code)",
                            ["analysis", "version", "code"], registry=r)
        self.webhook = Histogram("shadowgate_webhook_duration_seconds", "Webhook answer time (seconds)",
                                 ["caller", "hook", "status"], buckets=_WEBHOOK_BUCKETS, registry=r)
        self.sessions = Gauge("shadowgate_sessions_active", "Runs with load and probes running", registry=r)
        # The process itself (process_cpu_seconds_total, process_resident_memory_bytes,
        # process_open_fds, ...; python_info) and which build answers.
        import platform
        from importlib import metadata

        from prometheus_client import PlatformCollector, ProcessCollector

        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        try:
            build_version = metadata.version("shadowgate")
        except metadata.PackageNotFoundError:  # run from a source tree that was never installed
            build_version = "unknown"
        self.build_info = Gauge("shadowgate_build_info", "Always 1; labels name the running build",
                                ["version", "python"], registry=r)
        self.build_info.labels(build_version, platform.python_version()).set(1)

    def observe_call(self, caller: str, hook: str, status: int, seconds: float) -> None:
        """One webhook answer: `seconds` from request to response."""
        self.webhook.labels(caller, hook, str(status)).observe(seconds)

    def observe_window(self, analysis: str, window: Window, verdict: Any | None) -> None:
        """Publish a closed window's values and its verdict."""
        for version, values in version_values(window).items():
            for gauge, key in ((self.accuracy, "accuracy"), (self.latency_p99, "latency_p99_s"),
                               (self.error_ratio, "error_ratio"), (self.ctr, "ctr")):
                v = values[key]
                if v is not None and math.isfinite(v):
                    gauge.labels(analysis, version).set(v)
            traffic = getattr(window, version)
            ok = traffic.requests - traffic.errors
            if ok:
                self.load.labels(analysis, version, "OK").inc(ok)
            for code, n in traffic.errors_by_code.items():
                if n:
                    self.load.labels(analysis, version, str(code)).inc(n)
            pred = getattr(window.probes, f"{version}_pred")
            n_ok = int(np.count_nonzero(pred >= 0))
            if n_ok:
                self.probes.labels(analysis, version, "ok").inc(n_ok)
            if pred.size - n_ok:
                self.probes.labels(analysis, version, "error").inc(pred.size - n_ok)
        if verdict is None:
            return
        self.verdict.labels(analysis).set(VERDICT_VALUES.get(verdict.outcome, -1.0))
        if verdict.score is not None and math.isfinite(verdict.score):
            self.score.labels(analysis).set(verdict.score)
        self.windows.labels(analysis, verdict.outcome).inc()
        for check in verdict.checks:
            if check.name not in DRIFT_CHECKS:
                continue
            value = check.canary if check.canary is not None else check.difference
            if value is not None and math.isfinite(value):
                self.drift.labels(analysis, check.name).set(float(value))
