"""The gate, as a specification: both error rates at the thresholds themselves, one state, constant cost.

Simulated rollouts (bench/gate_sim.py: heavy-tailed latency with bursts that
hit both versions, a finite golden set with deterministic per-row answers).
The counts here are small enough for CI; bench/gate_quality.py runs 1000
rollouts per row and its figures are in the README.
"""

import json
import math

import numpy as np
import pytest

from analyses.config import JudgeConfig, load_judge_config
from analyses.gate import Gate, RunState
from analyses.judge import judge_windows
from analyses.plan import accuracy_plan
from analyses.window import ProbePairs, VersionTraffic, Window
from bench.gate_sim import Rollout, Scenario

CFG = JudgeConfig(drift={"enabled": False})
BASE = Scenario(golden_rows=1600)


def _fails(sc: Scenario, n: int, seed: int, windows: int = 10) -> int:
    failed = 0
    for r in range(n):
        rng = np.random.default_rng(seed * 7919 + r)
        ro = Rollout(rng, sc)
        gate = Gate(CFG, golden_rows=sc.golden_rows)
        st = gate.new_state()
        gate.update(st, ro.golden_window())
        for _ in range(windows):
            if st.outcome == "fail":
                break
            gate.update(st, ro.window()[0])
        failed += st.outcome == "fail"
    return failed


def test_identical_versions_pass_and_never_fail():
    """A/A on heavy-tailed, bursty data: no rollout fails, most pass within 10 windows."""
    passed = 0
    for r in range(40):
        rng = np.random.default_rng(r)
        ro = Rollout(rng, BASE.with_(burst_share=0.5, burst_max=0.03))
        gate = Gate(CFG, golden_rows=BASE.golden_rows)
        st = gate.new_state()
        gate.update(st, ro.golden_window())
        for _ in range(10):
            gate.update(st, ro.window()[0])
        assert st.outcome != "fail", gate.verdict(st).reason
        passed += st.outcome == "pass"
    assert passed >= 36


@pytest.mark.parametrize("name, sc", [
    ("P99 at alert 1.5x, whole distribution", BASE.with_(latency_scale=1.5)),
    ("P99 at alert 1.5x, tail only", BASE.with_(tail_p99_ratio=1.5)),
    ("error rate at alert 0.5 %", BASE.with_(canary_error_rate=0.005)),
    ("accuracy drop at alert 2 points", BASE.with_(accuracy_drop=0.02)),
    ("CTR drop at alert 15 %", BASE.with_(ctr_ratio=0.85)),
])
def test_a_canary_exactly_at_alert_rarely_fails(name, sc):
    """H0 at its boundary: P(fail) <= alpha = 1 %; 60 rollouts, at most 2 may fail (P < 0.03 if alpha held)."""
    assert _fails(sc, 60, seed=hash(name) % 1000) <= 2, name


@pytest.mark.parametrize("name, sc", [
    ("P99 at rollback 2x, whole distribution", BASE.with_(latency_scale=2.0)),
    ("P99 at rollback 2x, tail only", BASE.with_(tail_p99_ratio=2.0)),
    ("error rate at rollback 1 %", BASE.with_(canary_error_rate=0.01)),
    ("accuracy drop at rollback 5 points", BASE.with_(accuracy_drop=0.05)),
    ("CTR drop at rollback 30 %", BASE.with_(ctr_ratio=0.7)),
])
def test_a_canary_exactly_at_rollback_fails(name, sc):
    """H1 at its boundary: P(pass) <= beta = 5 %; of 40 rollouts at least 36 fail within 25 windows.

    Exactly at rollback is the slowest case: the test does not know how much windows spread beyond
    their nominal variance, so it needs several windows (bench.gate_dependence has the figures)."""
    assert _fails(sc, 40, seed=hash(name) % 1000, windows=25) >= 36, name


@pytest.mark.parametrize("sc", [BASE.with_(canary_error_rate=0.10), BASE.with_(canary_down=True),
                                BASE.with_(accuracy_drop=0.10)])
def test_gross_regressions_fail_at_once(sc):
    for r in range(10):
        rng = np.random.default_rng(r)
        ro = Rollout(rng, sc)
        gate = Gate(CFG, golden_rows=sc.golden_rows)
        st = gate.new_state()
        gate.update(st, ro.golden_window())
        while st.outcome != "fail" and st.windows < 3:
            gate.update(st, ro.window()[0])
        assert st.outcome == "fail" and st.decided_at <= 3


def test_a_failed_run_stays_failed_and_every_reader_agrees():
    rng = np.random.default_rng(3)
    bad = Rollout(rng, BASE.with_(canary_error_rate=0.2))
    good = Rollout(rng, BASE)
    gate = Gate(CFG, golden_rows=BASE.golden_rows)
    st = gate.new_state()
    gate.update(st, bad.window()[0])
    assert st.outcome == "fail"
    for _ in range(20):
        gate.update(st, good.window()[0])
    v = gate.verdict(st)
    assert v.outcome == "fail" and v.phase == "Failed" and not v.passed and v.decided_at == 1
    assert "errors" in v.reason and "rollback" in v.reason


def test_reasons_never_contradict_themselves():
    """No reason says 'beyond' and 'not significant' at once: each check is pass, fail or undecided."""
    rng = np.random.default_rng(5)
    ro = Rollout(rng, BASE.with_(accuracy_drop=0.035))
    gate = Gate(CFG, golden_rows=BASE.golden_rows)
    st = gate.new_state()
    gate.update(st, ro.window()[0])
    for c in gate.verdict(st).checks:
        assert "not significant" not in c.reason
        assert c.verdict in ("pass", "fail", "continue", "nodata")
        if c.verdict == "continue":
            assert "undecided" in c.reason


def test_accuracy_counts_each_golden_row_once():
    """Evidence stops growing once every golden row was seen: repeats add nothing."""
    rng = np.random.default_rng(1)
    sc = BASE.with_(golden_rows=300, accuracy_drop=0.03)
    ro = Rollout(rng, sc)
    gate = Gate(CFG, golden_rows=300)
    st = gate.new_state()
    for _ in range(5):
        gate.update(st, ro.window()[0])
    acc = st.checks["accuracy"]
    assert acc.n == 300 and len(acc.rows_seen) == 300
    assert acc.exhausted and (acc.failed_at is not None or acc.passed_at is not None)


def test_the_job_gives_the_same_decision_whatever_its_length():
    """A decided run stays decided: more windows after a fail change nothing."""
    rng = np.random.default_rng(9)
    ro = Rollout(rng, BASE.with_(accuracy_drop=0.08))
    windows = [ro.golden_window()] + [ro.window()[0] for _ in range(30)]
    outcomes = {n: judge_windows(windows[:n], CFG, golden_rows=BASE.golden_rows).outcome for n in (2, 5, 12, 31)}
    assert set(outcomes.values()) == {"fail"}, outcomes


def _window(stable_errors=0, canary_errors=0, n=3000, late=0, golden=False, probes=0, rng=None):
    rng = rng or np.random.default_rng(0)
    lat = lambda: rng.lognormal(np.log(0.02), 0.3, n)  # noqa: E731
    labels = rng.integers(0, 10, probes)
    return Window(
        stable=VersionTraffic(latencies_s=lat()[: n - stable_errors], requests=n if n else 0, errors=stable_errors,
                              intended=n, late=late, deadline_s=1.0),
        canary=VersionTraffic(latencies_s=lat()[: n - canary_errors], requests=n if n else 0, errors=canary_errors,
                              intended=n, late=late, deadline_s=1.0),
        probes=ProbePairs(labels=labels, stable_pred=labels, canary_pred=labels, rows=np.arange(probes)),
        golden=golden)


def test_stable_down_blames_nobody_and_counts_nothing():
    gate = Gate(CFG, golden_rows=100)
    st = gate.new_state()
    gate.update(st, _window(stable_errors=3000, canary_errors=3000))
    v = gate.verdict(st)
    assert v.outcome == "continue" and v.window_health == "stable_down"
    assert all(c.windows == 0 for c in v.checks if c.critical)


def test_own_overload_is_not_latency_or_error_evidence():
    gate = Gate(CFG, golden_rows=100)
    st = gate.new_state()
    gate.update(st, _window(canary_errors=600, late=300))
    assert st.health == "overloaded"
    assert st.checks["errors"].windows == 0 and st.checks["latency"].windows == 0


def test_the_golden_window_is_never_latency_evidence():
    gate = Gate(CFG, golden_rows=100)
    st = gate.new_state()
    gate.update(st, _window(golden=True, probes=100))
    assert st.checks["latency"].windows == 0 and st.checks["accuracy"].n == 100


def test_failed_requests_count_as_latency_at_the_deadline():
    """3 % of canary requests time out: its P99 is the deadline, so latency fails too (no single window
    decides it, a few do)."""
    gate = Gate(CFG, golden_rows=100)
    st = gate.new_state()
    gate.update(st, _window(canary_errors=90))
    assert st.checks["latency"].last["canary"] == pytest.approx(1.0)
    assert st.checks["latency"].failed_at is None
    for k in range(1, 5):
        gate.update(st, _window(canary_errors=90, rng=np.random.default_rng(k)))
    assert st.checks["latency"].failed_at is not None and st.checks["latency"].failed_at <= 5


def test_state_round_trips_through_json_and_another_gate_continues_it():
    rng = np.random.default_rng(4)
    ro = Rollout(rng, BASE)
    gate = Gate(CFG, golden_rows=BASE.golden_rows)
    st = gate.new_state()
    ws = [ro.window()[0] for _ in range(4)]
    for w in ws[:2]:
        gate.update(st, w)
    taken = RunState.from_dict(json.loads(json.dumps(st.to_dict())))
    other = Gate(CFG, golden_rows=BASE.golden_rows)
    for w in ws[2:]:
        gate.update(st, w)
        other.update(taken, w)
    assert taken.to_dict() == st.to_dict()


def test_state_size_stops_growing():
    """Bounded memory: after the golden set is covered, 200 more windows add no bytes to the state."""
    rng = np.random.default_rng(2)
    ro = Rollout(rng, BASE.with_(golden_rows=600))
    pool = [ro.window()[0] for _ in range(4)]
    gate = Gate(CFG, golden_rows=600)
    st = gate.new_state()
    for k in range(10):
        gate.update(st, pool[k % 4])
    size = len(json.dumps(st.to_dict()))
    for k in range(200):
        gate.update(st, pool[k % 4])
    size2 = len(json.dumps(st.to_dict()))
    for k in range(200):
        gate.update(st, pool[k % 4])
    assert abs(len(json.dumps(st.to_dict())) - size2) < 0.05 * size  # only digits of running sums change


def test_stages_apply_per_window():
    cfg = load_judge_config({"drift": {"enabled": False},
                             "stages": [{"from_window": 1, "latency": {"alert": 2.0, "rollback": 3.0}},
                                        {"from_window": 3, "latency": {"alert": 1.5, "rollback": 2.0}}]})
    rng = np.random.default_rng(8)
    ro = Rollout(rng, BASE.with_(latency_scale=2.5))
    gate = Gate(cfg, golden_rows=BASE.golden_rows, active=["latency"])
    st = gate.new_state()
    gate.update(st, ro.window()[0])
    gate.update(st, ro.window()[0])
    assert st.outcome != "fail"  # 2.5x is between alert 2x and rollback 3x: no decision yet
    for _ in range(20):
        gate.update(st, ro.window()[0])
    assert st.outcome == "fail"


def test_plan_says_when_the_golden_set_cannot_separate_the_thresholds():
    gate = Gate(CFG, golden_rows=360)
    small = accuracy_plan(CFG, 360, gate.alphas["accuracy"])
    assert not small.separable and "cannot separate" in small.message and small.rows_needed > 1000
    assert gate.warnings() and "360 rows" in gate.warnings()[0]
    big = accuracy_plan(CFG, small.rows_needed, gate.alphas["accuracy"])
    assert big.separable and not Gate(CFG, golden_rows=small.rows_needed).warnings()


def test_boundaries_are_the_ville_bounds():
    gate = Gate(CFG, golden_rows=None)
    fail_at, pass_at = gate.boundaries("latency")
    assert fail_at == pytest.approx(math.log(1 / gate.alphas["latency"]))
    assert pass_at == pytest.approx(math.log(CFG.beta))


def test_a_slow_canary_that_fills_the_concurrency_cap_is_still_evidence():
    """Only the canary's sends were late: its slowness, not Shadowgate's, so latency counts and fails."""
    rng = np.random.default_rng(0)
    w = _window(rng=rng)
    w.canary.latencies_s = w.canary.latencies_s * 5.0
    w.canary.late = 900
    gate = Gate(CFG, golden_rows=100)
    st = gate.new_state()
    for k in range(5):
        w = _window(rng=np.random.default_rng(k))
        w.canary.latencies_s = w.canary.latencies_s * 5.0
        w.canary.late = 900
        gate.update(st, w)
    assert st.health == "ok" and st.checks["latency"].failed_at is not None


def test_a_window_the_service_could_not_measure_is_nobodys_evidence():
    w = _window(canary_errors=600)
    w.unmeasured = "loop late"
    gate = Gate(CFG, golden_rows=100)
    st = gate.new_state()
    gate.update(st, w)
    assert st.health == "overloaded" and st.checks["errors"].windows == 0


def test_one_stalled_window_of_one_server_cannot_fail_identical_versions():
    """A busy host stalls the canary's process for one window (P99 3.2x there); the next windows are A/A."""
    gate = Gate(CFG, golden_rows=100, active=["latency"])
    st = gate.new_state()
    burst = _window(rng=np.random.default_rng(3))
    burst.canary.latencies_s = np.where(np.arange(burst.canary.latencies_s.size) % 40 == 0,
                                        burst.canary.latencies_s + 0.1, burst.canary.latencies_s)
    gate.update(st, _window(rng=np.random.default_rng(2)))
    gate.update(st, burst)
    assert st.checks["latency"].last["canary"] / st.checks["latency"].last["stable"] > 3
    for k in range(5):
        gate.update(st, _window(rng=np.random.default_rng(10 + k)))
    assert st.outcome != "fail"
    # a regression persists: the same slowness window after window fails
    st2 = gate.new_state()
    for k in range(6):
        b = _window(rng=np.random.default_rng(40 + k))
        b.canary.latencies_s = np.where(np.arange(b.canary.latencies_s.size) % 40 == 0,
                                        b.canary.latencies_s + 0.1, b.canary.latencies_s)
        gate.update(st2, b)
    assert st2.outcome == "fail"


def test_one_wild_window_cannot_freeze_the_decision_either():
    """A 30x first window (a cold canary process): no fail, and the run still passes a few windows later."""
    gate = Gate(CFG, golden_rows=100, active=["latency"])
    st = gate.new_state()
    cold = _window(rng=np.random.default_rng(7))
    cold.canary.latencies_s = cold.canary.latencies_s * 30
    gate.update(st, cold)
    for k in range(10):
        gate.update(st, _window(rng=np.random.default_rng(20 + k)))
        if st.outcome == "pass":
            break
    assert st.outcome == "pass" and st.decided_at <= 8, gate.verdict(st).reason
