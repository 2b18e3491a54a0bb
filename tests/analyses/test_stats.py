"""Statistical building blocks against brute force and textbook values."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from analyses import stats


def test_holm_rejects_step_down():
    # m = 4: 0.001 <= 0.01/4, 0.003 <= 0.01/3, then 0.006 > 0.01/2 stops the procedure
    assert stats.holm([0.006, 0.001, 0.5, 0.003], 0.01) == [False, True, False, True]
    # Bonferroni would reject only the first: Holm is the more powerful of the two
    assert stats.holm([0.0024, 0.003, 0.9, 0.9], 0.01) == [True, True, False, False]
    assert stats.holm([0.02, 0.03], 0.01) == [False, False]


def test_holm_levels_match_the_procedure():
    assert stats.holm_levels([0.001, 0.5, 0.004], 0.03) == pytest.approx([0.01, 0.03, 0.015])
    # after the first non-rejection, later p-values keep that level
    assert stats.holm_levels([0.02, 0.5, 0.004], 0.03) == pytest.approx([0.015, 0.015, 0.01])


def test_look_alpha_spends_at_most_alpha_over_any_number_of_looks():
    total = sum(stats.look_alpha(0.01, k) for k in range(1, 100_000))
    assert total < 0.01
    assert stats.look_alpha(0.01, 1) == pytest.approx(0.01 * 6 / math.pi**2)
    assert stats.look_alpha(0.01, None) == 0.01


def test_quantile_matches_numpy():
    x = np.sort(np.random.default_rng(0).lognormal(size=1001))
    for p in (0.5, 0.9, 0.99):
        assert stats.quantile(x, p) == pytest.approx(np.quantile(x, p))


def test_quantile_ratio_of_a_scaled_copy_is_exact_and_significant():
    rng = np.random.default_rng(1)
    s = np.sort(rng.lognormal(np.log(0.02), 0.4, 5000))
    c = np.sort(rng.lognormal(np.log(0.02), 0.4, 5000) * 2.0)
    r = stats.quantile_ratio_test(s, c, 0.99, 0.01)
    assert r.ratio == pytest.approx(2.0, rel=0.15)
    assert r.p_value < 1e-6
    assert r.ci[0] < r.ratio < r.ci[1]
    assert r.ci[0] > 1.5


def test_quantile_ratio_needs_enough_samples_for_the_tail():
    x = np.sort(np.random.default_rng(2).lognormal(size=200))
    assert stats.quantile_ratio_test(x, x, 0.99, 0.01) is None
    assert stats.quantile_ratio_test(x, x, 0.5, 0.01) is not None


def test_quantile_ratio_of_constant_samples():
    a = np.full(1000, 0.01)
    same = stats.quantile_ratio_test(a, a, 0.99, 0.01)
    assert same.ratio == 1.0 and same.p_value == 1.0
    slower = stats.quantile_ratio_test(a, a * 3, 0.99, 0.01)
    assert slower.ratio == pytest.approx(3.0) and slower.p_value == 0.0


def test_quantile_ceiling_test_is_an_exact_binomial_test():
    c = np.sort(np.concatenate([np.full(950, 0.01), np.full(50, 0.5)]))  # 5 % above 0.1 s
    # P99 above 100 ms: 50 of 1000 exceed, expected at most 10
    assert stats.quantile_ceiling_test(c, 0.99, 0.1) == pytest.approx(sps.binom.sf(49, 1000, 0.01))
    assert stats.quantile_ceiling_test(c, 0.99, 1.0) == 1.0


def test_mcnemar_uses_only_discordant_pairs():
    sc = np.array([True] * 80 + [True] * 10 + [False] * 0 + [False] * 10)
    cc = np.array([True] * 80 + [False] * 10 + [False] * 0 + [False] * 10)
    r = stats.mcnemar_drop(sc, cc, 0.01)
    assert (r.b, r.c) == (10, 0)
    assert r.p_value == pytest.approx(0.5**10)
    assert r.difference == pytest.approx(-0.10)
    assert r.ci[0] < -0.10 < r.ci[1]


def test_mcnemar_no_discordance_is_no_evidence():
    sc = np.ones(50, dtype=bool)
    assert stats.mcnemar_drop(sc, sc, 0.01).p_value == 1.0


def test_fisher_one_sided_matches_scipy():
    want = sps.fisher_exact([[30, 2970], [5, 2995]], alternative="greater").pvalue
    assert stats.fisher_greater(30, 3000, 5, 3000) == pytest.approx(want)
    want = sps.fisher_exact([[70, 1930], [100, 1900]], alternative="less").pvalue
    assert stats.fisher_less(70, 2000, 100, 2000) == pytest.approx(want)
    assert stats.fisher_greater(0, 3000, 0, 3000) == 1.0


def test_clopper_pearson_matches_scipy():
    lo, hi = stats.clopper_pearson(7, 300, 0.025)
    ci = sps.binomtest(7, 300).proportion_ci(confidence_level=0.95, method="exact")
    assert (lo, hi) == pytest.approx((ci.low, ci.high))
    assert stats.clopper_pearson(0, 10, 0.025)[0] == 0.0


def test_hodges_lehmann_shift_and_interval_match_brute_force():
    rng = np.random.default_rng(3)
    s = rng.normal(0, 1, 60)
    c = rng.normal(0.8, 1, 70)
    r = stats.mann_whitney_shift(s, c, 0.025)
    diffs = np.sort((c[:, None] - s[None, :]).ravel())
    mn = diffs.size
    tol = 3e-5 * (diffs[-1] - diffs[0])  # the bisection's documented precision
    assert r.shift == pytest.approx(diffs[(mn + 1) // 2 - 1], abs=tol)
    sd = math.sqrt(60 * 70 * 131 / 12)
    k = int(math.floor(mn / 2 - sps.norm.isf(0.025) * sd))
    assert r.ci == pytest.approx((diffs[k - 1], diffs[mn - k]), abs=tol)
    want = sps.mannwhitneyu(c, s, alternative="greater", method="asymptotic").pvalue
    assert r.p_value == pytest.approx(want)


def test_mann_whitney_on_identical_values():
    x = np.full(100, 0.02)
    r = stats.mann_whitney_shift(x, x, 0.01)
    assert r.p_value == 1.0 and r.shift == 0.0


def test_min_samples_for_quantile_is_the_threshold_of_the_interval():
    for p in (0.5, 0.9, 0.99):
        n = stats.min_samples_for_quantile(p)
        x = np.sort(np.random.default_rng(0).lognormal(size=n))
        assert stats.quantile_ratio_test(x, x, p, 0.01) is not None
        assert stats.quantile_ratio_test(x[:-1], x[:-1], p, 0.01) is None
