"""TF Serving's request metrics, under TF Serving's own Prometheus names.

TF Serving exports its monitoring metrics at
`/monitoring/prometheus/metrics` with '/' turned into ':':

- `:tensorflow:serving:request_count{model_name, status}`: counter of
  Predict requests by gRPC status name ("OK", "INVALID_ARGUMENT", ...),
  exported without a `_total` suffix, as TF Serving does.
- `:tensorflow:serving:request_latency{model_name, API, entrypoint}`:
  histogram of successful request wall time in microseconds, API
  "Predict", entrypoint "GRPC" or "REST", buckets 10 * 1.8^i (i < 33).

The exposition text is written here rather than with prometheus_client,
which appends `_total` to counters and so cannot reproduce these names.
Each server owns its `Metrics` (no global registry).
"""

from __future__ import annotations

import threading

# TF Serving: monitoring::Buckets::Exponential(10, 1.8, 33), microseconds.
LATENCY_BUCKETS_US: tuple[float, ...] = tuple(10.0 * 1.8 ** i for i in range(33))

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}"


def _fmt(x: float) -> str:
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


class _Histogram:
    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * len(LATENCY_BUCKETS_US)
        self.total = 0.0
        self.n = 0

    def add(self, value: float) -> None:
        self.total += value
        self.n += 1
        for i, upper in enumerate(LATENCY_BUCKETS_US):
            if value <= upper:
                self.counts[i] += 1
                break


class Metrics:
    """Request counters and latency histograms of one server (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._latency: dict[tuple[str, str, str], _Histogram] = {}

    def record(self, model_name: str, status: str, latency_s: float | None,
               api: str = "Predict", entrypoint: str = "GRPC") -> None:
        """Count one request; latency_s (seconds) feeds the histogram when the request succeeded."""
        with self._lock:
            key = (model_name, status)
            self._counts[key] = self._counts.get(key, 0) + 1
            if status == "OK" and latency_s is not None:
                hkey = (model_name, api, entrypoint)
                h = self._latency.get(hkey)
                if h is None:
                    h = self._latency[hkey] = _Histogram()
                h.add(max(0.0, latency_s) * 1e6)

    def request_count(self, model_name: str, status: str) -> int:
        with self._lock:
            return self._counts.get((model_name, status), 0)

    def exposition(self) -> str:
        """The Prometheus text format (0.0.4) of every metric."""
        with self._lock:
            counts = sorted(self._counts.items())
            hists = sorted((k, list(h.counts), h.total, h.n) for k, h in self._latency.items())
        out = [
            f"# HELP {REQUEST_COUNT} The total number of requests.",
            f"# TYPE {REQUEST_COUNT} counter",
        ]
        for (model, status), n in counts:
            out.append(f"{REQUEST_COUNT}{_labels(('model_name', 'status'), (model, status))} {n}")
        out += [
            f"# HELP {REQUEST_LATENCY} Distribution of wall time (in microseconds) for "
            "Tensorflow Serving request.",
            f"# TYPE {REQUEST_LATENCY} histogram",
        ]
        names = ("model_name", "API", "entrypoint")
        for key, bucket_counts, total, n in hists:
            cumulative = 0
            for upper, c in zip(LATENCY_BUCKETS_US, bucket_counts):
                cumulative += c
                le = f'le="{_fmt(upper)}"'
                out.append(f"{REQUEST_LATENCY}_bucket{_labels(names, key, le)} {cumulative}")
            inf = _labels(names, key, 'le="+Inf"')
            out.append(f"{REQUEST_LATENCY}_bucket{inf} {n}")
            out.append(f"{REQUEST_LATENCY}_sum{_labels(names, key)} {_fmt(total)}")
            out.append(f"{REQUEST_LATENCY}_count{_labels(names, key)} {n}")
        return "\n".join(out) + "\n"
