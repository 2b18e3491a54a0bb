"""Kayenta's judge, which Shadowgate is compared with on the same simulated data
(bench/gate_quality.py has the fixed-threshold one beside it).

- Kayenta (NetflixACAJudge): per metric, a Mann-Whitney test of the
  canary's per-minute series against the baseline's, the Hodges-Lehmann
  shift and its confidence interval at confidence 0.98; the metric is High
  (Low) when the interval's lower (upper) end is beyond 0.25 times the
  estimate's magnitude. Outliers are removed first (IQR factor 3). The
  interval is R's wilcox.test one (exact null distribution, no ties
  correction), as Kayenta calls it.
"""

from __future__ import annotations

import functools

import numpy as np



@functools.lru_cache(maxsize=64)
def _wilcox_cdf(m: int, n: int) -> np.ndarray:
    """CDF of the Mann-Whitney U statistic under H0 for sample sizes m, n (exact, by recursion)."""
    # f[i][j] = counts of U for sizes (i, j); built up over i with a rolling table
    prev = [np.ones(1, dtype=np.float64) for _ in range(n + 1)]  # i = 0: U = 0 only
    for i in range(1, m + 1):
        cur = [np.ones(1, dtype=np.float64)]  # j = 0
        for j in range(1, n + 1):
            a = prev[j]  # last of x is below all y... shift by j
            b = cur[j - 1]
            size = i * j + 1
            out = np.zeros(size)
            out[j: j + a.size] += a
            out[: b.size] += b
            cur.append(out)
        prev = cur
    counts = prev[n]
    return np.cumsum(counts) / counts.sum()


def _qwilcox(p: float, m: int, n: int) -> int:
    cdf = _wilcox_cdf(m, n)
    return int(np.searchsorted(cdf, p - 1e-12, side="left"))


def _iqr_filter(x: np.ndarray, factor: float = 3.0) -> np.ndarray:
    x = x[np.isfinite(x)]
    if x.size < 4:
        return x
    q1, q3 = np.percentile(x, [25, 75])
    iqr = q3 - q1
    if iqr == 0:  # reduced sensitivity: widen to the 1st-99th percentile
        q1, q3 = np.percentile(x, [1, 99])
        iqr = q3 - q1
    return x[(x >= q1 - factor * iqr) & (x <= q3 + factor * iqr)]


def kayenta_classify(control: np.ndarray, experiment: np.ndarray, direction: str,
                     confidence: float = 0.98, fraction: float = 0.25) -> str:
    """Kayenta's MannWhitneyClassifier: "High", "Low", "Pass" or "Nodata"."""
    y = _iqr_filter(np.asarray(control, dtype=np.float64))
    x = _iqr_filter(np.asarray(experiment, dtype=np.float64))
    if x.size == 0 or y.size == 0:
        return "Nodata"
    if np.array_equal(np.sort(x), np.sort(y)) or np.unique(np.concatenate([x, y])).size == 1:
        return "Pass"
    m, n = x.size, y.size
    diffs = np.sort((x[:, None] - y[None, :]).ravel())
    qu = max(_qwilcox((1 - confidence) / 2, m, n), 1)
    lower, upper = diffs[qu - 1], diffs[m * n - qu]
    crit = fraction * abs(float(np.median(diffs)))
    if direction in ("increase", "either") and lower > crit:
        return "High"
    if direction in ("decrease", "either") and upper < -crit:
        return "Low"
    return "Pass"


KAYENTA_DIRECTIONS = {"latency_p99": "increase", "error_rate": "increase", "accuracy": "decrease", "ctr": "decrease"}


def kayenta_judge(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, bool]:
    """Per metric: True when Kayenta classifies it High/Low (a failure)."""
    return {k: kayenta_classify(s, c, KAYENTA_DIRECTIONS[k]) in ("High", "Low") for k, (s, c) in series.items()}
