"""The gate's statistical building blocks: quantiles, their standard errors, exact intervals."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from analyses import stats


def test_quantile_matches_numpy():
    x = np.sort(np.random.default_rng(0).lognormal(size=1001))
    for p in (0.5, 0.9, 0.99):
        assert stats.quantile(x, p) == pytest.approx(np.quantile(x, p))


@pytest.mark.parametrize("n", [1000, 3000, 10_000])
def test_maritz_jarrett_se_of_log_p99_matches_the_spread_over_samples(n):
    """The per-window variance of the latency check: within 15 % of the true spread, heavy tail included."""
    rng = np.random.default_rng(n)

    def draw():
        body = rng.lognormal(np.log(0.02), 0.35, n)
        tail = 0.05 * (1.0 + rng.pareto(2.5, n))
        return np.sort(np.where(rng.random(n) < 0.03, tail, body))

    logs, ses = [], []
    for _ in range(300):
        x = draw()
        logs.append(math.log(stats.quantile(x, 0.99)))
        ses.append(stats._log_quantile_se(x, 0.99))
    assert np.median(ses) == pytest.approx(np.std(logs), rel=0.15)


def test_log_quantile_se_needs_enough_samples_for_the_tail():
    x = np.sort(np.random.default_rng(2).lognormal(size=500))
    assert stats._log_quantile_se(x, 0.99) is None
    assert stats._log_quantile_se(np.sort(np.random.default_rng(2).lognormal(size=600)), 0.99) > 0


def test_clopper_pearson_matches_scipy():
    lo, hi = stats.clopper_pearson(7, 300, 0.025)
    ci = sps.binomtest(7, 300).proportion_ci(confidence_level=0.95, method="exact")
    assert (lo, hi) == pytest.approx((ci.low, ci.high))
    assert stats.clopper_pearson(0, 10, 0.025)[0] == 0.0


def test_binomial_less_is_the_exact_lower_tail():
    assert stats.binomial_less(3, 20, 0.3) == pytest.approx(sps.binom.cdf(3, 20, 0.3))
    assert stats.binomial_less(20, 20, 0.3) == 1.0


def test_min_samples_for_quantile_is_where_the_interval_starts_to_exist():
    n = stats.min_samples_for_quantile(0.99)
    assert n == 563
    rng = np.random.default_rng(0)
    assert stats._log_quantile_se(np.sort(rng.lognormal(size=n)), 0.99) is not None
    assert stats._log_quantile_se(np.sort(rng.lognormal(size=n - 1)), 0.99) is None
