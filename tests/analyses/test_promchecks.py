"""Prometheus checks, as a specification: each kind's evidence, and both error rates at the thresholds.

Simulated production metrics, as Prometheus would hand them over per window:
counter pairs (5xx over requests, binomial with a stable that drifts
between windows), TF Serving's latency histogram (log-normal latencies in
its 1.8x-wide buckets, at a random phase against the bucket bounds, with
bursts that slow both versions in some windows), and a gauge sampled a few
times per window (a level that wanders from window to window). The gate
runs with only the Prometheus check active, so each check holds the whole
alpha (1 %); counts are small enough for CI.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from analyses import promchecks
from analyses.config import JudgeConfig, load_judge_config
from analyses.gate import Gate, RunState
from analyses.window import CtrCounts, PromCounts, Window

# TF Serving: monitoring::Buckets::Exponential(10, 1.8, 33), microseconds (modelserver/metrics.py).
TFS_BOUNDS = np.array([10.0 * 1.8 ** i for i in range(33)] + [np.inf])


def _config(**check) -> JudgeConfig:
    return load_judge_config({"drift": {"enabled": False}, "prometheus": {"c": check}})


def _gate(cfg: JudgeConfig) -> Gate:
    return Gate(cfg, active=["c"])


def histogram(latencies_us: np.ndarray, bounds: np.ndarray = TFS_BOUNDS) -> np.ndarray:
    """Cumulative bucket counts of `latencies_us`, as `sum by (le) (increase(..._bucket[w]))` returns them."""
    idx = np.searchsorted(bounds, latencies_us, side="left")
    return np.cumsum(np.bincount(idx, minlength=bounds.size)).astype(float)


# ------------------------------------------------------------------ simulated rollouts


def _counter_windows(rng, canary_rate, stable_rate=0.001, n=2000, windows=25):
    """5xx over requests: a stable rate that drifts between windows (an incident hits both versions),
    and a little extra-binomial noise per version (gamma, 10 % sd)."""
    for _ in range(windows):
        drift = rng.uniform(0.5, 1.5)
        ns, nc = rng.poisson(n), rng.poisson(n)
        ks = rng.binomial(ns, min(stable_rate * drift * rng.gamma(100, 0.01), 1.0))
        kc = rng.binomial(nc, min((canary_rate + stable_rate * (drift - 1)) * rng.gamma(100, 0.01), 1.0))
        yield Window(prometheus={"c": PromCounts("counter", [ks, ns], [kc, nc])})


def _histogram_windows(rng, ratio, n=1200, windows=25):
    """TF Serving's latency buckets: heavy-tailed log-normal latencies at a random phase against the
    bounds; in 30 % of windows a busy host slows 2 % of both versions' requests fourfold."""
    median_us = 2000.0 * 1.8 ** rng.random()
    for _ in range(windows):
        s = rng.lognormal(math.log(median_us), 0.8, n)
        c = rng.lognormal(math.log(median_us), 0.8, n) * ratio
        if rng.random() < 0.3:
            s[: n // 50] *= 4
            c[: n // 50] *= 4
        yield Window(prometheus={"c": PromCounts("histogram", histogram(s), histogram(c), TFS_BOUNDS)})


def _gauge_windows(rng, level, sd=2.0, samples=4, windows=25, stable_level=60.0):
    """GPU utilisation in whole percent, four samples per window, a level that wanders between windows."""
    for _ in range(windows):
        lc = level + rng.normal(0, sd)
        ls = stable_level + rng.normal(0, sd)
        c = np.round(lc + rng.normal(0, 0.5, samples))
        s = np.round(ls + rng.normal(0, 0.5, samples))
        yield Window(prometheus={"c": PromCounts("gauge", s, c)})


def _ctr_windows(rng, drop, n=20_000, windows=25):
    for _ in range(windows):
        ns, nc = rng.poisson(n), rng.poisson(n)
        ks, kc = rng.binomial(ns, 0.035), rng.binomial(nc, 0.035 * (1 - drop))
        yield Window(prometheus={"c": PromCounts("counter", [ks, ns], [kc, nc])})


KINDS = {
    "5xx, canary minus stable": (dict(kind="counter_ratio", compare="difference", alert=0.005, rollback=0.01),
                                 lambda rng, d: _counter_windows(rng, 0.001 + d)),
    "5xx, the canary's own rate": (dict(kind="counter_ratio", compare="canary", alert=0.005, rollback=0.01),
                                   lambda rng, d: _counter_windows(rng, d)),
    "CTR drop as a counter pair": (dict(kind="counter_ratio", compare="drop", alert=0.15, rollback=0.30,
                                        min_count=1000), _ctr_windows),
    "P99 from buckets": (dict(kind="histogram_quantile", quantile=0.99, alert=1.5, rollback=2.0),
                         _histogram_windows),
    "GPU utilisation ceiling": (dict(kind="gauge_ceiling", alert=90, rollback=95, unit="%"), _gauge_windows),
}


def _rollouts(name: str, at: str, n: int, seed: int) -> tuple[int, int]:
    """(failed, passed) of n rollouts of 25 windows with the true difference at `at` ("alert" / "rollback")."""
    check, make = KINDS[name]
    gate = _gate(_config(**check))
    failed = passed = 0
    for r in range(n):
        rng = np.random.default_rng(seed * 1000 + r)
        st = gate.new_state()
        for w in make(rng, check[at]):
            gate.update(st, w)
            if st.outcome != "continue":
                break
        failed += st.outcome == "fail"
        passed += st.outcome == "pass"
    return failed, passed


@pytest.mark.parametrize("name", list(KINDS))
def test_a_canary_exactly_at_alert_rarely_fails(name):
    """H0 at its boundary: P(fail) <= alpha = 1 %; of 100 rollouts at most 3 may fail (P < 0.02 if alpha held)."""
    failed, passed = _rollouts(name, "alert", 100, seed=1)
    assert failed <= 3, name
    assert passed >= 90, name  # and the gate does decide within 25 windows


@pytest.mark.parametrize("name", list(KINDS))
def test_a_canary_exactly_at_rollback_nearly_always_fails(name):
    """H1 at its boundary: P(pass) <= beta = 5 %; of 60 rollouts at least 54 fail within 25 windows (the
    spread across windows is unknown to the test, so a decision exactly at rollback takes several)."""
    failed, passed = _rollouts(name, "rollback", 60, seed=2)
    assert failed >= 54 and passed <= 6, name


# ------------------------------------------------------------------ each kind's evidence


def test_counters_are_compared_as_two_proportions_of_counts():
    """5xx over requests per version: the difference of the rates, never a ratio of rates of rates."""
    r = promchecks.counter_reading(2, 4000, 60, 3000, "difference", 200, alert=0.005, rollback=0.01)
    assert r.measured and r.estimate == pytest.approx(60 / 3000 - 2 / 4000)
    assert (r.stable, r.canary, r.n_stable, r.n_canary) == (2 / 4000, 60 / 3000, 4000, 3000)
    ratio = promchecks.counter_reading(20, 4000, 60, 3000, "ratio", 200)
    assert math.exp(ratio.estimate) == pytest.approx((60.5 / 3000.5) / (20.5 / 4000.5))
    own = promchecks.counter_reading(2, 4000, 60, 3000, "canary", 200, alert=0.005)
    assert (own.k, own.n) == (60, 3000) and own.var is None  # exact Bernoulli on the canary's counts


def test_too_few_counts_or_no_stable_events_is_missing_data():
    few = promchecks.counter_reading(0, 150, 1, 5000, "difference", 200)
    assert not few.measured and few.missing and "fewer than 200 trials" in few.why
    none = promchecks.counter_reading(0, 5000, 3, 5000, "ratio", 200)
    assert not none.measured and "stable has no events" in none.why


def test_a_stable_at_alert_is_not_the_canarys_fault():
    r = promchecks.counter_reading(40, 4000, 45, 4000, "canary", 200, alert=0.005)
    assert not r.measured and not r.missing and "not the canary's fault" in r.why


def test_the_bucketed_quantile_is_close_to_the_true_one_and_its_se_is_honest():
    """Log-normal latencies in TF Serving's 1.8x buckets: P99 within 6 % at any bucket phase, and
    the SE predicts the spread of the log P99 over repeated windows (within a factor 1.5)."""
    rng = np.random.default_rng(0)
    for phase in np.linspace(0, 1, 5):
        median = 2000 * 1.8 ** phase
        true_p99 = median * math.exp(0.5 * 2.3263478740408408)
        logs, ses = [], []
        for _ in range(40):
            q, se, width = promchecks.bucket_quantile(TFS_BOUNDS, histogram(rng.lognormal(math.log(median), 0.5,
                                                                                          3000)), 0.99)
            logs.append(math.log(q))
            ses.append(se)
        assert math.exp(np.mean(logs)) == pytest.approx(true_p99, rel=0.06)
        assert 1 / 1.5 < np.std(logs) / np.mean(ses) < 1.5
        assert width == pytest.approx(1.8)


def test_histograms_of_identical_versions_give_a_ratio_near_one():
    rng = np.random.default_rng(1)
    s, c = histogram(rng.lognormal(7.5, 0.6, 3000)), histogram(rng.lognormal(7.5, 0.6, 3000))
    r = promchecks.histogram_reading(TFS_BOUNDS, s, c, 0.99, 1000)
    assert r.measured and abs(r.estimate) < 3 * math.sqrt(r.var) and r.var < 0.02
    few = promchecks.histogram_reading(TFS_BOUNDS, s[:] * 0.1, c, 0.99, 1000)
    assert not few.measured and few.missing and "fewer than 1000 observations" in few.why


def test_a_gauge_uses_the_larger_of_its_samples_and_the_window_to_window_spread():
    steady = promchecks.gauge_reading([60, 60, 60], [97, 97, 97], "level", 2, noise=2.5)
    assert steady.estimate == 97 and steady.var == pytest.approx(2.5 ** 2)  # the prior noise, not 0
    noisy = promchecks.gauge_reading([60] * 4, [80, 100, 85, 99], "level", 2, noise=0.1)
    assert noisy.var == pytest.approx(np.var([80, 100, 85, 99], ddof=1) / 4)
    learnt = promchecks.gauge_reading([60] * 4, [90] * 4, "level", 2, noise=0.1,
                                      spread=(11, 990.0, 990 * 90 + 10 * 16.0))
    assert learnt.var > 1.0  # ten earlier windows spread by about 4: the prior gives way
    diff = promchecks.gauge_reading([60, 62], [90, 92], "difference", 2, noise=1.0)
    assert diff.estimate == pytest.approx(30) and (diff.stable, diff.canary) == (61, 91)


# ------------------------------------------------------------------ in the gate


def _counter_window(ks, ns, kc, nc, name="c") -> Window:
    return Window(prometheus={name: PromCounts("counter", [ks, ns], [kc, nc])})


def test_a_gpu_at_97_percent_fails_its_ceiling_and_one_at_70_passes():
    cfg = _config(kind="gauge_ceiling", alert=90, rollback=95, unit="%")
    for level, outcome in ((97, "fail"), (70, "pass")):
        gate = _gate(cfg)
        st = gate.new_state()
        for k in range(6):
            c = [level + 0.5 * ((k % 3) - 1)] * 3  # a level that moves a little from window to window
            gate.update(st, Window(prometheus={"c": PromCounts("gauge", [60, 61, 60], c)}))
        v = gate.verdict(st)
        assert v.outcome == outcome, v.reason
        c = v.check("c")
        assert c.canary == pytest.approx(level, abs=0.6) and c.stable == pytest.approx(60.33, abs=0.01)
        assert c.difference == pytest.approx(c.canary - 60.33, abs=0.01) and "canary level" in c.reason


def test_the_reason_says_the_quantile_is_bucketed():
    rng = np.random.default_rng(3)
    gate = _gate(_config(kind="histogram_quantile", alert=1.5, rollback=2.0, unit="us"))
    st = gate.new_state()
    for _ in range(4):  # no single window decides: the spread across windows is part of the test
        s, c = histogram(rng.lognormal(7.5, 0.5, 3000)), histogram(3 * rng.lognormal(7.5, 0.5, 3000))
        gate.update(st, Window(prometheus={"c": PromCounts("histogram", s, c, TFS_BOUNDS)}))
    v = gate.verdict(st)
    chk = v.check("c")
    assert v.outcome == "fail" and "P99 canary/stable (bucketed)" in chk.reason and chk.unit == "us"
    assert "bucketed" in chk.test and chk.estimate == pytest.approx(3.0, rel=0.15)


def test_no_data_skips_the_window_or_fails_as_configured():
    w_down = Window(prometheus={"c": PromCounts("counter", missing="Prometheus did not answer within 3 s")})
    for on_missing, outcome in (("skip", "continue"), ("fail", "fail")):
        gate = _gate(_config(kind="counter_ratio", alert=0.005, rollback=0.01, on_missing=on_missing))
        st = gate.new_state()
        gate.update(st, w_down)
        v = gate.verdict(st)
        assert v.outcome == outcome
        assert "Prometheus did not answer" in v.check("c").reason


def test_a_window_without_a_fetch_is_not_missing_data():
    """The golden burst fetches nothing: no evidence, and on_missing: fail does not fire."""
    gate = _gate(_config(kind="counter_ratio", alert=0.005, rollback=0.01, on_missing="fail"))
    st = gate.new_state()
    gate.update(st, Window(golden=True))
    assert st.outcome == "continue" and st.checks["c"].failed_at is None


def test_ctr_on_missing_fail_is_not_fired_by_the_golden_window():
    cfg = load_judge_config({"drift": {"enabled": False}, "ctr": {"on_missing": "fail"}})
    gate = Gate(cfg, active=["ctr"])
    st = gate.new_state()
    gate.update(st, Window(golden=True))
    assert st.outcome == "continue"
    gate.update(st, Window())  # a real window without counts: Prometheus down
    assert st.outcome == "fail" and "on_missing is fail" in gate.verdict(st).reason


def test_ctr_is_the_counter_pair_drop_with_the_same_evidence_as_before():
    """The built-in CTR check reads its evidence from analyses.promchecks: the same estimate as the
    formula it had (minus the log CTR ratio with +0.5 counts), window by window, and the same
    e-values as a Prometheus counter pair compared as a drop."""
    cfg = JudgeConfig(drift={"enabled": False})
    gate = Gate(cfg, active=["ctr"])
    st = gate.new_state()
    rng = np.random.default_rng(5)
    for _ in range(3):
        ks, kc = int(rng.integers(1500, 2000)), int(rng.integers(1000, 2000))
        gate.update(st, Window(ctr=CtrCounts(ks, 50_000, kc, 50_000)))
        est = -(math.log((kc + 0.5) / 50_000.5) - math.log((ks + 0.5) / 50_000.5))
        assert st.checks["ctr"].last["estimate"] == pytest.approx(est, rel=1e-12)
    generic = _gate(_config(kind="counter_ratio", compare="drop", alert=0.15, rollback=0.30, min_count=1000,
                            overdispersion=False))
    st2 = generic.new_state()
    rng = np.random.default_rng(5)
    for _ in range(3):
        ks, kc = int(rng.integers(1500, 2000)), int(rng.integers(1000, 2000))
        generic.update(st2, _counter_window(kc=kc, nc=50_000, ks=ks, ns=50_000))
    assert st2.checks["c"].llr == pytest.approx(st.checks["ctr"].llr, rel=1e-12)
    assert st2.checks["c"].test.fail.stat == pytest.approx(st.checks["ctr"].test.fail.stat, rel=1e-12)


def test_alpha_is_split_over_built_in_and_prometheus_checks_by_weight():
    cfg = load_judge_config({"prometheus": {
        "p99": {"kind": "histogram_quantile", "alert": 1.5, "rollback": 2.0, "alpha_weight": 2},
        "gpu": {"kind": "gauge_ceiling", "alert": 90, "rollback": 95, "critical": False}}})
    gate = Gate(cfg, active=["latency", "errors", "p99", "gpu"])
    assert gate.alphas["p99"] == pytest.approx(2 * gate.alphas["latency"])
    assert sum(gate.alphas.values()) == pytest.approx(cfg.alpha)
    assert cfg.gated()[-2:] == ["p99", "gpu"]


def test_a_non_critical_prometheus_check_reports_but_does_not_fail_the_run():
    cfg = load_judge_config({"drift": {"enabled": False}, "prometheus": {
        "gpu": {"kind": "gauge_ceiling", "alert": 90, "rollback": 95, "critical": False},
        "e5xx": {"kind": "counter_ratio", "alert": 0.005, "rollback": 0.01}}})
    gate = Gate(cfg, active=["gpu", "e5xx"])
    st = gate.new_state()
    for k in range(8):
        gate.update(st, Window(prometheus={"gpu": PromCounts("gauge", [60] * 3, [98.5 + k % 2] * 3),
                                           "e5xx": PromCounts("counter", [5, 5000], [4 + k % 3, 5000])}))
    v = gate.verdict(st)
    assert v.check("gpu").verdict == "fail" and v.outcome == "pass"


def test_stages_apply_to_prometheus_checks():
    cfg = load_judge_config({"drift": {"enabled": False},
                             "prometheus": {"c": {"kind": "counter_ratio", "alert": 0.005, "rollback": 0.01}},
                             "stages": [{"from_window": 3, "prometheus": {"c": {"alert": 0.02, "rollback": 0.04}}}]})
    assert cfg.thresholds("c", 2) == (0.005, 0.01) and cfg.thresholds("c", 3) == (0.02, 0.04)


def test_state_with_prometheus_checks_round_trips_through_json():
    gate = _gate(_config(kind="histogram_quantile", alert=1.5, rollback=2.0))
    rng = np.random.default_rng(7)
    ws = [Window(prometheus={"c": PromCounts("histogram", histogram(rng.lognormal(7, .5, 1500)),
                                             histogram(rng.lognormal(7, .5, 1500)), TFS_BOUNDS)})
          for _ in range(4)]
    st = gate.new_state()
    for w in ws[:2]:
        gate.update(st, w)
    taken = RunState.from_dict(json.loads(json.dumps(st.to_dict())))
    for w in ws[2:]:
        gate.update(st, w)
        gate.update(taken, w)
    assert taken.to_dict() == st.to_dict()


@pytest.mark.parametrize("check, message", [
    ({"latency": {"kind": "gauge_ceiling", "alert": 1, "rollback": 2}}, "a built-in check has this name"),
    ({"P99": {"kind": "gauge_ceiling", "alert": 1, "rollback": 2}}, "lower-case letters"),
    ({"c": {"kind": "histogram_quantile", "compare": "level", "alert": 1, "rollback": 2}},
     "checks.prometheus.c.compare: 'level' is not a comparison of histogram_quantile"),
    ({"c": {"kind": "counter_ratio", "compare": "drop", "alert": 0.2, "rollback": 1.5}}, "checks.prometheus.c.alert"),
    ({"c": {"kind": "gauge_ceiling", "alert": 95, "rollback": 90}}, "checks.prometheus.c.rollback: must be beyond"),
    ({"c": {"kind": "summary", "alert": 1, "rollback": 2}}, "checks.prometheus.c.kind"),
])
def test_bad_prometheus_checks_name_the_field(check, message):
    from analyses.config import ConfigError

    with pytest.raises(ConfigError) as e:
        load_judge_config({"prometheus": check})
    assert message in str(e.value)


def test_one_stalled_window_cannot_fail_a_histogram_check_but_a_persistent_regression_does():
    """As for latency, no single window decides: a pod stalled in one window (canary P99 4x) between
    identical ones leaves the check unfailed; the same slowness window after window fails it."""
    rng = np.random.default_rng(11)
    gate = _gate(_config(kind="histogram_quantile", alert=1.5, rollback=2.0))

    def window(scale):
        s, c = rng.lognormal(7.5, 0.5, 3000), rng.lognormal(7.5, 0.5, 3000) * scale
        return Window(prometheus={"c": PromCounts("histogram", histogram(s), histogram(c), TFS_BOUNDS)})
    st = gate.new_state()
    for scale in (1.0, 4.0, 1.0, 1.0, 1.0, 1.0):
        gate.update(st, window(scale))
        assert st.outcome != "fail"
    st = gate.new_state()
    for k in range(1, 7):
        gate.update(st, window(4.0))
        if st.outcome == "fail":
            break
    assert st.outcome == "fail" and 2 <= st.decided_at <= 5
