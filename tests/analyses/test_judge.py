"""The judge on constructed windows with known answers, and its edge cases."""

import json

import numpy as np
import pytest

from analyses.config import JudgeConfig, load_judge_config
from analyses.judge import judge, judge_run
from analyses.results import CheckResult, Verdict
from analyses.window import CtrCounts, ProbePairs, VersionTraffic, Window

from .builders import latencies, probes, window


def test_identical_versions_pass_every_check():
    v = judge(window(seed=1, reference=True))
    assert v.outcome == "pass" and v.passed and v.phase == "Successful"
    assert v.score == 1.0 and not v.critical_failure
    assert {c.verdict for c in v.checks} == {"pass"}
    assert v.reason.startswith("pass: ")


def test_checks_have_the_documented_names_and_units():
    v = judge(window(seed=1, reference=True))
    names = [c.name for c in v.checks]
    assert names == ["accuracy", "latency_p50", "latency_p90", "latency_p99", "latency_mann_whitney",
                     "error_rate", "error_rate_vs_stable", "ctr", "prediction_scores", "prediction_classes",
                     "prediction_agreement", "input_drift"]
    assert v.check("latency_p99").unit == "s" and v.check("latency_p99").critical
    assert not v.check("latency_p50").critical
    assert v.check("accuracy").unit == "ratio"


def test_slow_canary_fails_p99_with_a_readable_reason():
    v = judge(window(seed=2, scale=2.0))
    c = v.check("latency_p99")
    assert c.verdict == "fail" and c.critical
    assert c.ratio == pytest.approx(2.0, rel=0.15)
    assert c.ci[0] > 1.5
    assert c.p_value < 1e-4 and c.n_canary == 3000
    assert "canary P99" in c.reason and "ms vs stable" in c.reason and "> allowed 1.5x" in c.reason
    assert v.outcome == "fail" and v.critical_failure and v.phase == "Failed" and not v.passed
    assert "latency_p99:" in v.reason


def test_significant_but_tolerated_slowdown_passes():
    # 1.3x is real (thousands of samples) but within the allowed 1.5x
    v = judge(window(seed=3, n=20_000, scale=1.3))
    c = v.check("latency_p99")
    assert c.p_value < 1e-3
    assert c.verdict == "pass" and "<= allowed 1.5x" in c.reason


def test_large_but_noisy_ratio_does_not_fail():
    # 800 samples: a P99 1.6x apart, moved by a handful of requests, is not significant enough
    rng = np.random.default_rng(4)
    s = latencies(rng, 800)
    c = s.copy()
    c[np.argsort(c)[-12:]] *= 1.6  # only the slowest 1.5 % move
    w = Window(stable=VersionTraffic(s, 800, 0), canary=VersionTraffic(c, 800, 0), probes=probes())
    r = judge(w).check("latency_p99")
    assert r.ratio > 1.5
    assert r.verdict == "pass" and "but not significant" in r.reason


def test_first_look_allows_the_larger_ratio():
    w = window(seed=5, scale=1.75)
    assert judge_run([w]).check("latency_p99").verdict == "pass"  # 1.75x <= 2x at the first look
    assert judge(w).check("latency_p99").verdict == "fail"  # 1.75x > 1.5x for a step
    w2 = window(seed=6, scale=1.75)
    assert judge_run([w, w2]).check("latency_p99").verdict == "fail"


def test_absolute_ceiling_in_ms():
    cfg = load_judge_config({"latency": {"max_ms": 30}})
    v = judge(window(seed=7), cfg)  # P99 of the log-normal is about 40 ms
    c = v.check("latency_p99")
    assert c.verdict == "fail" and "> ceiling 30 ms" in c.reason
    assert judge(window(seed=7), load_judge_config({"latency": {"max_ms": 80}})).check("latency_p99").verdict == "pass"


def test_accuracy_drop_is_judged_on_discordant_pairs():
    pairs = probes(n=400, stable_wrong=20, only_stable_right=30, only_canary_right=2)
    v = judge(window(seed=8, pairs=pairs))
    c = v.check("accuracy")
    assert c.difference == pytest.approx(-28 / 400)
    assert c.statistic == 28  # b - c
    assert c.verdict == "fail" and v.outcome == "fail"
    assert "drop > allowed 2.0 points" in c.reason and "McNemar" in c.test


def test_small_accuracy_drop_within_tolerance_passes():
    pairs = probes(n=2000, stable_wrong=20, only_stable_right=30, only_canary_right=0)  # 1.5 points
    c = judge(window(seed=9, pairs=pairs)).check("accuracy")
    assert c.p_value < 1e-6 and c.verdict == "pass"


def test_error_rate_against_max_and_against_stable():
    v = judge(window(seed=10, errors_c=150))  # 5 % errors
    assert v.check("error_rate").verdict == "fail"
    assert v.check("error_rate_vs_stable").verdict == "fail"
    assert "canary error rate 5.00%" in v.check("error_rate").reason
    assert v.outcome == "fail"


def test_error_rate_just_above_max_without_evidence_passes():
    v = judge(window(seed=11, errors_c=33))  # 1.1 % of 3000: not significantly above 1 %
    c = v.check("error_rate")
    assert c.canary > 0.01 and c.verdict == "pass" and "not significant" in c.reason


def test_all_requests_failing():
    w = window(seed=12)
    w.canary = VersionTraffic(latencies_s=[], requests=3000, errors=3000, errors_by_code={"UNAVAILABLE": 3000})
    v = judge(w)
    assert v.check("error_rate").verdict == "fail" and "mostly UNAVAILABLE" in v.check("error_rate").reason
    assert v.check("latency_p99").verdict == "nodata"
    assert v.outcome == "fail"  # a critical failure outweighs missing data


def test_ctr_drop_fails_on_counts():
    v = judge(window(seed=13, ctr=CtrCounts(1750, 50_000, 1225, 50_000)))  # 0.70x
    c = v.check("ctr")
    assert c.ratio == pytest.approx(0.7) and c.verdict == "fail"
    assert "< allowed 0.85x" in c.reason


def test_ctr_missing_skips_or_fails_as_configured():
    skipped = judge(window(seed=14, ctr=None))
    assert skipped.check("ctr").verdict == "nodata" and "skipped" in skipped.check("ctr").reason
    assert skipped.outcome == "pass"  # skipping does not block the verdict
    failed = judge(window(seed=14, ctr=None), load_judge_config({"ctr": {"on_missing": "fail"}}))
    assert failed.check("ctr").verdict == "fail" and "on_missing: fail" in failed.check("ctr").reason
    assert failed.outcome == "fail"


def test_empty_window_is_no_data_with_configurable_outcome():
    v = judge(Window())
    assert v.outcome == "nodata" and v.phase == "Inconclusive" and not v.passed
    assert v.reason.startswith("no data: ")
    assert judge(Window(), load_judge_config({"on_no_data": "fail"})).phase == "Failed"
    assert judge(Window(), load_judge_config({"on_no_data": "pass"})).passed


def test_too_few_samples_for_a_critical_check_is_no_data():
    w = window(seed=15, n=50)
    v = judge(w)
    assert v.check("latency_p99").verdict == "nodata"
    assert v.outcome == "nodata" and "latency_p99" in v.reason


def test_nan_and_negative_latencies_are_ignored():
    w = window(seed=16)
    bad = np.concatenate([w.canary.latencies_s, [np.nan, np.inf, -1.0]])
    w.canary = VersionTraffic(latencies_s=bad, requests=3003, errors=3)
    v = judge(w)
    assert v.check("latency_p99").n_canary == 3000
    assert v.outcome == "pass"


def test_constant_latencies():
    w = window(seed=17)
    w.stable = VersionTraffic(latencies_s=np.full(1000, 0.01), requests=1000, errors=0)
    w.canary = VersionTraffic(latencies_s=np.full(1000, 0.01), requests=1000, errors=0)
    v = judge(w)
    assert v.check("latency_p99").verdict == "pass"
    assert v.check("latency_mann_whitney").verdict == "pass"
    w.canary = VersionTraffic(latencies_s=np.full(1000, 0.03), requests=1000, errors=0)
    assert judge(w).check("latency_p99").verdict == "fail"


def test_failed_probes_are_excluded_from_accuracy():
    pairs = probes(n=100)
    pairs.canary_pred[:90] = -1
    v = judge(window(seed=18, pairs=pairs))
    assert v.check("accuracy").verdict == "nodata" and "90 probes failed" in v.check("accuracy").reason


def test_input_drift_is_found_but_not_critical():
    v = judge(window(seed=19, reference=True, shift=1.0))
    c = v.check("input_drift")
    assert c.verdict == "fail" and not c.critical
    assert "worst column 0" in c.reason
    assert v.outcome == "pass" and "non-critical failures: input_drift" in v.reason
    assert judge(window(seed=19, reference=True)).check("input_drift").verdict == "pass"


def test_no_reference_set_is_no_data_for_input_drift_only():
    v = judge(window(seed=20))
    assert v.check("input_drift").verdict == "nodata"
    assert v.outcome == "pass"


def test_prediction_drift_of_a_collapsed_model():
    pairs = _collapsed()
    v = judge(window(seed=21, pairs=pairs))
    for name in ("prediction_scores", "prediction_classes", "prediction_agreement"):
        assert v.check(name).verdict == "fail", name
    assert v.check("accuracy").verdict == "fail"


def _collapsed(n=400):
    """Probes where the canary always answers class 3 with full confidence."""
    pairs = probes(n=n)
    pairs.canary_pred[:] = 3
    pairs.canary_scores = np.zeros_like(pairs.canary_scores)
    pairs.canary_scores[:, 3] = 1.0
    return pairs


def test_non_critical_failures_lower_the_score_to_marginal():
    pairs = _collapsed()
    cfg = load_judge_config({"accuracy": {"enabled": False}})
    v = judge(window(seed=22, pairs=pairs), cfg)
    assert not v.critical_failure
    assert v.score == pytest.approx(7 / 10)
    assert v.outcome == "fail"  # below marginal 0.75
    v2 = judge(window(seed=22, pairs=_collapsed()), load_judge_config({"accuracy": {"enabled": False},
                                                                       "marginal_score": 0.6}))
    assert v2.outcome == "marginal" and v2.phase == "Inconclusive" and not v2.passed


def test_weights_count_in_the_score():
    pairs = _collapsed()
    cfg = load_judge_config({"accuracy": {"enabled": False}, "drift": {"weight": 0.1}})
    v = judge(window(seed=22, pairs=pairs), cfg)
    assert v.score == pytest.approx(7 / 7.3)
    assert v.outcome == "pass"


def test_disabled_checks_do_not_run():
    cfg = load_judge_config({"drift": {"enabled": False}, "ctr": {"enabled": False},
                             "latency": {"mann_whitney": False, "quantiles": [0.99]}})
    names = [c.name for c in judge(window(seed=23), cfg).checks]
    assert names == ["accuracy", "latency_p99", "error_rate", "error_rate_vs_stable"]


def test_verdict_round_trips_through_strict_json():
    v = judge(window(seed=24, scale=2.0, ctr=None))
    d = v.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = Verdict.from_dict(json.loads(text))
    assert back.outcome == v.outcome and back.phase == v.phase and back.reason == v.reason
    assert [c.name for c in back.checks] == [c.name for c in v.checks]
    assert back.check("latency_p99").ci == pytest.approx(v.check("latency_p99").ci)
    assert back.to_dict() == d


def test_nan_values_serialise_as_null():
    r = CheckResult(name="x", stable=float("nan"), canary=np.float64(1.5), ci=(float("-inf"), 2.0))
    d = r.to_dict()
    assert d["stable"] is None and d["canary"] == 1.5 and d["ci"] == [None, 2.0]
    json.dumps(d, allow_nan=False)


def test_judge_run_merges_all_windows_and_spends_alpha_per_look():
    ws = [window(seed=30 + i) for i in range(3)]
    v = judge_run(ws)
    assert v.scope == "run" and v.look == 3
    assert v.check("latency_p99").n_canary == 9000
    assert v.alpha == pytest.approx(0.01 * 6 / (np.pi**2 * 9))
    assert v.outcome == "pass"


def test_judge_run_detects_what_one_step_cannot():
    # a 3-point accuracy drop: too few probes in one step, clear over the run
    ws = [window(seed=40 + i, pairs=probes(n=300, stable_wrong=10, only_stable_right=12, only_canary_right=3,
                                          seed=40 + i)) for i in range(6)]
    assert judge(ws[0]).check("accuracy").verdict == "pass"
    assert judge_run(ws).check("accuracy").verdict == "fail"


def test_judge_is_pure():
    w = window(seed=50)
    before = w.canary.latencies_s.copy()
    a = judge(w).to_dict()
    b = judge(w).to_dict()
    assert a == b
    np.testing.assert_array_equal(w.canary.latencies_s, before)


def test_default_config_is_used_when_none_given():
    assert judge(window(seed=51), None).outcome == judge(window(seed=51), JudgeConfig()).outcome
    assert isinstance(judge(window(seed=51)), Verdict)
    assert isinstance(ProbePairs(), ProbePairs)


def test_repeated_golden_inputs_count_once():
    # the prober cycles through a 100-input golden set: 10 rounds are still 100 inputs of evidence
    base = probes(n=100, stable_wrong=5, only_stable_right=4, only_canary_right=0)
    inputs = np.random.default_rng(60).normal(size=(100, 3))
    rounds = ProbePairs(labels=np.tile(base.labels, 10), stable_pred=np.tile(base.stable_pred, 10),
                        canary_pred=np.tile(base.canary_pred, 10),
                        stable_scores=np.tile(base.stable_scores, (10, 1)),
                        canary_scores=np.tile(base.canary_scores, (10, 1)), inputs=np.tile(inputs, (10, 1)))
    cfg = load_judge_config({"accuracy": {"min_samples": 10}})
    v = judge(window(seed=61, pairs=rounds), cfg)
    acc = v.check("accuracy")
    assert acc.n_canary == 100 and acc.statistic == 4
    # 4 discordant probes are no evidence; counted ten times they would be (p = 2^-40)
    assert acc.p_value == pytest.approx(0.5**4) and acc.verdict == "pass"
    assert v.check("prediction_agreement").n_canary == 100
