"""Prometheus checks: one window's evidence from production metrics of stable and canary.

At 25 or 50 % weight the canary carries real traffic, and the metrics the
serving stack exports (TF Serving's, Istio's, DCGM's) are evidence too. A
Prometheus check compares the two versions over each window and hands the
gate (analyses.gate) one estimate of the canary's harm with its variance,
exactly as the built-in checks do, so the same sequential test, alpha split
and Ville bound apply. Here only numbers: what was fetched (counts, bucket
counts, gauge samples; analyses.window.PromCounts) in, a `Reading` out. The
queries live in webhook/promchecks.py.

Three kinds, each with its null and alternative hypotheses on the harm d:

counter_ratio: events over trials per version (5xx over all requests, clicks
    over impressions), counts over the window, never a ratio of rates.
    H0: d <= alert, H1: d >= rollback, with d one of (`compare`):
    - difference: canary rate - stable rate (absolute, 0..1). Estimate
      kc/nc - ks/ns, binomial variance with +0.5 counts (as the built-in
      errors_increase; statsmodels' two-proportion z test with a margin).
    - ratio: canary rate / stable rate (x-fold); drop: 1 - that ratio (the
      built-in CTR check). On the log scale, log((kc+.5)/(nc+.5)) -
      log((ks+.5)/(ns+.5)), variance 1/k - 1/n per version (the delta
      method for a log relative risk). Needs events on stable.
    - canary: the canary's own rate (absolute); exact Bernoulli likelihood
      ratio on its counts, as the built-in errors check. A window in which
      stable itself is at or above alert is not the canary's fault: no
      evidence.
histogram_quantile: a quantile from cumulative bucket counts (Prometheus
    `le` buckets) of each version. H0: canary Q / stable Q <= alert (x-fold),
    H1: >= rollback. Bucketed data: the quantile is read from a weighted
    least-squares line of log(bound) on the normal quantile of the CDF at the
    bounds within two buckets either side (exact when the tail is locally
    log-normal; on TF Serving's 1.8x-wide buckets the ratio's bias stays
    within about 6 % in simulation, where linear interpolation, as
    `histogram_quantile()` does, is off by up to 15 %). Its variance is the
    Woodruff/asymptotic one of a sample quantile on that line,
    slope^2 q (1 - q) / (n phi(z_q)^2), per version; the gate corrects it for
    overdispersion across windows and caps what one window may add (a
    stalled pod is one window's burst; a regression persists) as it does for
    latency.
gauge_ceiling: a level sampled over the window (GPU utilisation).
    H0: d <= alert, H1: d >= rollback, d the canary's mean level (`level`)
    or its difference from stable's (`difference`), in the gauge's units.
    Samples of a gauge inside a window are strongly autocorrelated (DCGM
    updates every 30 s by default), so their spread says little about the
    next window: the variance is the larger of the within-window one (with
    an AR(1) effective sample size) and the window-to-window spread of the
    run's earlier windows, shrunk towards a prior `noise` standard
    deviation (default: (rollback - alert) / 2) with the weight of four
    windows. The variance is fixed before the window is seen (earlier
    windows and the prior) or by its own samples, as for every other check.

No data (Prometheus down, a series missing, fewer than `min_count` trials,
observations or samples) is a Reading with `missing` set: the check's
`on_missing` decides (skip the window, or fail).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

__all__ = [
    "Reading",
    "bucket_quantile",
    "counter_reading",
    "gauge_reading",
    "histogram_reading",
    "reading",
]

_MIN_LOG_SE = 0.01  # per-version floor of the log-quantile SE (as for latency)
_FIT_BUCKETS = 2  # bounds either side of the quantile's bucket in the local fit
NOISE_PRIOR_WINDOWS = 4.0  # gauges: weight of the prior noise, in windows


@dataclass
class Reading:
    """One window's evidence for one Prometheus check, on the test's scale.

    measured: the window gives evidence. why: otherwise, the reason;
    missing: that reason is missing data (on_missing applies), not a window
    that cannot be compared. estimate / var: the harm and its variance (test
    scale); k / n: the canary's events and trials (compare: canary, exact
    Bernoulli). stable / canary: the window's values in natural units
    (rates 0..1, the quantile in the metric's unit, gauge levels).
    resolution: histograms, the width (x-fold) of the bucket the canary's
    quantile fell in.
    """

    measured: bool
    why: str | None = None
    missing: bool = False
    estimate: float | None = None
    var: float | None = None
    k: int = 0
    n: int = 0
    stable: float | None = None
    canary: float | None = None
    n_stable: int = 0
    n_canary: int = 0
    resolution: float | None = None
    short: bool = False  # missing because the window held too few counts (the window is too small)


def _no(why: str, missing: bool = True, **kw) -> Reading:
    return Reading(False, why, missing, **kw)


# ------------------------------------------------------------------ counters


def counter_reading(ks: float, ns: float, kc: float, nc: float, compare: str, min_count: float,
                    alert: float = 0.0, rollback: float | None = None, events: str = "events",
                    trials: str = "trials") -> Reading:
    """Evidence of a counter pair: ks of ns events on stable, kc of nc on the canary (counts in the window).

    compare: "difference", "ratio", "drop" or "canary" (see the module
    docstring for each test). min_count: fewer trials on either version is
    missing data. alert: for "canary", a stable at or above it gives no
    evidence. events / trials: names in the reasons (clicks, impressions).
    """
    vals = (ks, ns, kc, nc)
    if not all(isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) for v in vals):
        return _no(f"{events} or {trials} not a finite number")
    ks, ns, kc, nc = (max(float(v), 0.0) for v in vals)
    # increase() extrapolates each series on its own: events may exceed trials by a hair
    ks, kc = min(ks, ns), min(kc, nc)
    n_s, n_c = int(round(ns)), int(round(nc))
    if min(ns, nc) < min_count:
        return _no(short=True, why=f"fewer than {min_count:g} {trials} per version ({ns:.0f} stable, {nc:.0f} canary)",
                   n_stable=n_s, n_canary=n_c)
    rs, rc = ks / ns, kc / nc
    if compare == "canary":
        if rs >= alert > 0:
            return _no(f"stable itself at {100 * rs:.2f} % >= alert: not the canary's fault", missing=False,
                       stable=rs, canary=rc, n_stable=n_s, n_canary=n_c)
        k, n = int(round(kc)), max(int(round(nc)), 1)
        return Reading(True, k=min(k, n), n=n, estimate=rc, stable=rs, canary=rc, n_stable=n_s, n_canary=n_c)
    if compare == "difference":
        ps, pc = (ks + 0.5) / (ns + 1.0), (kc + 0.5) / (nc + 1.0)
        if rollback is not None:
            # The canary's variance where H1 puts it, not where its own count fell: a plug-in
            # variance shrinks with a low count and makes a lucky window look decisive.
            pc = max(pc, min(ps + rollback, 1.0 - 0.5 / (nc + 1.0)))
        var = ps * (1 - ps) / ns + pc * (1 - pc) / nc
        return Reading(True, estimate=rc - rs, var=var, stable=rs, canary=rc, n_stable=n_s, n_canary=n_c)
    if compare in ("ratio", "drop"):
        if ks <= 0:
            return _no(f"stable has no {events}")
        # +0.5 keeps the log finite when the canary has no event
        log_ratio = math.log((kc + 0.5) / (nc + 0.5)) - math.log((ks + 0.5) / (ns + 0.5))
        var = 1 / (kc + 0.5) - 1 / (nc + 0.5) + 1 / (ks + 0.5) - 1 / (ns + 0.5)
        est = log_ratio if compare == "ratio" else -log_ratio
        return Reading(True, estimate=est, var=max(var, 1e-12), stable=rs, canary=rc, n_stable=n_s, n_canary=n_c)
    raise ValueError(f"compare {compare!r} is not a counter comparison")


# ------------------------------------------------------------------ histograms


def _cumulative(bounds: np.ndarray, cum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted bounds and cumulative counts, made monotone (increase() of each bucket is extrapolated alone)."""
    b = np.asarray(bounds, dtype=np.float64)
    c = np.asarray(cum, dtype=np.float64)
    order = np.argsort(b, kind="stable")
    b, c = b[order], np.clip(np.nan_to_num(c[order], nan=0.0), 0.0, None)
    return b, np.maximum.accumulate(c)


def _fit(bounds: np.ndarray, cum: np.ndarray, q: float) -> tuple[float, float, float] | None:
    """(log Q, slope d log x / dz, width of Q's bucket, x-fold) from the local probit fit; None if too few points."""
    n = cum[-1]
    i = int(np.searchsorted(cum, q * n, side="left"))
    lo_i, hi_i = max(0, i - _FIT_BUCKETS), min(len(bounds), i + _FIT_BUCKETS)
    idx = [j for j in range(lo_i, hi_i) if math.isfinite(bounds[j]) and bounds[j] > 0 and 0 < cum[j] < n]
    if i >= len(bounds) or not math.isfinite(bounds[i]):
        width = math.inf
    else:
        below = bounds[i - 1] if i > 0 else 0.0
        width = bounds[i] / below if below > 0 else math.inf
    if len(idx) < 2:
        return None
    f = cum[idx] / n
    z = special.ndtri(f)
    x = np.log(bounds[idx])
    if np.ptp(z) <= 0:
        return None
    # weights: inverse variance of probit(F) at each bound, n phi(z)^2 / (F (1 - F))
    w = n * np.exp(-z * z) / (f * (1 - f))
    sw = np.sqrt(w)
    a = np.vstack([np.ones_like(z), z]).T * sw[:, None]
    coef, *_ = np.linalg.lstsq(a, x * sw, rcond=None)
    slope = float(coef[1])
    if not slope > 0:
        return None
    return float(coef[0] + slope * special.ndtri(q)), slope, width


def _interpolated(bounds: np.ndarray, cum: np.ndarray, q: float) -> float | None:
    """log Q by interpolation inside Q's bucket (log-linear; linear in the first bucket)."""
    n = cum[-1]
    r = q * n
    i = int(np.searchsorted(cum, r, side="left"))
    finite = bounds[np.isfinite(bounds)]
    if i >= len(bounds) or not math.isfinite(bounds[i]):
        return math.log(finite[-1]) if finite.size and finite[-1] > 0 else None
    lo = bounds[i - 1] if i > 0 else 0.0
    below = cum[i - 1] if i > 0 else 0.0
    frac = (r - below) / (cum[i] - below) if cum[i] > below else 1.0
    if lo > 0:
        return math.log(lo) + frac * (math.log(bounds[i]) - math.log(lo))
    v = bounds[i] * frac
    return math.log(v) if v > 0 else None


def bucket_quantile(bounds, cum, q: float) -> tuple[float | None, float | None, float]:
    """(quantile, standard error of its log, bucket width x-fold) from cumulative bucket counts.

    bounds: upper bounds (`le`, +inf last); cum: cumulative counts at each.
    The quantile is in the bounds' unit. The SE is the asymptotic one of a
    sample quantile on the fitted line (None when it cannot be computed).
    """
    b, c = _cumulative(bounds, cum)
    if c.size == 0 or c[-1] <= 0:
        return None, None, math.inf
    n = float(c[-1])
    fit = _fit(b, c, q)
    s_rank = math.sqrt(q * (1 - q) / n)
    if fit is not None:
        logq, slope, width = fit
        se = slope * s_rank / (math.exp(-0.5 * special.ndtri(q) ** 2) / math.sqrt(2 * math.pi))
        return math.exp(logq), se, width
    # Too few populated bounds near Q (everything in one or two buckets): Woodruff on the interpolation.
    logq = _interpolated(b, c, q)
    if logq is None:
        return None, None, math.inf
    z = 1.959963984540054
    lo_p, hi_p = max(q - z * s_rank, 1e-9), min(q + z * s_rank, 1 - 1e-9)
    lo, hi = _interpolated(b, c, lo_p), _interpolated(b, c, hi_p)
    i = int(np.searchsorted(c, q * n, side="left"))
    width = (b[i] / b[i - 1]) if 0 < i < len(b) and math.isfinite(b[i]) and b[i - 1] > 0 else math.inf
    se = (hi - lo) / (2 * z) if lo is not None and hi is not None else None
    return math.exp(logq), se, width


def histogram_reading(bounds, stable_cum, canary_cum, q: float, min_count: float) -> Reading:
    """Evidence of a quantile ratio from bucket counts of both versions (log canary Q / stable Q)."""
    s_cum, c_cum = np.asarray(stable_cum, dtype=np.float64), np.asarray(canary_cum, dtype=np.float64)
    if s_cum.size == 0 or c_cum.size == 0:
        return _no("no buckets")
    ns, nc = float(np.max(s_cum)), float(np.max(c_cum))
    n_s, n_c = int(round(ns)), int(round(nc))
    if min(ns, nc) < min_count:
        return _no(short=True, why=f"fewer than {min_count:g} observations per version ({ns:.0f} stable, {nc:.0f} canary)",
                   n_stable=n_s, n_canary=n_c)
    qs, se_s, _ = bucket_quantile(bounds, s_cum, q)
    qc, se_c, width = bucket_quantile(bounds, c_cum, q)
    if qs is None or qc is None or se_s is None or se_c is None or qs <= 0 or qc <= 0:
        return _no(f"no P{100 * q:g} from these buckets", n_stable=n_s, n_canary=n_c)
    var = max(se_s, _MIN_LOG_SE) ** 2 + max(se_c, _MIN_LOG_SE) ** 2
    return Reading(True, estimate=math.log(qc) - math.log(qs), var=var, stable=qs, canary=qc,
                   n_stable=n_s, n_canary=n_c, resolution=width if math.isfinite(width) else None)


# ------------------------------------------------------------------ gauges


def _mean_var(x: np.ndarray) -> tuple[float, float]:
    """Mean of samples and the variance of that mean, with an AR(1) effective sample size."""
    n = x.size
    mean = float(x.mean())
    if n < 2:
        return mean, 0.0
    s2 = float(x.var(ddof=1))
    rho = 0.0
    if n >= 8 and s2 > 0:
        d = x - mean
        rho = float(np.dot(d[:-1], d[1:]) / np.dot(d, d))
    rho = min(max(rho, 0.0), 0.9)
    n_eff = max(1.0, n * (1 - rho) / (1 + rho))
    return mean, s2 / n_eff


def gauge_reading(stable, canary, compare: str, min_samples: float, noise: float,
                  spread: tuple[int, float, float] = (0, 0.0, 0.0)) -> Reading:
    """Evidence of a gauge: the canary's mean level (compare "level") or its difference from stable's.

    stable, canary: the window's samples (NaN dropped). noise: prior
    window-to-window standard deviation, in the gauge's units. spread: the
    run's earlier per-window estimates as (count, sum, sum of squares).
    """
    s = np.asarray(stable, dtype=np.float64)
    c = np.asarray(canary, dtype=np.float64)
    s, c = s[np.isfinite(s)], c[np.isfinite(c)]
    need_stable = compare == "difference"
    if c.size < min_samples or (need_stable and s.size < min_samples):
        return _no(short=True, why=f"fewer than {min_samples:g} samples per version ({s.size} stable, {c.size} canary)",
                   n_stable=int(s.size), n_canary=int(c.size))
    mc, vc = _mean_var(c)
    ms, vs = _mean_var(s) if s.size else (None, 0.0)
    if compare == "level":
        est, within = mc, vc
    elif compare == "difference":
        est, within = mc - ms, vc + vs
    else:
        raise ValueError(f"compare {compare!r} is not a gauge comparison")
    m, s1, s2 = spread
    between = 0.0 if m < 2 else max((s2 - s1 * s1 / m) / (m - 1), 0.0)
    shrunk = ((max(m - 1, 0)) * between + NOISE_PRIOR_WINDOWS * noise * noise) / (max(m - 1, 0) + NOISE_PRIOR_WINDOWS)
    return Reading(True, estimate=est, var=max(within, shrunk, 1e-12), stable=ms, canary=mc,
                   n_stable=int(s.size), n_canary=int(c.size))


# ------------------------------------------------------------------ one check, one window


def reading(cfg, counts, alert: float, rollback: float,
            spread: tuple[int, float, float] = (0, 0.0, 0.0)) -> Reading:
    """The evidence of Prometheus check `cfg` (analyses.config.PrometheusCheckConfig) from `counts`.

    counts: the window's analyses.window.PromCounts for this check, or None
    when nothing was fetched for this window (the golden burst): no evidence,
    and not missing data either. alert, rollback: the thresholds in force
    for this window. spread: gauges, the run's earlier per-window estimates
    as (count, sum, sum of squares).
    """
    if counts is None:
        return _no("not fetched in this window", missing=False)
    if counts.missing:
        return _no(counts.missing)
    expected = {"counter_ratio": "counter", "histogram_quantile": "histogram", "gauge_ceiling": "gauge"}[cfg.kind]
    if counts.kind != expected:
        return _no(f"fetched {counts.kind} data for a {cfg.kind} check")
    if cfg.kind == "counter_ratio":
        s, c = np.asarray(counts.stable, dtype=np.float64), np.asarray(counts.canary, dtype=np.float64)
        if s.size != 2 or c.size != 2:
            return _no("counter pair incomplete")
        return counter_reading(s[0], s[1], c[0], c[1], cfg.compare, cfg.min_trials(), alert=alert,
                               rollback=rollback)
    if cfg.kind == "histogram_quantile":
        if counts.bounds is None:
            return _no("no bucket bounds")
        return histogram_reading(counts.bounds, counts.stable, counts.canary, cfg.quantile, cfg.min_trials())
    return gauge_reading(counts.stable, counts.canary, cfg.compare, cfg.min_trials(),
                         cfg.noise if cfg.noise is not None else (rollback - alert) / 2.0, spread)


# ------------------------------------------------------------------ scales and words


def scale(cfg, t: float) -> float:
    """A threshold of check `cfg` on its test's scale."""
    if cfg.compare == "ratio":
        return math.log(t)
    if cfg.compare == "drop":
        return -math.log1p(-t)
    return t


def natural(cfg, v: float | None) -> float | None:
    """From the test's scale back to the thresholds' units."""
    if v is None:
        return None
    if cfg.compare == "ratio":
        return math.exp(min(v, 50.0))
    if cfg.compare == "drop":
        return -math.expm1(-v)
    return v


def fmt(cfg, v: float | None) -> str:
    """A value in the thresholds' units, as the reasons write it."""
    if v is None:
        return "-"
    if cfg.compare == "ratio":
        return f"{v:.2f}x"
    if cfg.compare == "drop":
        return f"{100 * v:.0f} % drop" if v >= 0 else f"{-100 * v:.0f} % higher"
    if cfg.kind == "counter_ratio":
        return f"{100 * v:+.2f} points" if cfg.compare == "difference" else f"{100 * v:.2f} %"
    unit = f" {cfg.unit}" if cfg.unit and cfg.unit != "%" else cfg.unit
    return (f"{v:+.4g}" if cfg.compare == "difference" else f"{v:.4g}") + unit


def what(cfg) -> str:
    """What the check measures, for its reason."""
    if cfg.kind == "counter_ratio":
        return {"difference": "rate, canary minus stable", "ratio": "rate, canary/stable",
                "drop": "rate drop, canary vs stable", "canary": "canary rate"}[cfg.compare]
    if cfg.kind == "histogram_quantile":
        return f"P{100 * cfg.quantile:g} canary/stable (bucketed)"
    return "canary level" if cfg.compare == "level" else "level, canary minus stable"


def test_name(cfg) -> str:
    """The test, as CheckResult.test names it."""
    if cfg.kind == "counter_ratio":
        if cfg.compare == "canary":
            return "window e-test on the canary's rate from Prometheus counts (spread across windows unknown)"
        if cfg.compare == "difference":
            return "window e-test on the canary's rate minus stable's from Prometheus counts (spread unknown)"
        return "window e-test on the log ratio of the two rates from Prometheus counts (spread unknown)"
    if cfg.kind == "histogram_quantile":
        return (f"window e-test on the log P{100 * cfg.quantile:g} ratio from bucketed Prometheus histograms "
                "(local log-normal fit; spread across windows unknown)")
    return "window e-test on the gauge's mean per window (spread across windows unknown)"


def unit(cfg) -> str:
    if cfg.unit:
        return cfg.unit
    if cfg.kind == "counter_ratio":
        return "ratio"
    return ""
