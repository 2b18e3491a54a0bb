"""Windows to bytes and back, compactly, so a verdict can be recomputed from the store.

One window becomes one .npz blob (compressed): probe arrays as they are
(scores and inputs as float32, enough for accuracy and drift), latencies as a
bounded uniform sample, counts, CTR and the Prometheus checks' numbers
(counter pairs, bucket counts, gauge samples: a few dozen numbers each) as a
small JSON header. The drift
reference set is not stored per window: it belongs to the analysis.
"""

from __future__ import annotations

import io
import json

import numpy as np

from analyses.window import CtrCounts, ProbePairs, PromCounts, VersionTraffic, Window

# Enough for a p99 with a few dozen samples beyond it, per version and window.
MAX_LATENCY_SAMPLES = 8192


def _bounded(a: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if a.shape[0] <= limit:
        return a
    # A uniform sample keeps percentiles unbiased; the order of samples carries no meaning.
    return np.sort(rng.choice(a, size=limit, replace=False))


def _traffic(t: VersionTraffic) -> dict:
    return {"requests": t.requests, "errors": t.errors, "errors_by_code": t.errors_by_code, "late": t.late,
            "intended": t.intended, "deadline_s": t.deadline_s}


def _bound(b: float) -> float | str:
    return "+Inf" if b == float("inf") else float(b)


def _prometheus(window: Window) -> dict:
    """Each Prometheus check's fetched numbers (JSON: counts, bucket counts, gauge samples)."""
    return {name: {"kind": c.kind, "stable": c.stable.tolist(), "canary": c.canary.tolist(),
                   "bounds": None if c.bounds is None else [_bound(b) for b in c.bounds.tolist()],
                   "missing": c.missing}
            for name, c in window.prometheus.items()}


def _prom_counts(d: dict) -> PromCounts:
    bounds = d.get("bounds")
    if bounds is not None:
        bounds = [float("inf") if b == "+Inf" else float(b) for b in bounds]
    return PromCounts(d["kind"], d.get("stable") or [], d.get("canary") or [], bounds, d.get("missing"))


def encode_window(window: Window, max_latency_samples: int = MAX_LATENCY_SAMPLES) -> bytes:
    """Serialize a window (without its reference inputs) to npz bytes."""
    rng = np.random.default_rng(0)
    header = {
        "stable": _traffic(window.stable),
        "canary": _traffic(window.canary),
        "golden": bool(window.golden),
        "unmeasured": window.unmeasured,
        "ctr": None if window.ctr is None else {
            "stable_clicks": window.ctr.stable_clicks, "stable_impressions": window.ctr.stable_impressions,
            "canary_clicks": window.ctr.canary_clicks, "canary_impressions": window.ctr.canary_impressions,
        },
        "prometheus": _prometheus(window),
    }
    p = window.probes
    arrays = {
        "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
        "stable_latencies_s": _bounded(window.stable.latencies_s, max_latency_samples, rng),
        "canary_latencies_s": _bounded(window.canary.latencies_s, max_latency_samples, rng),
        "labels": p.labels,
        "stable_pred": p.stable_pred,
        "canary_pred": p.canary_pred,
    }
    if p.rows is not None:
        arrays["rows"] = p.rows
    for name in ("stable_scores", "canary_scores", "inputs"):
        v = getattr(p, name)
        if v is not None:
            arrays[name] = np.asarray(v, dtype=np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def decode_window(blob: bytes) -> Window:
    """The window `encode_window` wrote (reference inputs are None)."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        header = json.loads(bytes(z["header"]).decode())
        opt = {k: z[k].astype(np.float64) if k in z.files else None
               for k in ("stable_scores", "canary_scores", "inputs")}
        rows = z["rows"] if "rows" in z.files else None
        probes = ProbePairs(labels=z["labels"], stable_pred=z["stable_pred"], canary_pred=z["canary_pred"],
                            rows=rows, **opt)
        stable = VersionTraffic(latencies_s=z["stable_latencies_s"], **header["stable"])
        canary = VersionTraffic(latencies_s=z["canary_latencies_s"], **header["canary"])
    ctr = CtrCounts(**header["ctr"]) if header["ctr"] is not None else None
    prometheus = {name: _prom_counts(d) for name, d in (header.get("prometheus") or {}).items()}
    return Window(stable=stable, canary=canary, probes=probes, ctr=ctr, golden=bool(header.get("golden", False)),
                  unmeasured=header.get("unmeasured"), prometheus=prometheus)
