"""The simulation knobs of bench/gate_sim.py do what its docstring says (fast: a few seconds).

Defaults draw nothing new: a Scenario without the dependence knobs gives the
windows it gave before they existed (pinned figures below, computed with the
simulator before the knobs were added).
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.gate_sim import Rollout, Scenario

QUIET = Scenario(burst_share=0.0, error_rate=0.0)  # no host stalls, no errors: latencies in send order


def _windows(sc: Scenario, seed: int, n: int = 4):
    ro = Rollout(np.random.default_rng(seed), sc)
    g = ro.golden_window()
    return g, [ro.window() for _ in range(n)]


def _same(a, b) -> None:
    (ga, wa), (gb, wb) = a, b
    np.testing.assert_array_equal(ga.probes.canary_pred, gb.probes.canary_pred)
    for (w1, s1), (w2, s2) in zip(wa, wb):
        for v1, v2 in ((w1.stable, w2.stable), (w1.canary, w2.canary)):
            np.testing.assert_array_equal(v1.latencies_s, v2.latencies_s)
            assert (v1.requests, v1.errors) == (v2.requests, v2.errors)
        np.testing.assert_array_equal(w1.probes.rows, w2.probes.rows)
        np.testing.assert_array_equal(w1.probes.canary_pred, w2.probes.canary_pred)
        assert w1.ctr == w2.ctr
        assert s1.keys() == s2.keys()
        for k in s1:
            np.testing.assert_array_equal(s1[k][0], s2[k][0])
            np.testing.assert_array_equal(s1[k][1], s2[k][1])


def test_defaults_are_bit_identical_to_explicit_defaults():
    explicit = Scenario(pods=1, pod_jitter=0.0, ar1=0.0, process_stall_share=0.0, process_stall_s=0.3,
                        canary_error_bursts=(0.0, 0.0), diurnal=0.0, latency_path=None, error_path=None)
    assert explicit == Scenario()
    for sc in (Scenario(), Scenario(latency_scale=1.5, burst_share=0.5, burst_max=0.03),
               Scenario(canary_error_rate=0.01)):
        _same(_windows(sc, 11), _windows(explicit.with_(**{k: getattr(sc, k) for k in
                                                         ("latency_scale", "burst_share", "burst_max",
                                                          "canary_error_rate")}), 11))


def test_defaults_reproduce_the_simulator_before_the_knobs():
    """Figures of Rollout(default_rng(20260), Scenario()) from the simulator before this change."""
    ro = Rollout(np.random.default_rng(20260), Scenario())
    ro.golden_window()
    pinned = [(68.88860980109948, 69.62200653285838, 0, 5, 278543, 1766.0, 0.7969751502065409),
              (67.73811035481866, 70.24872132778908, 2, 1, 270519, 1760.0, 0.9235629835635859),
              (70.18974497437924, 68.30917104895887, 3, 3, 268576, 1701.0, 0.7569532369670922)]
    for p in pinned:
        w, s = ro.window()
        got = (float(w.stable.latencies_s.sum()), float(w.canary.latencies_s.sum()), w.stable.errors,
               w.canary.errors, int(w.probes.rows.sum()), w.ctr.canary_clicks, float(s["latency_p99"][1].sum()))
        assert got == pytest.approx(p, rel=1e-12)


def test_constant_paths_equal_no_path():
    """latency_path=(latency_scale,) and error_path=(canary error rate,) change nothing, bit for bit."""
    sc = Scenario(latency_scale=1.5, canary_error_rate=0.004)
    _same(_windows(sc, 5), _windows(sc.with_(latency_path=(1.5,), error_path=(0.004,)), 5))


def test_ar1_correlates_consecutive_requests_and_keeps_the_marginal():
    sc = QUIET.with_(requests=50_000)
    ro = Rollout(np.random.default_rng(1), sc.with_(ar1=0.9))
    lags = []
    xs = []
    for _ in range(8):
        w, _ = ro.window()
        lx = np.log(w.stable.latencies_s)
        lags.append(np.corrcoef(lx[:-1], lx[1:])[0, 1])
        xs.append(w.stable.latencies_s)
    assert min(lags) > 0.5
    ro0 = Rollout(np.random.default_rng(1), sc)
    base = np.concatenate([ro0.window()[0].stable.latencies_s for _ in range(8)])
    lb = np.log(base)
    assert abs(np.corrcoef(lb[:-1], lb[1:])[0, 1]) < 0.05
    q9, q0 = np.quantile(np.concatenate(xs), [0.5, 0.99]), np.quantile(base, [0.5, 0.99])
    assert q9[0] == pytest.approx(q0[0], rel=0.02)
    assert q9[1] == pytest.approx(q0[1], rel=0.04)


def test_ar1_window_keeps_the_canary_scale():
    ro = Rollout(np.random.default_rng(2), QUIET.with_(requests=20_000, ar1=0.9, latency_scale=2.0))
    r = [np.median(w.canary.latencies_s) / np.median(w.stable.latencies_s) for w, _ in (ro.window() for _ in range(6))]
    assert np.median(r) == pytest.approx(2.0, rel=0.05)


def _p99_ratio_spread(sc: Scenario, n: int = 200, seed: int = 3) -> float:
    ro = Rollout(np.random.default_rng(seed), sc)
    r = []
    for _ in range(n):
        w, _ = ro.window()
        r.append(np.log(np.quantile(w.canary.latencies_s, 0.99) / np.quantile(w.stable.latencies_s, 0.99)))
    return float(np.std(r))


def test_pod_jitter_spreads_the_p99_ratio_between_windows():
    base = _p99_ratio_spread(QUIET)
    jitter = _p99_ratio_spread(QUIET.with_(pods=3, pod_jitter=0.2))
    assert jitter > 1.5 * base


def test_pods_are_round_robin_with_their_own_speed():
    """pods=3: every third request shares its process's factor, so the three interleaved
    subsequences have different medians within a window, and different ones in the next."""
    ro = Rollout(np.random.default_rng(4), QUIET.with_(requests=30_000, pods=3, pod_jitter=0.2))
    meds = []
    for _ in range(2):
        x = ro.window()[0].canary.latencies_s
        meds.append(np.array([np.median(x[p::3]) for p in range(3)]))
    for m in meds:
        assert m.max() / m.min() > 1.02  # sd 0.2 in log: three equal factors are all but impossible
    assert not np.allclose(meds[0], meds[1], rtol=0.01)


def test_process_stalls_are_contiguous_and_independent_per_version():
    ro = Rollout(np.random.default_rng(5), QUIET.with_(process_stall_share=1.0, process_stall_s=0.3))
    starts = []
    for _ in range(20):
        w, _ = ro.window()
        for v in (w.stable, w.canary):
            slow = v.latencies_s > 0.15
            # the longest run of slow requests is the stall: 2 % of 3000 requests
            best, cur, end = 0, 0, 0
            for i, s in enumerate(slow):
                cur = cur + 1 if s else 0
                if cur > best:
                    best, end = cur, i
            assert 60 <= best <= 70
            starts.append(end - best + 1)
    st = np.array(starts).reshape(-1, 2)
    assert np.mean(st[:, 0] != st[:, 1]) > 0.9  # not the same instants in both versions


def test_canary_error_bursts_hit_the_stated_share_of_windows():
    share, rate = 0.2, 0.05
    ro = Rollout(np.random.default_rng(6), Scenario(requests=1000, canary_error_rate=0.001,
                                                    canary_error_bursts=(share, rate)))
    burst, high, stable_high = [], [], []
    for _ in range(1000):
        w, s = ro.window()
        burst.append(ro.burst)
        high.append(w.canary.errors / w.canary.requests > 0.02)
        stable_high.append(w.stable.errors / w.stable.requests > 0.02)
        np.testing.assert_allclose(s["error_rate"][1].mean() * 1000, w.canary.errors)  # in the series too
    assert np.mean(burst) == pytest.approx(share, abs=0.04)
    assert burst == high  # 5 % vs 0.1 % of 1000 requests: the burst windows are the high ones
    assert not any(stable_high)  # canary-only


def test_latency_and_error_paths_change_the_canary_per_window():
    path = (1.0, 2.0, 3.0)
    ro = Rollout(np.random.default_rng(7), QUIET.with_(requests=10_000, latency_path=path, error_path=(0.0, 0.5)))
    ro.golden_window()  # not a load window: does not advance the path
    for k, want in enumerate((1.0, 2.0, 3.0, 3.0, 3.0), start=1):
        w, s = ro.window()
        assert ro.k == k and ro.latency_scale(k) == want
        ratio = np.median(w.canary.latencies_s) / np.median(w.stable.latencies_s)
        assert ratio == pytest.approx(want, rel=0.05)
        err = w.canary.errors / w.canary.requests
        assert (err == 0.0) if k == 1 else err == pytest.approx(0.5, abs=0.03)
    drift = Scenario(latency_path=tuple(np.linspace(1, 2, 20)))
    assert isinstance(drift.latency_path, tuple) and drift.latency_path[-1] == 2.0
    hash(drift)  # usable as a cache key


def test_diurnal_moves_both_versions_together():
    ro = Rollout(np.random.default_rng(8), QUIET.with_(requests=10_000, diurnal=0.3))
    med = {}
    for k in range(1, 19):
        w, _ = ro.window()
        med[k] = (np.median(w.stable.latencies_s), np.median(w.canary.latencies_s))
    for v in (0, 1):
        assert med[6][v] / med[18][v] == pytest.approx(1.3 / 0.7, rel=0.05)  # sin peaks at 6, troughs at 18
    assert med[6][1] / med[6][0] == pytest.approx(1.0, rel=0.05)


def test_gate_quality_one_still_runs():
    from bench.gate_quality import one

    out = one((Scenario(), 3))
    assert len(out) == 4 and all(x is None or 1 <= x <= 20 for x in out[:3]) and isinstance(out[3], bool)


def test_gate_dependence_rollout_runs():
    from bench.gate_dependence import one, rows, summarize
    from bench.gate_quality import _config

    rs = rows(1531, windows=3)
    assert {r.group for r in rs} >= {"A/A", "at alert", "at rollback", "drift", "stages", "low traffic",
                                     "golden set", "gross"}
    row = next(r for r in rs if r.group == "gross" and "canary down" in r.name)
    res = [one((row.sc, row.cfg or _config(), 3, s)) for s in range(2)]
    for ours, end, ever, fixed, kay in res:
        assert ours is None or 0 <= ours <= 3
        assert not end or ever
    r = summarize(res)
    assert r.n == 2 and 0.0 <= r.fail <= 100.0
