"""Decision quality of the gate on simulated rollouts, at the thresholds themselves.

    .venv/bin/python -m bench.gate_quality              # 1000 rollouts per row (a few minutes)
    .venv/bin/python -m bench.gate_quality --rollouts 200

Each rollout is what the service measures: the pre-rollout golden check
(every golden row once on both versions), then 20 windows (3000 requests
per version, 300 probe pairs, 50,000 impressions; heavy-tailed latency with
bursts that hit both versions, see bench/gate_sim.py), judged after every
window. Rows:

- identical versions (A/A): the run must fail in <= 0.5 % of rollouts;
- a canary exactly at `alert` on one check: <= alpha (1 %);
- exactly at `rollback`: passes (at the end) in <= beta (5 %); how many
  fail within the 20 windows, and how fast, is shown beside it;
- gross regressions: >= 99 % fail (errors, accuracy and a dead canary at
  once, latency within a few windows);
- accuracy with the golden set `shadowgate plan` asks for, and with the
  demo's 360 rows (which cannot separate 2 from 5 points: the plan says so).

Beside the gate, on the same data: a fixed threshold on each window's point
estimate at the rollback values (Flagger-style: fail at the first crossing)
and Kayenta's Mann-Whitney judge (confidence 0.98, tolerance 0.25) on the
per-minute series of each window.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

from analyses.config import JudgeConfig
from analyses.gate import Gate
from analyses.plan import accuracy_plan

from .gate_sim import Rollout, Scenario
from .judge_baselines import kayenta_judge

WINDOWS = 20
BASE = Scenario()


def _config() -> JudgeConfig:
    return JudgeConfig(drift={"enabled": False})


def plan_rows(cfg: JudgeConfig) -> int:
    gate = Gate(cfg, golden_rows=1000)
    return accuracy_plan(cfg, 1000, gate.alphas["accuracy"]).rows_needed


def rows(golden: int) -> list[tuple[str, str, Scenario, str]]:
    """(group, row name, scenario, expectation)."""
    b = BASE.with_(golden_rows=golden)
    return [
        ("A/A", "identical versions", b, "<= 0.5 % fail"),
        ("A/A", "identical, stalls of up to 3 % of requests in half the windows",
         b.with_(burst_share=0.5, burst_max=0.03), "<= 0.5 % fail"),
        ("A/A", "identical, no bursts", b.with_(burst_share=0.0), "<= 0.5 % fail"),
        ("at alert", "P99 1.5x (whole distribution)", b.with_(latency_scale=1.5), "<= 1 % fail"),
        ("at alert", "P99 1.5x (tail only)", b.with_(tail_p99_ratio=1.5), "<= 1 % fail"),
        ("at alert", "error rate 0.5 %", b.with_(canary_error_rate=0.005), "<= 1 % fail"),
        ("at alert", f"accuracy -2 points ({golden} rows)", b.with_(accuracy_drop=0.02), "<= 1 % fail"),
        ("at alert", "accuracy -2 points (360 rows)", b.with_(accuracy_drop=0.02, golden_rows=360), "<= 1 % fail"),
        ("at alert", "CTR -15 %", b.with_(ctr_ratio=0.85), "<= 1 % fail"),
        ("at rollback", "P99 2x (whole distribution)", b.with_(latency_scale=2.0), "<= 5 % pass"),
        ("at rollback", "P99 2x (tail only)", b.with_(tail_p99_ratio=2.0), "<= 5 % pass"),
        ("at rollback", "error rate 1 %", b.with_(canary_error_rate=0.01), "<= 5 % pass"),
        ("at rollback", f"accuracy -5 points ({golden} rows)", b.with_(accuracy_drop=0.05), "<= 5 % pass"),
        ("at rollback", "accuracy -5 points (360 rows)", b.with_(accuracy_drop=0.05, golden_rows=360),
         "<= 5 % pass (undecided: set too small)"),
        ("at rollback", "CTR -30 %", b.with_(ctr_ratio=0.7), "<= 5 % pass"),
        ("gross", "P99 3x", b.with_(latency_scale=3.0), ">= 99 % fail"),
        ("gross", "P99 3x, no bursts", b.with_(latency_scale=3.0, burst_share=0.0), ">= 99 % fail"),
        ("gross", "error rate 10 %", b.with_(canary_error_rate=0.10), ">= 99 % fail"),
        ("gross", "accuracy -10 points", b.with_(accuracy_drop=0.10), ">= 99 % fail in window 1"),
        ("gross", "canary down", b.with_(canary_down=True), ">= 99 % fail in window 1"),
    ]


def _fixed(w) -> bool:
    """Fixed thresholds at the rollback values on the window's point estimates."""
    from analyses.gate import with_errors

    s, c = with_errors(w.stable), with_errors(w.canary)
    p99 = np.quantile(c, 0.99) / np.quantile(s, 0.99) > 2.0
    err = w.canary.errors / w.canary.requests > 0.01
    pr = w.probes
    ok = pr.canary_pred >= 0
    drop = np.mean(pr.stable_pred == pr.labels) - (np.mean(pr.canary_pred[ok] == pr.labels[ok]) if ok.any() else 0)
    ctr = (w.ctr.canary_clicks / w.ctr.stable_clicks) < 0.7
    return bool(p99 or err or drop > 0.05 or ctr)


def one(args) -> tuple[int | None, int | None, int | None, bool]:
    """(window the gate failed, fixed threshold failed, Kayenta failed, gate passing at the end), None for never."""
    sc, seed = args
    rng = np.random.default_rng(seed)
    ro = Rollout(rng, sc)
    cfg = _config()
    gate = Gate(cfg, golden_rows=sc.golden_rows)
    state = gate.new_state()
    ours = fixed = kay = None
    gate.update(state, ro.golden_window())
    if state.outcome == "fail":
        ours = 1
    for k in range(1, WINDOWS + 1):
        w, series = ro.window()
        if ours is None:
            gate.update(state, w)
            if state.outcome == "fail":
                ours = k
        if fixed is None and _fixed(w):
            fixed = k
        if kay is None and any(kayenta_judge({k: v for k, v in series.items() if k != "ctr"}).values()):
            kay = k
        if ours is not None and fixed is not None and kay is not None:
            break
    return ours, fixed, kay, state.outcome == "pass"


def _rate(xs, within=WINDOWS) -> float:
    return 100.0 * sum(1 for x in xs if x is not None and x <= within) / len(xs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rollouts", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args(argv)
    cfg = _config()
    golden = plan_rows(cfg)
    print(f"alpha {cfg.alpha}, beta {cfg.beta}; {args.rollouts} rollouts of {WINDOWS} windows per row; "
          f"golden set {golden} rows (what `shadowgate plan` asks for) unless the row says otherwise\n")
    print("| group | canary | expected | gate: fail % | gate: pass % (at the end) | gate: fail % by window 1 | "
          "by window 5 | gate: median windows to fail | fixed threshold fail % | Kayenta fail % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    t0 = time.monotonic()
    status = 0
    with mp.get_context("fork").Pool(args.processes) as pool:
        for i, (group, name, sc, expect) in enumerate(rows(golden)):
            jobs = [(sc, args.seed * 1_000_003 + i * 10_007 + r) for r in range(args.rollouts)]
            res = pool.map(one, jobs, chunksize=25)
            ours = [r[0] for r in res]
            failed = [x for x in ours if x is not None]
            med = f"{np.median(failed):.0f}" if failed else "-"
            passed = 100.0 * sum(1 for r in res if r[3]) / len(res)
            print(f"| {group} | {name} | {expect} | {_rate(ours):.1f} | {passed:.1f} | {_rate(ours, 1):.1f} | "
                  f"{_rate(ours, 5):.1f} | {med} | "
                  f"{_rate([r[1] for r in res]):.1f} | {_rate([r[2] for r in res]):.1f} |", flush=True)
    print(f"\n({time.monotonic() - t0:.0f} s)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
