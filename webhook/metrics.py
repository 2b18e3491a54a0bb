"""Prometheus metrics of the service, on a registry passed in (no globals).

Per-run series are labelled with the rollout (`namespace`, `name`: the
Canary or Rollout) beside `analysis` and `version`, hold the newest window's
values and the run's decision, and are removed when the run ends, so a new
rollout never reads the previous one's figures. A check without data in a
window publishes nothing for it. A Flagger MetricTemplate or an Argo
`prometheus` metric reads them directly, e.g.
`shadowgate_decision{namespace="test",name="podinfo"}` (1 pass, 0 continue,
-1 fail).

Units: seconds, ratios 0..1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from analyses.window import Window

# shadowgate_decision: one number a threshold can read.
DECISION_VALUES = {"pass": 1.0, "continue": 0.0, "fail": -1.0}

# The drift reports (analyses.checks): shadowgate_drift_score{kind=<name>}.
DRIFT_CHECKS = ("prediction_scores", "prediction_classes", "prediction_agreement", "input_drift")
RUN = ["analysis", "namespace", "name"]

_WEBHOOK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 8.0, 10.0)


def version_values(window: Window, report: Any) -> dict[str, dict[str, float | None]]:
    """Per version: accuracy, P99 latency (s, errors at the deadline), error ratio, CTR of a window.

    A figure the gate did not count in this window (too few samples, stable
    down, the golden burst) is None: it is not published.
    """
    from analyses.gate import with_errors

    checks = report.checks if report is not None else {}
    p = window.probes
    out: dict[str, dict[str, float | None]] = {}
    for version in ("stable", "canary"):
        traffic = getattr(window, version)
        pred = getattr(p, f"{version}_pred")
        ok = pred >= 0
        accuracy = float(np.mean(pred[ok] == p.labels[ok])) if ok.any() else None
        p99 = None
        if checks.get("latency", {}).get("measured"):
            lat = with_errors(traffic)
            p99 = float(np.quantile(lat, 0.99)) if lat.size else None
        n = traffic.requests + pred.size
        errors = traffic.errors + int(np.count_nonzero(~ok))
        error_ratio = errors / n if n else None
        ctr = None
        if window.ctr is not None and checks.get("ctr", {}).get("measured"):
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
        av = RUN + ["version"]
        self.accuracy = Gauge("shadowgate_accuracy_ratio", "Golden-set accuracy of the newest window (0..1)",
                              av, registry=r)
        self.latency_p99 = Gauge("shadowgate_latency_p99_seconds", "P99 latency of the newest window (seconds)",
                                 av, registry=r)
        self.error_ratio = Gauge("shadowgate_error_ratio", "Failed requests / requests in the newest window",
                                 av, registry=r)
        self.ctr = Gauge("shadowgate_ctr_ratio", "Clicks / impressions in the newest window", av, registry=r)
        self.drift = Gauge("shadowgate_drift_score", "Drift report value of the newest window (not gating)",
                           RUN + ["kind"], registry=r)
        self.decision = Gauge("shadowgate_decision", "The run's decision: 1 pass, 0 continue, -1 fail",
                              RUN, registry=r)
        self.estimate = Gauge("shadowgate_check_estimate",
                              "A gated check's estimate over the run, in its thresholds' units "
                              "(latency x-fold, accuracy drop and error rates 0..1, CTR relative drop)",
                              RUN + ["check"], registry=r)
        self.threshold = Gauge("shadowgate_check_threshold", "A gated check's alert and rollback thresholds",
                               RUN + ["check", "kind"], registry=r)
        self.evidence = Gauge("shadowgate_check_evidence",
                              "Log-likelihood ratio of rollback against alert (fails at log(1/alpha))",
                              RUN + ["check"], registry=r)
        self.windows = Counter("shadowgate_windows", "Windows closed, by their health (ok, golden, stable_down, "
                               "overloaded)", ["analysis", "health"], registry=r)
        self.probes = Counter("shadowgate_probes", "Shadow probe requests by outcome (ok, error)",
                              ["analysis", "version", "outcome"], registry=r)
        self.load = Counter("shadowgate_load_requests", "Load requests by status (OK or the error code)",
                            ["analysis", "version", "code"], registry=r)
        self.webhook = Histogram("shadowgate_webhook_duration_seconds", "Webhook answer time (seconds)",
                                 ["caller", "hook", "status"], buckets=_WEBHOOK_BUCKETS, registry=r)
        self.sessions = Gauge("shadowgate_sessions_active", "Runs with load and probes running", registry=r)
        self.limit = Gauge("shadowgate_limit", "Configured caps: sessions, sessions_per_analysis, target_rate "
                           "(req/s per model server), loop_lag_seconds", ["kind"], registry=r)
        self.usage = Gauge("shadowgate_usage", "Current use of each cap (target_rate: the busiest model server's "
                           "planned load over the admitted runs; admitted, queued: runs)", ["kind"], registry=r)
        # Admission (webhook.admission): runs holding a slot and runs waiting for one, per namespace. A
        # namespace's series is removed when it has no run left, so the label is bounded by the live runs.
        self.admission_admitted = Gauge("shadowgate_admission_admitted", "Runs holding a slot (admitted), "
                                        "by the rollout's namespace", ["namespace"], registry=r)
        self.admission_queued = Gauge("shadowgate_admission_queued", "Runs waiting for a slot (queued: Flagger "
                                      "waits at confirm-*, Argo gets Inconclusive), by namespace", ["namespace"],
                                      registry=r)
        self.admission_waited = Histogram("shadowgate_admission_waited_seconds", "Time from a run's first call "
                                          "to its admission (0: admitted at once)",
                                          buckets=(0.0, 1.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
                                          registry=r)
        self.admission_left = Counter("shadowgate_admission_left", "Runs that left admission, by why: ended "
                                      "(post-rollout), promoted, queue_ttl (queued, no call), unclaimed (admitted "
                                      "from the queue, never came back), admission_ttl (admitted, no call)",
                                      ["reason"], registry=r)
        self.hooks_blocking = Gauge("shadowgate_hooks_blocking", "Hooks waiting on a live check now (pre-rollout's "
                                    "canary and golden-set checks)", registry=r)
        self.hook_background = Counter("shadowgate_hook_background", "pre-rollout answers that did not wait for a "
                                       "live check (it went on in the background) because a cap on waiting hooks "
                                       "was reached: namespace or total", ["cap"], registry=r)
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

    def observe_window(self, run: Any, window: Window, report: Any, verdict: Any) -> None:
        """Publish a closed window's values and the run's decision, labelled with the rollout."""
        key = (run.analysis, run.namespace, run.name)
        for version, values in version_values(window, report).items():
            for gauge, k in ((self.accuracy, "accuracy"), (self.latency_p99, "latency_p99_s"),
                             (self.error_ratio, "error_ratio"), (self.ctr, "ctr")):
                v = values[k]
                if v is not None and math.isfinite(v):
                    gauge.labels(*key, version).set(v)
                else:
                    _remove(gauge, *key, version)
            traffic = getattr(window, version)
            ok = traffic.requests - traffic.errors
            if ok:
                self.load.labels(run.analysis, version, "OK").inc(ok)
            for code, n in traffic.errors_by_code.items():
                if n:
                    self.load.labels(run.analysis, version, str(code)).inc(n)
            pred = getattr(window.probes, f"{version}_pred")
            n_ok = int(np.count_nonzero(pred >= 0))
            if n_ok:
                self.probes.labels(run.analysis, version, "ok").inc(n_ok)
            if pred.size - n_ok:
                self.probes.labels(run.analysis, version, "error").inc(pred.size - n_ok)
        self.windows.labels(run.analysis, report.health if report is not None else "ok").inc()
        self.decision.labels(*key).set(DECISION_VALUES.get(verdict.outcome, 0.0))
        for c in verdict.checks:
            if c.name in DRIFT_CHECKS:
                if c.measured and c.canary is not None and math.isfinite(c.canary):
                    self.drift.labels(*key, c.name).set(float(c.canary))
                continue
            if c.estimate is not None and math.isfinite(c.estimate):
                self.estimate.labels(*key, c.name).set(c.estimate)
            if c.alert is not None:
                self.threshold.labels(*key, c.name, "alert").set(c.alert)
                self.threshold.labels(*key, c.name, "rollback").set(c.rollback)
            if c.measured:
                self.evidence.labels(*key, c.name).set(max(c.fail_evidence, -1e6))

    def forget_run(self, run: Any) -> None:
        """Remove a finished run's series: nothing stale for the next rollout to read."""
        key = (run.analysis, run.namespace, run.name)
        for gauge in (self.accuracy, self.latency_p99, self.error_ratio, self.ctr, self.drift, self.decision,
                      self.estimate, self.threshold, self.evidence):
            for labels in list(_label_sets(gauge)):
                if labels[:3] == key:
                    _remove(gauge, *labels)


def _label_sets(gauge: Gauge) -> list[tuple[str, ...]]:
    return list(gauge._metrics.keys())  # prometheus_client keeps the children by label tuple


def _remove(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass
