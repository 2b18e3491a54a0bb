"""Decision quality of the judge on simulated canaries: false fails, power, time to detect.

    .venv/bin/python -m bench.judge_quality            # full run (a few minutes)
    .venv/bin/python -m bench.judge_quality --quick    # 5x fewer simulations

Prints Markdown tables:

1. Per step: identical versions (A/A) and each regression, judged by a
   fixed-threshold check (Flagger-style), by Kayenta's Mann-Whitney judge
   (confidence 0.98, tolerance 0.25) and by Shadowgate's step verdict.
2. Per rollout of 10 steps judged the way the service judges them: a
   verdict after every step on all data so far (`judge_run`); the
   baselines judge every step and fail the rollout at the first failure.
3. Time to detect gross regressions, in steps and probes.

Every row names the configuration it uses. Sizes per step: 3000 load
requests per version, 300 paired probes, 50,000 impressions per version,
16 input features against a 1000-row reference (see bench/sim.py).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from tqdm import tqdm

from analyses.config import JudgeConfig, load_judge_config
from analyses.judge import judge, judge_run

from .judge_baselines import fixed_threshold_judge, kayenta_judge
from .sim import Scenario, reference_set, simulate_step

BASE = Scenario()

# (row, scenario, the check that must fail, our config overrides, what the config changes)
P99_CFG = {"latency": {"max_ratio": 1.2, "first_look_max_ratio": None}}
POWER_ROWS = [
    ("P99 +40%", BASE.with_(latency_scale=1.4), "latency_p99", P99_CFG, "latency.max_ratio 1.2"),
    ("accuracy -3 points", BASE.with_(accuracy_drop=0.03), "accuracy", {}, "defaults (max_drop 0.02)"),
    ("error rate 2%", BASE.with_(canary_error_rate=0.02), "error_rate", {}, "defaults (max 0.01)"),
    ("CTR -20%", BASE.with_(ctr_ratio=0.8), "ctr", {}, "defaults (min_ratio 0.85)"),
    ("input feature +1 SD", BASE.with_(input_shift=1.0), "input_drift", {}, "defaults (evidently ks, p<=0.05 per column)"),
]
# Step table only: a regression of the tail alone (the median does not move),
# and the same regressions with the samples one step needs for 95 % power.
SIZED_ROWS = [
    ("P99 +40%, slower tail only", BASE.with_(tail_scale=1.4), "latency_p99", P99_CFG, "latency.max_ratio 1.2"),
    ("P99 +40%, 10,000 requests per version", BASE.with_(latency_scale=1.4, requests=10_000), "latency_p99",
     P99_CFG, "latency.max_ratio 1.2"),
    ("accuracy -3 points, 2,000 probes", BASE.with_(accuracy_drop=0.03, probes=2000), "accuracy", {},
     "defaults (max_drop 0.02)"),
    ("CTR -20%, 100,000 impressions per version", BASE.with_(ctr_ratio=0.8, impressions=100_000), "ctr", {},
     "defaults (min_ratio 0.85)"),
]
# a row's regression is detected when any of these checks fails
DETECTED_BY = {"error_rate": ("error_rate", "error_rate_vs_stable")}

GROSS_ROWS = [
    ("P99 x2", BASE.with_(latency_scale=2.0), {}, "defaults (first look allows 2x)"),
    ("P99 x2", BASE.with_(latency_scale=2.0), {"latency": {"first_look_max_ratio": None}}, "first_look_max_ratio off (1.5x)"),
    ("accuracy -10 points", BASE.with_(accuracy_drop=0.10), {}, "defaults"),
    ("10% errors", BASE.with_(canary_error_rate=0.10), {}, "defaults"),
]

FIXED_METRIC = {"latency_p99": "latency_p99", "accuracy": "accuracy", "error_rate": "error_rate", "ctr": "ctr",
                "input_drift": "input_drift"}


def _cfg(overrides: dict) -> JudgeConfig:
    return load_judge_config(overrides)


def _detected(v, check: str | None) -> bool:
    if check is None:
        return v.outcome == "fail"
    return any(c.verdict == "fail" for c in v.checks if c.name in DETECTED_BY.get(check, (check,)))


def _fixed(window, cfg: JudgeConfig) -> dict[str, bool]:
    return fixed_threshold_judge(window, max_ratio=cfg.latency.max_ratio, max_error=cfg.errors.max,
                                 max_drop=cfg.accuracy.max_drop, min_ctr_ratio=cfg.ctr.min_ratio)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def step_table(n_steps: int, n_power: int, seed: int, bar) -> tuple[list[str], dict]:
    rng = np.random.default_rng(seed)
    ref = reference_set(rng, BASE)
    aa = [simulate_step(rng, BASE, ref) for _ in range(n_steps)]
    rows = []
    figures = {}

    # A/A under the default configuration and under every power row's configuration
    configs = [("defaults", {})] + [(label, ov) for (_, _, _, ov, label) in POWER_ROWS if ov]
    for label, ov in configs:
        cfg = _cfg(ov)
        fixed_any = kay_any = ours_fail = ours_notpass = 0
        for st in aa:
            fixed_any += any(_fixed(st.window, cfg).values())
            kay_any += any(kayenta_judge(st.series).values())
            v = judge(st.window, cfg)
            ours_fail += v.outcome == "fail"
            ours_notpass += v.outcome != "pass"
            bar.update(1)
        figures[f"aa_step[{label}]"] = ours_notpass / n_steps
        rows.append(f"| A/A (identical versions) | {label} | {_pct(fixed_any / n_steps)} | {_pct(kay_any / n_steps)} "
                    f"| {_pct(ours_fail / n_steps)} fail, {_pct(ours_notpass / n_steps)} not pass |")

    for name, sc, check, ov, label in POWER_ROWS + SIZED_ROWS:
        cfg = _cfg(ov)
        fixed_hit = kay_hit = ours_hit = ours_notpass = 0
        kay_metric = check if check != "input_drift" else None
        for _ in range(n_power):
            st = simulate_step(rng, sc, ref)
            fixed_hit += _fixed(st.window, cfg)[FIXED_METRIC[check]]
            if kay_metric:
                kay_hit += kayenta_judge({kay_metric: st.series[kay_metric]})[kay_metric]
            v = judge(st.window, cfg)
            ours_hit += _detected(v, check)
            ours_notpass += v.outcome != "pass"
            bar.update(1)
        figures[f"power_step[{name}]"] = ours_hit / n_power
        kay = _pct(kay_hit / n_power) if kay_metric else "n/a (no such metric)"
        rows.append(f"| {name} | {label} | {_pct(fixed_hit / n_power)} | {kay} | {_pct(ours_hit / n_power)} "
                    f"({' or '.join(DETECTED_BY.get(check, (check,)))} fails; "
                    f"{_pct(ours_notpass / n_power)} not pass) |")
    head = ["| scenario (one step) | our config | fixed threshold | Kayenta MW (0.98, 0.25) | Shadowgate step verdict |",
            "|---|---|---|---|---|"]
    return head + rows, figures


def _rollout(rng, sc: Scenario, ref, cfg: JudgeConfig, steps: int, check: str | None):
    """First failing look (or None) for: ours (judge_run), fixed threshold, Kayenta."""
    windows, first = [], {"ours": None, "fixed": None, "kayenta": None}
    for k in range(1, steps + 1):
        st = simulate_step(rng, sc, ref)
        windows.append(st.window)
        if first["ours"] is None:
            if _detected(judge_run(windows, cfg), check):
                first["ours"] = k
        if first["fixed"] is None:
            f = _fixed(st.window, cfg)
            if (f[FIXED_METRIC[check]] if check else any(f.values())):
                first["fixed"] = k
        if first["kayenta"] is None:
            kj = kayenta_judge(st.series)
            if (kj.get(check, False) if check else any(kj.values())):
                first["kayenta"] = k
        if check is not None and first["ours"] and first["fixed"] and (first["kayenta"] or check == "input_drift"):
            break
    return first


def run_table(n_rollouts: int, n_power: int, steps: int, seed: int, bar) -> tuple[list[str], dict]:
    rng = np.random.default_rng(seed + 1)
    ref = reference_set(rng, BASE)
    rows, figures = [], {}
    cfg = _cfg({})
    firsts = [_rollout(rng, BASE, ref, cfg, steps, None) for _ in _ticks(n_rollouts, bar)]

    def rate(key):
        return sum(f[key] is not None for f in firsts) / len(firsts)

    figures["aa_run"] = rate("ours")
    rows.append(f"| A/A (identical versions), {n_rollouts} rollouts | defaults | {_pct(rate('fixed'))} | "
                f"{_pct(rate('kayenta'))} | {_pct(rate('ours'))} | "
                f"{' / '.join(_pct(sum(f['ours'] is not None and f['ours'] <= k for f in firsts) / len(firsts)) for k in (1, 2, 3))} |")
    for name, sc, check, ov, label in POWER_ROWS:
        cfg = _cfg(ov)
        fs = [_rollout(rng, sc, ref, cfg, steps, check) for _ in _ticks(n_power, bar)]
        hit = np.array([f["ours"] if f["ours"] is not None else steps + 1 for f in fs])
        power = float(np.mean(hit <= steps))
        figures[f"power_run[{name}]"] = power
        kay = _pct(sum(f["kayenta"] is not None for f in fs) / len(fs)) if check != "input_drift" else "n/a"
        by = " / ".join(_pct(float(np.mean(hit <= k))) for k in (1, 2, 3))
        rows.append(f"| {name}, {n_power} rollouts | {label} | {_pct(sum(f['fixed'] is not None for f in fs) / len(fs))} "
                    f"| {kay} | {_pct(power)} | {by} |")
    head = [f"| scenario ({steps} steps, verdict after every step) | our config | fixed threshold, any step | "
            "Kayenta MW, any step | Shadowgate judge_run, any step | Shadowgate by step 1 / 2 / 3 |",
            "|---|---|---|---|---|---|"]
    return head + rows, figures


def _ticks(n: int, bar):
    for i in range(n):
        yield i
        bar.update(1)


def detect_table(n: int, steps: int, seed: int, bar) -> tuple[list[str], dict]:
    rng = np.random.default_rng(seed + 2)
    ref = reference_set(rng, BASE)
    rows, figures = [], {}
    for name, sc, ov, label in GROSS_ROWS:
        cfg = _cfg(ov)
        ks = []
        for _ in _ticks(n, bar):
            windows = []
            k_fail = None
            for k in range(1, steps + 1):
                windows.append(simulate_step(rng, sc, ref).window)
                if judge_run(windows, cfg).outcome == "fail":
                    k_fail = k
                    break
            ks.append(k_fail if k_fail is not None else steps + 1)
        ks = np.array(ks)
        first = float(np.mean(ks == 1))
        figures[f"detect[{name} | {label}]"] = first
        rows.append(f"| {name} | {label} | {_pct(first)} | {np.median(ks):g} ({np.median(ks) * BASE.probes:.0f} probes) "
                    f"| {np.percentile(ks, 95):.0f} | {_pct(float(np.mean(ks <= steps)))} |")
    head = ["| gross regression | config | fails at step 1 | median steps to fail | 95th pct steps | fails within 10 steps |",
            "|---|---|---|---|---|---|"]
    return head + rows, figures


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000, help="simulated A/A steps")
    ap.add_argument("--power-steps", type=int, default=500, help="simulated steps per regression row")
    ap.add_argument("--rollouts", type=int, default=1000, help="A/A rollouts for the run table")
    ap.add_argument("--power-rollouts", type=int, default=200, help="rollouts per regression row")
    ap.add_argument("--detect", type=int, default=200, help="rollouts per gross regression")
    ap.add_argument("--quick", action="store_true", help="5x fewer simulations")
    ap.add_argument("--seed", type=int, default=20240601)
    a = ap.parse_args(argv)
    if a.quick:
        a.steps, a.power_steps, a.rollouts = a.steps // 5, a.power_steps // 5, a.rollouts // 5
        a.power_rollouts, a.detect = a.power_rollouts // 5, a.detect // 5
    n_cfg = 1 + sum(1 for r in POWER_ROWS if r[3])
    total = a.steps * n_cfg + a.power_steps * (len(POWER_ROWS) + len(SIZED_ROWS)) + a.rollouts + a.power_rollouts * len(POWER_ROWS) + a.detect * len(GROSS_ROWS)
    t0 = time.perf_counter()
    with tqdm(total=total, desc="simulating", unit="sim", mininterval=2.0) as bar:
        t1, f1 = step_table(a.steps, a.power_steps, a.seed, bar)
        t2, f2 = run_table(a.rollouts, a.power_rollouts, 10, a.seed, bar)
        t3, f3 = detect_table(a.detect, 10, a.seed, bar)
    print(f"\n### One step ({a.steps} A/A steps, {a.power_steps} steps per regression; share of steps that fail)\n")
    print("\n".join(t1))
    print(f"\n### Rollouts judged after every step on all data so far (share of rollouts that fail)\n")
    print("\n".join(t2))
    print(f"\n### Time to detect a gross regression ({a.detect} rollouts per row, default sizes per step)\n")
    print("\n".join(t3))
    print(f"\n({time.perf_counter() - t0:.0f} s; seed {a.seed}; sizes per step: {BASE.requests} requests per version, "
          f"{BASE.probes} probes, {BASE.impressions} impressions per version, {BASE.features} features)")
    return {**f1, **f2, **f3}


if __name__ == "__main__":
    main()
