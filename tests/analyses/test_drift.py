"""Fast drift statistics equal evidently's on the same data; the HTML report is evidently's."""

import numpy as np
import pytest

from analyses import drift


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    ref = rng.normal(size=(700, 6))
    cur = rng.normal(size=(300, 6))
    cur[:, 1] += 0.4  # drifted
    cur[:, 4] *= 1.5  # drifted in spread
    # low-cardinality columns exercise evidently's categorical binning and its chi-square / z choice
    ref[:, 2] = np.round(ref[:, 2])
    cur[:, 2] = np.round(cur[:, 2])
    ref[:, 3] = (ref[:, 3] > 0).astype(float)
    cur[:, 3] = (cur[:, 3] > 0.3).astype(float)
    ref[:, 5] = np.round(ref[:, 5] * 0.6)
    cur[:, 5] = np.round(cur[:, 5] * 0.6)
    return ref, cur


@pytest.mark.parametrize("method", [None, "ks", "psi", "wasserstein", "jensenshannon"])
def test_fast_path_equals_evidently(data, method):
    ref, cur = data
    theirs = drift.evidently_column_values(ref, cur, method)
    ours = drift.column_drift(ref, cur, method or "auto")
    assert len(ours) == len(theirs) == ref.shape[1]
    for col in ours:
        assert col.statistic == pytest.approx(theirs[f"x{col.column}"], rel=1e-9, abs=1e-12), (method, col)
    if method is None:
        assert {c.method for c in ours} >= {"ks", "z"}


def test_auto_switches_to_wasserstein_above_1000_reference_rows():
    rng = np.random.default_rng(8)
    ref, cur = rng.normal(size=(1500, 2)), rng.normal(size=(200, 2))
    theirs = drift.evidently_column_values(ref, cur)
    ours = drift.column_drift(ref, cur)
    assert [c.method for c in ours] == ["wasserstein", "wasserstein"]
    assert [c.statistic for c in ours] == pytest.approx([theirs["x0"], theirs["x1"]], rel=1e-9)


def test_drift_flags_use_evidently_thresholds(data):
    ref, cur = data
    cols = {c.column: c for c in drift.column_drift(ref, cur, "ks")}
    assert cols[1].drifted and cols[1].statistic <= 0.05
    assert not cols[0].drifted
    psi = {c.column: c for c in drift.column_drift(ref, cur, "psi")}
    assert all(c.drifted == (c.statistic >= 0.1) for c in psi.values())


def test_lazy_path_gives_the_same_flags_and_worst_p():
    rng = np.random.default_rng(9)
    for trial in range(10):
        ref, cur = rng.normal(size=(900, 12)), rng.normal(size=(250, 12))
        cur[:, :3] += rng.uniform(0, 0.3, 3)
        for method in ("ks", "auto", "wasserstein"):
            full = drift.column_drift(ref, cur, method)
            lazy = drift.column_drift(ref, cur, method, all_p=False)
            assert [c.drifted for c in full] == [c.drifted for c in lazy]
            computed = [(f.ks_p, z.ks_p) for f, z in zip(full, lazy) if not np.isnan(z.ks_p)]
            assert computed and all(a == b for a, b in computed)
            assert min(c.ks_p for c in full) == min(c.ks_p for c in lazy if not np.isnan(c.ks_p))


def test_ks_matches_scipy():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(10)
    a, b = rng.normal(size=333), rng.normal(0.1, 1, size=222)
    d, p = drift.ks(a, b)
    want = ks_2samp(a, b)
    assert d == pytest.approx(want.statistic, abs=1e-14) and p == pytest.approx(want.pvalue, rel=1e-12)
    np.testing.assert_allclose(drift.ks_distances(np.c_[a[:222], a[:222]], np.c_[b, b]),
                               [ks_2samp(a[:222], b).statistic] * 2)


def test_non_finite_values_are_dropped_per_column():
    rng = np.random.default_rng(11)
    ref, cur = rng.normal(size=(400, 2)), rng.normal(size=(100, 2))
    ref[:10, 0] = np.nan
    cur[:5, 1] = np.inf
    cols = drift.column_drift(ref, cur, "ks")
    assert (cols[0].n_reference, cols[0].n_current) == (390, 100)
    assert (cols[1].n_reference, cols[1].n_current) == (400, 95)


def test_identical_samples_do_not_drift():
    x = np.random.default_rng(12).normal(size=(300, 3))
    for method in ("ks", "psi", "wasserstein", "jensenshannon"):
        assert not any(c.drifted for c in drift.column_drift(x, x, method))


def test_predicted_class_distributions():
    same = np.repeat(np.arange(10), 30)
    chi2, p, js, dof = drift.categorical_classes(same, same)
    assert chi2 == 0 and p == 1.0 and js == 0.0 and dof == 9
    collapsed = np.full(300, 3)
    chi2, p, js, _ = drift.categorical_classes(same, collapsed)
    assert p < 1e-10 and js > 0.5


def test_drift_report_html_is_evidently_report(tmp_path, data):
    ref, cur = data
    out = drift.drift_report_html(ref, cur, tmp_path / "sub" / "drift.html")
    text = out.read_text()
    assert out.exists() and "<html" in text.lower()
    assert "x1" in text  # the column names reach the report


def test_mismatched_columns_are_an_error():
    with pytest.raises(ValueError, match="columns"):
        drift.column_drift(np.zeros((10, 2)), np.zeros((10, 3)))
