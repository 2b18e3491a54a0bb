"""Simulated canary steps from known distributions, for the judge benchmarks.

One step is what a real analysis interval measures: open-loop load on both
versions (3000 requests each), shadow probes of the golden set (300 pairs)
and CTR counts from the business metrics. The distributions are chosen so
every regression has a known size:

- latency: log-normal body (median 20 ms, sigma 0.35) plus a 3 % slow tail
  (median 60 ms, sigma 0.4), so P99 sits in the tail as in real servers;
  the canary's latencies are multiplied by `latency_scale` (all quantiles
  move by that factor) or only its tail by `tail_scale`.
- errors: Bernoulli per request.
- accuracy: paired Bernoulli per probe with realistic discordance: two
  versions that are equally accurate still disagree on some inputs
  (`discordance`, default 6 % of probes, half each way).
- CTR: binomial clicks on impressions (base CTR 3.5 %).
- inputs: d standard normal features against a 1000-row reference set;
  `input_shift` moves feature 0 by that many standard deviations.

Each step also carries per-minute series (10 buckets) of P99, error rate,
accuracy and CTR: what a Kayenta-style judge reads from a metrics store.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from analyses.window import CtrCounts, ProbePairs, VersionTraffic, Window

N_CLASSES = 10


@dataclass(frozen=True)
class Scenario:
    """Parameters of one simulated canary; defaults are identical versions (A/A)."""

    requests: int = 3000
    probes: int = 300
    impressions: int = 50_000
    features: int = 16
    reference_rows: int = 1000
    buckets: int = 10
    latency_median_s: float = 0.020
    latency_sigma: float = 0.35
    tail_share: float = 0.03
    tail_median_s: float = 0.060
    tail_sigma: float = 0.4
    latency_scale: float = 1.0
    tail_scale: float = 1.0
    error_rate: float = 0.002
    canary_error_rate: float | None = None
    accuracy: float = 0.95
    discordance: float = 0.06
    accuracy_drop: float = 0.0
    ctr: float = 0.035
    ctr_ratio: float = 1.0
    input_shift: float = 0.0

    def with_(self, **kw) -> "Scenario":
        return replace(self, **kw)


@dataclass
class SimStep:
    window: Window
    # metric -> (stable series, canary series), one value per bucket (minute)
    series: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def _latencies(rng: np.random.Generator, sc: Scenario, n: int, scale: float, tail_scale: float) -> np.ndarray:
    body = rng.lognormal(np.log(sc.latency_median_s), sc.latency_sigma, n)
    tail = rng.lognormal(np.log(sc.tail_median_s), sc.tail_sigma, n) * tail_scale
    slow = rng.random(n) < sc.tail_share
    return np.where(slow, tail, body) * scale


def _errors_per_bucket(rng, n: int, rate: float, buckets: int) -> np.ndarray:
    sizes = np.full(buckets, n // buckets)
    sizes[: n - sizes.sum()] += 1
    return rng.binomial(sizes, rate), sizes


def _probes(rng, sc: Scenario, inputs_mean: np.ndarray) -> tuple[ProbePairs, np.ndarray, np.ndarray]:
    """Paired probes and each version's per-probe correctness."""
    n = sc.probes
    labels = rng.integers(0, N_CLASSES, n)
    # joint correctness: both right, only stable right (b), only canary right (c), both wrong
    b = sc.discordance / 2 + sc.accuracy_drop / 2
    c = sc.discordance / 2 - sc.accuracy_drop / 2
    if c < 0:  # a drop larger than the discordance: all discordant probes favour stable
        b, c = sc.accuracy_drop, 0.0
    both = sc.accuracy - b
    u = rng.random(n)
    s_right = u < both + b
    c_right = (u < both) | ((u >= both + b) & (u < both + b + c))
    off1 = (labels + rng.integers(1, N_CLASSES, n)) % N_CLASSES
    off2 = (labels + rng.integers(1, N_CLASSES, n)) % N_CLASSES
    stable_pred = np.where(s_right, labels, off1)
    # when both are wrong they mostly make the same mistake
    same_mistake = rng.random(n) < 0.7
    canary_pred = np.where(c_right, labels, np.where(~s_right & same_mistake, off1, off2))
    conf_s = rng.beta(8, 2, n)
    conf_c = np.where(canary_pred == stable_pred, np.clip(conf_s + rng.normal(0, 0.02, n), 0.11, 0.999),
                      rng.beta(8, 2, n))

    def scores(pred, conf):
        sc_ = np.repeat(((1 - conf) / (N_CLASSES - 1))[:, None], N_CLASSES, axis=1)
        sc_[np.arange(n), pred] = conf
        return sc_

    inputs = rng.normal(size=(n, inputs_mean.size)) + inputs_mean
    pairs = ProbePairs(labels=labels, stable_pred=stable_pred, canary_pred=canary_pred,
                       stable_scores=scores(stable_pred, conf_s), canary_scores=scores(canary_pred, conf_c),
                       inputs=inputs)
    return pairs, stable_pred == labels, canary_pred == labels


def reference_set(rng: np.random.Generator, sc: Scenario) -> np.ndarray:
    """The run's drift reference: training-like inputs, standard normal."""
    return rng.normal(size=(sc.reference_rows, sc.features))


def simulate_step(rng: np.random.Generator, sc: Scenario, reference: np.ndarray | None = None) -> SimStep:
    """One analysis interval of a canary under scenario `sc`."""
    if reference is None:
        reference = reference_set(rng, sc)
    k = sc.buckets
    lat_s = _latencies(rng, sc, sc.requests, 1.0, 1.0)
    lat_c = _latencies(rng, sc, sc.requests, sc.latency_scale, sc.tail_scale)
    ce = sc.canary_error_rate if sc.canary_error_rate is not None else sc.error_rate
    es, sizes = _errors_per_bucket(rng, sc.requests, sc.error_rate, k)
    ec, _ = _errors_per_bucket(rng, sc.requests, ce, k)
    mean = np.zeros(sc.features)
    mean[0] = sc.input_shift
    pairs, sr, cr = _probes(rng, sc, mean)
    imp = np.full(k, sc.impressions // k)
    clicks_s = rng.binomial(imp, sc.ctr)
    clicks_c = rng.binomial(imp, sc.ctr * sc.ctr_ratio)
    # successful requests only carry a latency
    ok_s = lat_s[: sc.requests - int(es.sum())]
    ok_c = lat_c[: sc.requests - int(ec.sum())]
    window = Window(
        stable=VersionTraffic(latencies_s=ok_s, requests=sc.requests, errors=int(es.sum()),
                              errors_by_code={"UNAVAILABLE": int(es.sum())} if es.sum() else {}),
        canary=VersionTraffic(latencies_s=ok_c, requests=sc.requests, errors=int(ec.sum()),
                              errors_by_code={"UNAVAILABLE": int(ec.sum())} if ec.sum() else {}),
        probes=pairs,
        ctr=CtrCounts(float(clicks_s.sum()), float(imp.sum()), float(clicks_c.sum()), float(imp.sum())),
        reference_inputs=reference,
    )
    def per_bucket_p99(x):
        m = x.size // k * k  # equal buckets: one vectorised quantile call
        return np.quantile(x[:m].reshape(k, -1), 0.99, axis=1)

    m = sc.probes // k * k
    series = {
        "latency_p99": (per_bucket_p99(ok_s), per_bucket_p99(ok_c)),
        "error_rate": (es / sizes, ec / sizes),
        "accuracy": (sr[:m].reshape(k, -1).mean(axis=1), cr[:m].reshape(k, -1).mean(axis=1)),
        "ctr": (clicks_s / imp, clicks_c / imp),
    }
    return SimStep(window=window, series=series)
