"""Simulated rollouts for the gate benchmarks: heavy tails, bursts, a finite golden set.

One window is what a real analysis interval measures (sizes as in the issue:
3000 load requests per version, 300 probe pairs):

- latency: a log-normal body (median 20 ms, sigma 0.35) and a Pareto tail
  (3 % of requests, from 50 ms, shape 2.5), so P99 sits in a heavy tail.
  The canary's latencies are multiplied by `latency_scale` (every quantile
  moves by it) or only its tail by a factor found by bisection so that the
  true P99 ratio is `tail_p99_ratio` (the median does not move).
- bursts: in `burst_share` of the windows a host stall hits both versions
  at the same instants. The load is interleaved (the two timetables are
  offset by half a slot), so a stall covers as many requests of one version
  as of the other (+-1): k ~ Binomial(n, f) requests of each, f ~ U(0, 
  `burst_max`), each delayed by the stall's own +U(100, 400) ms. Within a
  window these requests are not independent, which is what made identical
  versions on two servers fail a test that assumes they are.
- errors: Bernoulli per request; failed requests carry no latency (the gate
  counts them at the deadline, 1 s here).
- accuracy: a golden set of `golden_rows` rows, each with a fixed outcome
  per version (a deterministic model answers a row the same way every
  time): stable right with probability `accuracy`, the versions disagree on
  `discordance` of the rows, `accuracy_drop` of them favour stable. Probes
  walk through the rows in a random order, again and again.
- CTR: binomial clicks on 50,000 impressions per version (3.5 %).

Also the per-minute series (10 buckets) a Kayenta-style judge reads.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

from analyses.window import CtrCounts, ProbePairs, VersionTraffic, Window

DEADLINE_S = 1.0


@dataclass(frozen=True)
class Scenario:
    requests: int = 3000
    probes: int = 300
    golden_rows: int = 1800
    impressions: int = 50_000
    body_median_s: float = 0.020
    body_sigma: float = 0.35
    tail_share: float = 0.03
    tail_min_s: float = 0.050
    tail_shape: float = 2.5
    latency_scale: float = 1.0
    tail_p99_ratio: float = 1.0
    burst_share: float = 0.2
    burst_max: float = 0.005
    error_rate: float = 0.001
    canary_error_rate: float | None = None
    canary_down: bool = False
    accuracy: float = 0.95
    discordance: float = 0.06
    accuracy_drop: float = 0.0
    ctr: float = 0.035
    ctr_ratio: float = 1.0

    def with_(self, **kw) -> "Scenario":
        return replace(self, **kw)


def _latencies(rng, sc: Scenario, n: int, scale: float, tail_factor: float,
               stalls: np.ndarray) -> np.ndarray:
    body = rng.lognormal(np.log(sc.body_median_s), sc.body_sigma, n)
    tail = sc.tail_min_s * (1.0 + rng.pareto(sc.tail_shape, n)) * tail_factor
    slow = rng.random(n) < sc.tail_share
    x = np.where(slow, tail, body) * scale
    k = min(stalls.size, n)
    x[:k] += stalls[:k]  # requests are exchangeable: the first k are the stalled ones
    return x


@functools.lru_cache(maxsize=64)
def tail_factor_for(sc_key: tuple, ratio: float) -> float:
    """The tail multiplier that moves the true P99 by `ratio` (bisection on a large sample)."""
    if ratio == 1.0:
        return 1.0
    sc = Scenario(*sc_key)
    rng = np.random.default_rng(7)
    n = 2_000_000
    body = rng.lognormal(np.log(sc.body_median_s), sc.body_sigma, n)
    tail0 = sc.tail_min_s * (1.0 + rng.pareto(sc.tail_shape, n))
    slow = rng.random(n) < sc.tail_share
    base = np.quantile(np.where(slow, tail0, body), 0.99)
    lo, hi = 1.0, 20.0
    for _ in range(40):
        mid = (lo + hi) / 2
        q = np.quantile(np.where(slow, tail0 * mid, body), 0.99)
        lo, hi = (mid, hi) if q / base < ratio else (lo, mid)
    return (lo + hi) / 2


def _key(sc: Scenario) -> tuple:
    return tuple(getattr(sc, f) for f in Scenario.__dataclass_fields__)


@dataclass
class Golden:
    labels: np.ndarray
    stable_right: np.ndarray
    canary_right: np.ndarray


def golden_set(rng, sc: Scenario) -> Golden:
    """Per-row fixed outcomes of both versions."""
    n = sc.golden_rows
    b = sc.discordance / 2 + sc.accuracy_drop / 2  # only stable right
    c = max(sc.discordance / 2 - sc.accuracy_drop / 2, 0.0)  # only canary right
    if sc.discordance / 2 < sc.accuracy_drop / 2:
        b, c = sc.accuracy_drop, 0.0
    both = sc.accuracy - b
    u = rng.random(n)
    s_right = u < both + b
    c_right = (u < both) | ((u >= both + b) & (u < both + b + c))
    return Golden(rng.integers(0, 10, n), s_right, c_right)


class Rollout:
    """The windows of one simulated rollout."""

    def __init__(self, rng: np.random.Generator, sc: Scenario) -> None:
        self.rng, self.sc = rng, sc
        self.golden = golden_set(rng, sc)
        self.order = rng.permutation(sc.golden_rows)
        self.pos = 0
        self.tail_factor = tail_factor_for(_key(sc.with_(tail_p99_ratio=1.0)), sc.tail_p99_ratio)

    def _rows(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if self.pos >= self.order.size:
                self.order = self.rng.permutation(self.sc.golden_rows)
                self.pos = 0
            take = min(k, self.order.size - self.pos)
            out.append(self.order[self.pos:self.pos + take])
            self.pos += take
            k -= take
        return np.concatenate(out)

    def golden_window(self) -> Window:
        """The pre-rollout check: every golden row once on both versions, no load."""
        g, sc = self.golden, self.sc
        rows = np.arange(sc.golden_rows)
        wrong = (g.labels + 1) % 10
        sp = np.where(g.stable_right, g.labels, wrong)
        cp = np.full_like(sp, -1) if sc.canary_down else np.where(g.canary_right, g.labels, wrong)
        return Window(probes=ProbePairs(labels=g.labels, stable_pred=sp, canary_pred=cp, rows=rows), golden=True)

    def window(self) -> tuple[Window, dict]:
        rng, sc = self.rng, self.sc
        stall_p = rng.uniform(0.0, sc.burst_max) if rng.random() < sc.burst_share else 0.0
        k = int(rng.binomial(sc.requests, stall_p))
        stalls = rng.uniform(0.1, 0.4, k + 1)
        ls = _latencies(rng, sc, sc.requests, 1.0, 1.0, stalls[:k])
        lc = _latencies(rng, sc, sc.requests, sc.latency_scale, self.tail_factor,
                        stalls[:max(k + int(rng.integers(-1, 2)), 0)])
        ce = 1.0 if sc.canary_down else (sc.canary_error_rate if sc.canary_error_rate is not None else sc.error_rate)
        es = rng.random(sc.requests) < sc.error_rate
        ec = rng.random(sc.requests) < ce
        rows = self._rows(sc.probes)
        g = self.golden
        labels = g.labels[rows]
        wrong = (labels + 1) % 10
        sp = np.where(g.stable_right[rows], labels, wrong)
        cp = np.where(g.canary_right[rows], labels, wrong)
        if sc.canary_down:
            cp = np.full_like(cp, -1)
        clicks_s = rng.binomial(sc.impressions, sc.ctr)
        clicks_c = rng.binomial(sc.impressions, sc.ctr * sc.ctr_ratio)
        w = Window(
            stable=VersionTraffic(latencies_s=ls[~es], requests=sc.requests, errors=int(es.sum()),
                                  deadline_s=DEADLINE_S, intended=sc.requests),
            canary=VersionTraffic(latencies_s=lc[~ec], requests=sc.requests, errors=int(ec.sum()),
                                  deadline_s=DEADLINE_S, intended=sc.requests),
            probes=ProbePairs(labels=labels, stable_pred=sp, canary_pred=cp, rows=rows),
            ctr=CtrCounts(float(clicks_s), float(sc.impressions), float(clicks_c), float(sc.impressions)),
        )
        k = 10
        m = sc.requests // k * k

        def p99(x, err):
            y = np.where(err, DEADLINE_S, x)[:m].reshape(k, -1)
            return np.quantile(y, 0.99, axis=1)

        pm = sc.probes // k * k
        series = {
            "latency_p99": (p99(ls, es), p99(lc, ec)),
            "error_rate": (es[:m].reshape(k, -1).mean(1), ec[:m].reshape(k, -1).mean(1)),
            "accuracy": ((sp == labels)[:pm].reshape(k, -1).mean(1), (cp == labels)[:pm].reshape(k, -1).mean(1)),
            "ctr": (np.full(k, clicks_s / sc.impressions), np.full(k, clicks_c / sc.impressions)),
        }
        return w, series
