"""A/A and power properties of the judge on simulated canaries (small, fixed seeds).

The full figures (1000 steps and rollouts) come from bench/judge_quality.py;
these check the same properties on a sample small enough for CI, with
bounds that a broken judge would miss by far.
"""

import numpy as np
import pytest

from analyses.config import load_judge_config
from analyses.judge import judge, judge_run
from analyses.window import merge_windows
from bench.judge_baselines import fixed_threshold_judge, kayenta_classify
from bench.sim import Scenario, reference_set, simulate_step

BASE = Scenario(features=8)


@pytest.fixture(scope="module")
def aa_steps():
    rng = np.random.default_rng(123)
    ref = reference_set(rng, BASE)
    return [simulate_step(rng, BASE, ref) for _ in range(60)]


def test_identical_versions_pass_steps(aa_steps):
    outcomes = [judge(s.window).outcome for s in aa_steps]
    assert outcomes.count("pass") >= 59  # expected false-fail rate is below 1 %


def test_identical_versions_fail_a_fixed_threshold_often(aa_steps):
    # the motivation: point thresholds flap on noise (accuracy noise alone exceeds 2 points often)
    fails = sum(any(fixed_threshold_judge(s.window).values()) for s in aa_steps)
    assert fails >= 10


def test_identical_versions_pass_rollouts_judged_after_every_step():
    rng = np.random.default_rng(321)
    ref = reference_set(rng, BASE)
    failed = 0
    for _ in range(8):
        windows = []
        for _ in range(6):
            windows.append(simulate_step(rng, BASE, ref).window)
            if judge_run(windows).outcome == "fail":
                failed += 1
                break
    assert failed == 0


def test_looks_spend_less_alpha_than_naive_re_judging():
    rng = np.random.default_rng(5)
    ref = reference_set(rng, BASE)
    windows = [simulate_step(rng, BASE, ref).window for _ in range(5)]
    run = judge_run(windows)
    naive = judge(merge_windows(windows), look=5)
    assert run.alpha < naive.alpha / 10
    # same data, same measurements: only the significance level differs
    assert [c.p_value for c in run.checks] == [c.p_value for c in naive.checks]


@pytest.mark.parametrize("scenario, check, config", [
    (BASE.with_(latency_scale=1.4, requests=10_000), "latency_p99", {"latency": {"max_ratio": 1.2}}),
    (BASE.with_(canary_error_rate=0.02), "error_rate", {}),
    (BASE.with_(ctr_ratio=0.8), "ctr", {}),
    (BASE.with_(input_shift=1.0), "input_drift", {}),
    (BASE.with_(accuracy_drop=0.10), "accuracy", {}),
    (BASE.with_(latency_scale=2.0), "latency_p99", {}),
    (BASE.with_(canary_error_rate=0.10), "error_rate", {}),
])
def test_regressions_are_detected_in_one_step(scenario, check, config):
    rng = np.random.default_rng(99)
    ref = reference_set(rng, scenario)
    cfg = load_judge_config(config)
    hits = sum(judge(simulate_step(rng, scenario, ref).window, cfg).check(check).verdict == "fail"
               for _ in range(12))
    assert hits >= 11


def test_small_accuracy_drop_is_detected_over_the_run():
    rng = np.random.default_rng(7)
    sc = BASE.with_(accuracy_drop=0.03)
    ref = reference_set(rng, sc)
    detected_at = []
    for _ in range(6):
        windows = []
        for k in range(1, 11):
            windows.append(simulate_step(rng, sc, ref).window)
            if judge_run(windows).check("accuracy").verdict == "fail":
                detected_at.append(k)
                break
    assert len(detected_at) >= 5


def test_kayenta_classifier_on_clear_cases():
    base = np.linspace(10, 12, 10)
    assert kayenta_classify(base, base * 2, "increase") == "High"
    assert kayenta_classify(base, base * 0.5, "decrease") == "Low"
    assert kayenta_classify(base, base * 2, "decrease") == "Pass"
    assert kayenta_classify(base, base, "either") == "Pass"
    assert kayenta_classify(np.array([]), base, "either") == "Nodata"
