"""Drift statistics with evidently's method names, thresholds and arithmetic.

Fast path: plain numpy/scipy, cheap enough for every step of every run.
It reproduces evidently 0.7's stat tests (legacy/calculations/stattests)
number for number, so the judge's drift figures match the HTML report an
SRE opens (tests/analyses/test_drift.py checks this against evidently):

- "ks": two-sample Kolmogorov-Smirnov p-value (scipy's exact/asymptotic
  choice), drift when p <= 0.05.
- "psi": population stability index on evidently's bins, drift when >= 0.1.
- "wasserstein": Wasserstein-1 distance divided by the reference's standard
  deviation (at least 0.001), drift when >= 0.1.
- "jensenshannon": Jensen-Shannon distance (natural log) on evidently's
  bins, drift when >= 0.1.
- "chisquare": chi-square goodness of fit of current counts to reference
  proportions, drift when p < 0.05.
- "z": two-proportion z-test for binary columns, drift when p < 0.05.

"auto" picks the method the way evidently does for numerical columns:
KS (or chi-square / z for <= 5 distinct values) up to 1000 reference rows,
Wasserstein (or Jensen-Shannon) above.

`drift_report_html` builds evidently's own `Report([DataDriftPreset()])`
for people; it is slow (about half a second) and is never on the judge's path.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.spatial import distance

from .config import DRIFT_DEFAULT_THRESHOLDS

__all__ = [
    "ColumnDrift",
    "DEFAULT_THRESHOLDS",
    "P_VALUE_METHODS",
    "auto_method",
    "chisquare",
    "column_drift",
    "drift_report_html",
    "jensenshannon",
    "ks",
    "psi",
    "wasserstein_norm",
    "z_test",
]

DEFAULT_THRESHOLDS = dict(DRIFT_DEFAULT_THRESHOLDS, chisquare=0.05, z=0.05)
P_VALUE_METHODS = frozenset({"ks", "chisquare", "z"})



def _as_columns(reference, current) -> tuple[np.ndarray, np.ndarray]:
    """Both data sets as float64 (rows, columns), with the same columns."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.ndim == 1:
        ref = ref.reshape(-1, 1)
    if cur.ndim == 1:
        cur = cur.reshape(-1, 1)
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"reference has {ref.shape[1]} columns, current has {cur.shape[1]}")
    return ref, cur

def _clean(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    return a[np.isfinite(a)]


# ---------------------------------------------------------------- KS


@functools.lru_cache(maxsize=4096)
def _ks_pvalue(n1: int, n2: int, d: float) -> float:
    # scipy.stats.ks_2samp's own p-value for a given statistic ('auto' mode:
    # exact up to 10000 per sample, Smirnov's asymptotic form above). Called
    # on our vectorised statistic so 64 columns cost one sort each instead of
    # 64 full ks_2samp calls; cached because D lives on a lattice.
    if max(n1, n2) <= 10000:
        try:
            from scipy.stats._stats_py import _attempt_exact_2kssamp

            ok, _, prob = _attempt_exact_2kssamp(n1, n2, math.gcd(n1, n2), d, "two-sided")
            if ok:
                return float(np.clip(prob, 0.0, 1.0))
        except (ImportError, AttributeError, TypeError):  # private function moved: asymptotic form below
            pass
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def ks_distance(reference, current) -> float:
    """Two-sample Kolmogorov-Smirnov distance D (0..1), as scipy computes it."""
    a = np.sort(_clean(reference))
    b = np.sort(_clean(current))
    if a.size == 0 or b.size == 0:
        return math.nan
    both = np.concatenate([a, b])
    cdf1 = np.searchsorted(a, both, side="right") / a.size
    cdf2 = np.searchsorted(b, both, side="right") / b.size
    diff = cdf1 - cdf2
    return float(max(np.clip(-diff.min(), 0, 1), diff.max()))


def ks_pvalue(n1: int, n2: int, d: float) -> float:
    """Two-sided KS p-value for distance d between samples of sizes n1, n2 (scipy's method)."""
    return _ks_pvalue(int(n1), int(n2), round(float(d), 12))


def ks_distances(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """KS distance of every column of two finite 2-D arrays (one sort for all columns)."""
    return _ks_columns(np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64))[0]


def ks(reference, current) -> tuple[float, float]:
    """(D, p-value) of the two-sided two-sample KS test; evidently's "ks" value is the p-value."""
    a = _clean(reference)
    b = _clean(current)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan
    d = ks_distance(a, b)
    return d, _ks_pvalue(int(a.size), int(b.size), round(d, 12))


# ---------------------------------------------------------------- binned


def _binned(reference: np.ndarray, current: np.ndarray, fill_zeroes: bool) -> tuple[np.ndarray, np.ndarray]:
    # evidently's get_binned_data for numerical columns: Sturges bins on the
    # combined data when the reference has > 20 distinct values, else one
    # bin per distinct value; empty bins get a tiny share so logs stay finite.
    if np.unique(reference).size > 20:
        bins = np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")
        rp = np.histogram(reference, bins)[0] / reference.size
        cp = np.histogram(current, bins)[0] / current.size
    else:
        keys = np.union1d(reference, current)
        rp = np.array([np.count_nonzero(reference == k) for k in keys]) / reference.size
        cp = np.array([np.count_nonzero(current == k) for k in keys]) / current.size
    if fill_zeroes:
        for arr in (rp, cp):
            nz = arr[arr != 0]
            small = nz.min() if nz.size else 1.0
            arr[arr == 0] = small / 10**6 if small <= 0.0001 else 0.0001
    return rp.astype(np.float64), cp.astype(np.float64)


def psi(reference, current) -> float:
    """Population stability index on evidently's bins (>= 0.1: drift)."""
    a, b = _clean(reference), _clean(current)
    if a.size == 0 or b.size == 0:
        return math.nan
    rp, cp = _binned(a, b, True)
    return float(np.sum((rp - cp) * np.log(rp / cp)))


def jensenshannon(reference, current) -> float:
    """Jensen-Shannon distance (natural log) on evidently's bins (>= 0.1: drift)."""
    a, b = _clean(reference), _clean(current)
    if a.size == 0 or b.size == 0:
        return math.nan
    rp, cp = _binned(a, b, False)
    return float(distance.jensenshannon(rp, cp))


def wasserstein_norm(reference, current) -> float:
    """Wasserstein-1 distance over the reference's std (at least 0.001), evidently's "wasserstein"."""
    a, b = _clean(reference), _clean(current)
    if a.size == 0 or b.size == 0:
        return math.nan
    norm = max(float(np.std(a)), 0.001)
    return float(stats.wasserstein_distance(a, b) / norm)


def chisquare(reference, current) -> float:
    """evidently's "chisquare" p-value: current counts against reference proportions."""
    a, b = _clean(reference), _clean(current)
    if a.size == 0 or b.size == 0:
        return math.nan
    keys = np.union1d(a, b)
    ref_counts = np.array([np.count_nonzero(a == k) for k in keys], dtype=np.float64)
    cur_counts = np.array([np.count_nonzero(b == k) for k in keys], dtype=np.float64)
    f_exp = ref_counts * (b.size / a.size)
    return float(stats.chisquare(cur_counts, f_exp)[1])


def z_test(reference, current) -> float:
    """evidently's "z" p-value: two-proportion z-test for a column with two values."""
    a, b = _clean(reference), _clean(current)
    if a.size == 0 or b.size == 0:
        return math.nan
    ua, ub = np.unique(a), np.unique(b)
    if ua.size == 1 and ub.size == 1 and ua[0] == ub[0]:
        return 1.0
    first = np.union1d(a, b)[0]
    p1 = np.count_nonzero(a != first) / a.size
    p2 = np.count_nonzero(b != first) / b.size
    pooled = (p1 * a.size + p2 * b.size) / (a.size + b.size)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / a.size + 1.0 / b.size))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def categorical_classes(stable_pred: np.ndarray, canary_pred: np.ndarray) -> tuple[float, float, float, int]:
    """Predicted-class distributions of two versions: (chi-square, p-value, JS distance, dof).

    Chi-square test of homogeneity on the 2 x K table of class counts. The
    versions answered the same inputs, so the samples are positively
    correlated and the test is conservative (it fails less often than
    alpha on identical models), which is the safe side for a gate.
    """
    s = np.asarray(stable_pred).reshape(-1)
    c = np.asarray(canary_pred).reshape(-1)
    keys = np.union1d(s, c)
    if keys.size < 2 or s.size == 0 or c.size == 0:
        return 0.0, 1.0, 0.0, 0
    table = np.array([[np.count_nonzero(s == k) for k in keys], [np.count_nonzero(c == k) for k in keys]],
                     dtype=np.float64)
    chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
    js = float(distance.jensenshannon(table[0] / table[0].sum(), table[1] / table[1].sum()))
    return float(chi2), float(p), js, int(dof)


# ---------------------------------------------------------------- per column


def auto_method(reference: np.ndarray, current: np.ndarray) -> str:
    """evidently's default stat test for a numerical column."""
    return _auto_from(int(reference.size), int(np.unique(np.concatenate([reference, current])).size))


_METHODS = {
    "psi": psi,
    "wasserstein": wasserstein_norm,
    "jensenshannon": jensenshannon,
    "chisquare": chisquare,
    "z": z_test,
}


@dataclass
class ColumnDrift:
    """Drift of one column. statistic is the method's value (a p-value for ks,
    chisquare and z, else a distance); ks_d and ks_p are always computed so a
    distance method's flag can be tested for significance."""

    column: int
    method: str
    statistic: float
    threshold: float
    drifted: bool
    ks_d: float
    ks_p: float
    n_reference: int
    n_current: int


def column_drift(reference: np.ndarray, current: np.ndarray, method: str = "auto",
                 threshold: float | None = None, all_p: bool = True) -> list[ColumnDrift]:
    """Per-column drift of `current` against `reference` (both float (n, d)).

    method: "auto" or an evidently stat test name; threshold: None for the
    method's evidently default. Non-finite values are dropped per column, as
    evidently does. A column empty on either side is skipped.
    all_p: compute every column's exact KS p-value. False (the judge's
    path) computes it only for the columns with the largest distances and
    finds the KS drift flags by bisection over the distances, which is
    exact because the p-value falls monotonically with D at fixed sizes;
    the other columns get ks_p = NaN.
    """
    ref, cur = _as_columns(reference, current)
    finite = bool(np.isfinite(ref).all() and np.isfinite(cur).all())
    lazy = finite and not all_p and ref.shape[0] > 0 and cur.shape[0] > 0
    if finite and ref.shape[0] and cur.shape[0]:
        d_all, uniq_all = _ks_columns(ref, cur)
        if lazy:
            thr_ks = threshold if threshold is not None else DEFAULT_THRESHOLDS["ks"]
            d_flag = _smallest_drifting_d(ref.shape[0], cur.shape[0], d_all, thr_ks)
            j_max = int(np.argmax(d_all))
    out = []
    for j in range(ref.shape[1]):
        if finite:
            a, b = ref[:, j], cur[:, j]
        else:
            a, b = _clean(ref[:, j]), _clean(cur[:, j])
        if a.size == 0 or b.size == 0:
            continue
        if finite:
            d, n_values = float(d_all[j]), int(uniq_all[j])
        else:
            d, n_values = ks_distance(a, b), int(np.unique(np.concatenate([a, b])).size)
        m = _auto_from(a.size, n_values) if method == "auto" else method
        thr = threshold if threshold is not None else DEFAULT_THRESHOLDS[m]
        def ks_p() -> float:
            return _ks_pvalue(int(a.size), int(b.size), round(d, 12))

        if m == "ks" and lazy:
            drifted = round(d, 12) >= d_flag
            value = p = ks_p() if (drifted or j == j_max) else math.nan
        elif m == "ks":
            value = p = ks_p()
            drifted = value <= thr
        else:
            value = _METHODS[m](a, b)
            drifted = value < thr if m in P_VALUE_METHODS else value >= thr
            p = ks_p() if (not lazy or drifted or j == j_max) else math.nan
        out.append(ColumnDrift(j, m, float(value), float(thr), bool(drifted), d, p, int(a.size), int(b.size)))
    return out


def _ks_columns(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KS distance and number of distinct values of every column at once (finite data).

    One argsort of the stacked columns gives both empirical CDFs; they
    are compared only at the last element of each run of ties, which is
    where scipy's searchsorted(..., side="right") evaluates them.
    """
    n1, n2 = ref.shape[0], cur.shape[0]
    # columns as contiguous rows: sorting along the last axis is ~10x faster
    x = np.ascontiguousarray(np.concatenate([ref, cur], axis=0).T)
    order = np.argsort(x, axis=1)  # ties: only the end of each run is read, so order within it is free
    xs = np.take_along_axis(x, order, axis=1)
    from_ref = order < n1
    cum_ref = np.cumsum(from_ref, axis=1)
    diff = cum_ref / n1 - (np.arange(1, n1 + n2 + 1) - cum_ref) / n2
    last = np.ones(xs.shape, dtype=bool)
    last[:, :-1] = xs[:, 1:] != xs[:, :-1]
    diff = np.where(last, diff, 0.0)
    d = np.maximum(np.clip(-diff.min(axis=1), 0, 1), diff.max(axis=1))
    return d, last.sum(axis=1)


def _smallest_drifting_d(n1: int, n2: int, ds: np.ndarray, threshold: float) -> float:
    """Smallest of the distances `ds` whose exact KS p-value is <= threshold (inf if none).

    Bisection over the sorted distinct distances: about log2(columns) exact
    p-values instead of one per column.
    """
    uniq = np.unique(np.round(ds, 12))
    if uniq.size == 0 or _ks_pvalue(n1, n2, float(uniq[-1])) > threshold:
        return math.inf  # the common case: not even the largest distance drifts
    lo, hi = 0, uniq.size - 1  # answer index in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if _ks_pvalue(n1, n2, float(uniq[mid])) <= threshold:
            hi = mid
        else:
            lo = mid + 1
    return float(uniq[lo])


def _auto_from(n_reference: int, n_values: int) -> str:
    if n_reference <= 1000:
        if n_values <= 5:
            return "chisquare" if n_values > 2 else "z"
        return "ks"
    return "jensenshannon" if n_values <= 5 else "wasserstein"


def drift_report_html(reference: np.ndarray, current: np.ndarray, path, columns: list[str] | None = None,
                      method: str | None = None) -> Path:
    """Write evidently's data drift report (Report([DataDriftPreset()])) as HTML to `path`.

    reference, current: float (n, d) inputs; columns: names (default
    "x0".."x{d-1}"); method: an evidently stat test name, or None for
    evidently's own choice per column. Returns the path written.
    """
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    ref, cur = _as_columns(reference, current)
    names = columns or [f"x{j}" for j in range(ref.shape[1])]
    preset = DataDriftPreset(method=method) if method else DataDriftPreset()
    snapshot = Report([preset]).run(pd.DataFrame(cur, columns=names), pd.DataFrame(ref, columns=names))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out))
    return out


def evidently_column_values(reference: np.ndarray, current: np.ndarray, method: str | None = None) -> dict[str, float]:
    """Per-column drift values as evidently's Report computes them ({"x0": value, ...}).

    The reference implementation the fast path is tested against; slow.
    """
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    names = [f"x{j}" for j in range(ref.shape[1])]
    preset = DataDriftPreset(method=method) if method else DataDriftPreset()
    snap = Report([preset]).run(pd.DataFrame(cur, columns=names), pd.DataFrame(ref, columns=names))
    out = {}
    for m in snap.dict()["metrics"]:
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith("ValueDrift"):
            out[cfg["column"]] = float(m["value"])
    return out
