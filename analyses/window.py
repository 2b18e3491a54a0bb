"""The window: the unit of evidence a verdict is computed from.

A window holds everything one analysis interval measured, as plain numbers:
no sockets, no clocks. Sessions build windows from load and probe results;
the judge reads them; the store keeps them so a verdict can be recomputed.

Units: latencies in seconds, rates as ratios in 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _f64(a) -> np.ndarray:
    return np.asarray(a if a is not None else [], dtype=np.float64).reshape(-1)


@dataclass
class VersionTraffic:
    """Load results for one version in one window.

    latencies_s: latency of each successful request, in seconds, measured
        from the intended send time (coordinated-omission corrected). May be
        a bounded random sample of all requests.
    requests: requests whose outcome is known (successes + errors).
    errors: failed requests (any non-OK status).
    errors_by_code: failed requests by gRPC status name or HTTP code.
    late: sends that left after their slot because the client was at its
        concurrency cap (the measuring side, not the server, was behind).
    intended: sends the timetable asked for in the window (0: unknown).
    deadline_s: the client deadline in seconds; failed and timed-out
        requests count as latency beyond it (None: the largest latency seen).
    """

    latencies_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    requests: int = 0
    errors: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    late: int = 0
    intended: int = 0
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        self.latencies_s = _f64(self.latencies_s)
        self.requests = int(self.requests)
        self.errors = int(self.errors)
        if self.errors > self.requests:
            raise ValueError("errors cannot exceed requests")

    def merge(self, other: "VersionTraffic") -> "VersionTraffic":
        codes = dict(self.errors_by_code)
        for k, v in other.errors_by_code.items():
            codes[k] = codes.get(k, 0) + int(v)
        return VersionTraffic(
            latencies_s=np.concatenate([self.latencies_s, other.latencies_s]),
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            errors_by_code=codes,
            late=self.late + other.late,
            intended=self.intended + other.intended,
            deadline_s=self.deadline_s if self.deadline_s is not None else other.deadline_s,
        )


@dataclass
class ProbePairs:
    """Shadow probes: the same golden inputs sent to stable and canary.

    Row i of every array is one golden input sent to both versions at the
    same moment.

    labels: int (n,), the golden label.
    stable_pred, canary_pred: int (n,), predicted class; -1 where that
        version's request failed.
    stable_scores, canary_scores: float (n, k) class scores, or None. Rows of
        failed requests are NaN.
    inputs: float (n, d) the probe inputs (for input drift), or None.
    rows: int (n,) the golden row of each probe (-1 or None: unknown); the
        gate counts each golden row once (a deterministic model answers a
        repeated input the same way).
    """

    labels: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    stable_pred: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    canary_pred: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    stable_scores: np.ndarray | None = None
    canary_scores: np.ndarray | None = None
    inputs: np.ndarray | None = None
    rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.rows is not None:
            self.rows = np.asarray(self.rows, dtype=np.int64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.stable_pred = np.asarray(self.stable_pred, dtype=np.int64).reshape(-1)
        self.canary_pred = np.asarray(self.canary_pred, dtype=np.int64).reshape(-1)
        n = self.labels.shape[0]
        if self.stable_pred.shape[0] != n or self.canary_pred.shape[0] != n:
            raise ValueError("labels, stable_pred and canary_pred must have the same length")
        for name in ("stable_scores", "canary_scores", "inputs"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v, dtype=np.float64)
                if v.ndim == 1:
                    v = v.reshape(-1, 1)
                if v.shape[0] != n:
                    raise ValueError(f"{name} must have one row per probe")
                setattr(self, name, v)
        if self.rows is not None and self.rows.shape[0] != n:
            raise ValueError("rows must have one entry per probe")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def merge(self, other: "ProbePairs") -> "ProbePairs":
        def cat(a, b):
            if a is None or b is None:
                if len(self) == 0:
                    return b
                if len(other) == 0:
                    return a
                return None
            return np.concatenate([a, b])

        return ProbePairs(
            labels=np.concatenate([self.labels, other.labels]),
            stable_pred=np.concatenate([self.stable_pred, other.stable_pred]),
            canary_pred=np.concatenate([self.canary_pred, other.canary_pred]),
            stable_scores=cat(self.stable_scores, other.stable_scores),
            canary_scores=cat(self.canary_scores, other.canary_scores),
            inputs=cat(self.inputs, other.inputs),
            rows=cat(self.rows, other.rows),
        )


@dataclass
class CtrCounts:
    """Clicks and impressions per version (from Prometheus), counts in the window."""

    stable_clicks: float
    stable_impressions: float
    canary_clicks: float
    canary_impressions: float

    def merge(self, other: "CtrCounts") -> "CtrCounts":
        return CtrCounts(
            self.stable_clicks + other.stable_clicks,
            self.stable_impressions + other.stable_impressions,
            self.canary_clicks + other.canary_clicks,
            self.canary_impressions + other.canary_impressions,
        )


@dataclass
class PromCounts:
    """What one Prometheus check fetched for one window (see analyses.promchecks).

    kind: "counter": stable and canary are [events, trials] counted over
        the window; "histogram": cumulative counts at each upper bound of
        `bounds` (the last +inf); "gauge": the window's samples of the level.
    missing: why nothing usable was fetched (Prometheus down or slow, a
        series missing); stable and canary are then empty.
    """

    kind: str
    stable: np.ndarray = field(default_factory=lambda: np.empty(0))
    canary: np.ndarray = field(default_factory=lambda: np.empty(0))
    bounds: np.ndarray | None = None
    missing: str | None = None

    def __post_init__(self) -> None:
        self.stable = _f64(self.stable)
        self.canary = _f64(self.canary)
        if self.bounds is not None:
            self.bounds = _f64(self.bounds)

    def merge(self, other: "PromCounts") -> "PromCounts":
        """Both windows' data: counts added (histograms with the same bounds), gauge samples joined."""
        if self.missing:
            return other
        if other.missing or other.kind != self.kind:
            return self
        if self.kind == "gauge":
            return PromCounts("gauge", np.concatenate([self.stable, other.stable]),
                              np.concatenate([self.canary, other.canary]))
        if self.stable.shape != other.stable.shape or self.canary.shape != other.canary.shape or (
                self.bounds is not None and not np.array_equal(self.bounds, other.bounds)):
            return self
        return PromCounts(self.kind, self.stable + other.stable, self.canary + other.canary, self.bounds)


@dataclass
class Window:
    """One analysis interval of one run.

    reference_inputs: float (m, d) drift reference set (training-like data),
        or None when no reference is configured. Not merged: it is the same
        for every window of a run.
    ctr: None when the counts could not be fetched (Prometheus down/empty).
    golden: the pre-rollout check of the whole golden set: probes only, sent
        in a burst, so never latency evidence.
    prometheus: per Prometheus check (by name), what was fetched when the
        window closed; a check absent here was not fetched (no evidence, not
        missing data).
    unmeasured: why Shadowgate could not measure this window honestly (its
        own event loop ran late), or None.
    """

    stable: VersionTraffic = field(default_factory=VersionTraffic)
    canary: VersionTraffic = field(default_factory=VersionTraffic)
    probes: ProbePairs = field(default_factory=ProbePairs)
    ctr: CtrCounts | None = None
    reference_inputs: np.ndarray | None = None
    golden: bool = False
    prometheus: dict[str, PromCounts] = field(default_factory=dict)
    unmeasured: str | None = None

    def merge(self, other: "Window") -> "Window":
        if self.ctr is None:
            ctr = other.ctr
        elif other.ctr is None:
            ctr = self.ctr
        else:
            ctr = self.ctr.merge(other.ctr)
        ref = self.reference_inputs if self.reference_inputs is not None else other.reference_inputs
        prom = dict(self.prometheus)
        for name, counts in other.prometheus.items():
            prom[name] = prom[name].merge(counts) if name in prom else counts
        return Window(
            stable=self.stable.merge(other.stable),
            canary=self.canary.merge(other.canary),
            probes=self.probes.merge(other.probes),
            ctr=ctr,
            reference_inputs=ref,
            prometheus=prom,
        )


def merge_windows(windows: list[Window]) -> Window:
    """All data so far: the windows of a run merged in order."""
    out = Window()
    for w in windows:
        out = out.merge(w)
    return out
