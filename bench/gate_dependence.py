"""The gate's guarantees on dependent data: process jitter, autocorrelation, stalls, bursts, drift.

    .venv/bin/python -m bench.gate_dependence                    # 1000 rollouts per row
    .venv/bin/python -m bench.gate_dependence --rollouts 100 --only "at alert"

bench/gate_quality.py checks the gate where the simulation's requests are
nearly independent. Here the data have the dependence real deployments
have (the knobs are in bench/gate_sim.py's docstring): each version served
by several processes with their own speed in every window, autocorrelated
latency within a window, stalls of one process of one version,
canary-only error bursts, a diurnal drift of the host, a canary that
drifts or turns bad after the first stage, too little traffic per window,
a golden set too small to decide.

Each rollout: the pre-rollout golden check, then up to `--windows` load
windows (a row may set its own number), judged after every window; the
caller promotes at the end, so a run is judged to the end unless it fails
(a fail is final). Per rollout: the load window of the gate's first
"fail" (0: at the golden check), whether the outcome was "pass" after the
last window ("pass at end") and after any window ("pass ever": the
gate's beta bounds this one), and the first window at which a fixed
threshold on the rollback values and Kayenta's Mann-Whitney judge
(both from bench/gate_quality.py) would have failed the run.

Expectations, compared numerically ("met?"):

- A/A and at alert: gate fail % <= alpha (1 %).
- at rollback: gate pass at end % <= beta (5 %); pass ever is shown beside
  it, and "met?" says "yes (pass ever: no)" when only pass ever breaks the
  bound (a run that passed, then failed later: harmless for a caller who
  promotes at the end, not for one who promotes at the first "pass").
- drift, stages: caught >= 95 %: the canary is not promoted (pass at end
  <= 5 %); the gate fail % beside it says how many were also rolled back
  within the row's windows, and the median windows after the canary
  reached rollback how fast.
- low traffic, golden set too small: 0 % pass (the gate cannot promise
  beta, so it must not promote).
- gross: >= 99 % fail (the median window says how fast).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from analyses.config import JudgeConfig
from analyses.gate import Gate

from .gate_quality import _config, _fixed, plan_rows
from .gate_sim import Rollout, Scenario
from .judge_baselines import kayenta_judge

WINDOWS = 20


@dataclass(frozen=True)
class Expect:
    """One numeric expectation on a row's result: `metric` `op` `value` (percent)."""

    metric: str  # "fail", "pass_end", "pass_ever"
    op: str  # "<=", ">=", "=="
    value: float

    def met(self, res: "RowResult") -> bool:
        x = getattr(res, self.metric)
        return {"<=": x <= self.value + 1e-9, ">=": x >= self.value - 1e-9, "==": abs(x - self.value) < 1e-9}[self.op]


@dataclass
class Row:
    group: str
    name: str
    sc: Scenario
    expect: str  # as printed
    checks: tuple[Expect, ...] = ()
    cfg: JudgeConfig | None = None  # None: bench.gate_quality's (drift off)
    windows: int | None = None  # None: --windows
    crossing: int | None = None  # the load window from which the canary is at rollback (drift)


@dataclass
class RowResult:
    n: int
    fail: float
    pass_end: float
    pass_ever: float
    median: float | None
    median_after: float | None
    fixed: float
    kayenta: float
    fail_windows: list[int] = field(default_factory=list)


def rows(golden: int, windows: int = WINDOWS) -> list[Row]:
    b = Scenario(golden_rows=golden)
    fail1 = (Expect("fail", "<=", 1.0),)
    pass5 = (Expect("pass_end", "<=", 5.0),)
    no_pass = (Expect("pass_end", "==", 0.0), Expect("pass_ever", "==", 0.0))
    caught = (Expect("pass_end", "<=", 5.0),)
    jitter = dict(pods=3, pod_jitter=0.2)
    stalls = dict(process_stall_share=0.3)
    bursts = (0.05, 0.02)
    drift_w = max(windows, 30)
    staged = JudgeConfig(drift={"enabled": False},
                         stages=[{"from_window": 5, "latency": {"alert": 1.2, "rollback": 1.5}}])
    return [
        Row("A/A", "identical versions", b, "fail <= alpha (1 %)", fail1),
        Row("A/A", "identical, 3 processes each, pod jitter 0.2", b.with_(**jitter), "fail <= alpha (1 %)", fail1),
        Row("A/A", "identical, AR(1) 0.9 within windows", b.with_(ar1=0.9), "fail <= alpha (1 %)", fail1),
        Row("A/A", "identical, independent process stalls (30 % of windows per version)", b.with_(**stalls),
            "fail <= alpha (1 %)", fail1),
        Row("A/A", "identical, diurnal 0.3", b.with_(diurnal=0.3), "fail <= alpha (1 %)", fail1),
        Row("at alert", "P99 1.5x, 3 processes, pod jitter 0.2", b.with_(latency_scale=1.5, **jitter),
            "fail <= 1 %", fail1),
        Row("at alert", "P99 1.5x, AR(1) 0.9", b.with_(latency_scale=1.5, ar1=0.9), "fail <= 1 %", fail1),
        Row("at alert", "P99 1.5x, independent process stalls", b.with_(latency_scale=1.5, **stalls),
            "fail <= 1 %", fail1),
        Row("at alert", "error rate 0.2 %, bursts: 5 % of windows at 2 %",
            b.with_(canary_error_rate=0.002, canary_error_bursts=bursts), "fail <= 1 %", fail1),
        Row("at alert", "error rate 0.5 %", b.with_(canary_error_rate=0.005), "fail <= 1 %", fail1),
        Row("at rollback", "P99 2x", b.with_(latency_scale=2.0), "pass <= beta (5 %)", pass5),
        Row("at rollback", "P99 2x, AR(1) 0.9", b.with_(latency_scale=2.0, ar1=0.9), "pass <= beta (5 %)", pass5),
        Row("at rollback", "P99 2x, 3 processes, pod jitter 0.2", b.with_(latency_scale=2.0, **jitter),
            "pass <= beta (5 %)", pass5),
        Row("at rollback", "error rate 1 %, bursts: 5 % of windows at 2 %",
            b.with_(canary_error_rate=0.01, canary_error_bursts=bursts), "pass <= beta (5 %)", pass5),
        Row("drift", f"P99 1.0x -> 2.0x over 20 windows, then 2.0x ({drift_w} windows)",
            b.with_(latency_path=tuple(np.linspace(1.0, 2.0, 20))), "caught >= 95 %", caught,
            windows=drift_w, crossing=20),
        Row("stages", "P99 1.0x for 4 windows, 1.6x from window 5; stage: alert 1.2 rollback 1.5 "
            "from gate window 5 (= load window 4: the golden check is gate window 1)", b.with_(latency_path=(1.0,) * 4 + (1.6,)), "pass at end <= 5 %, caught >= 95 %",
            caught, cfg=staged, crossing=5),
        Row("stages", "P99 1.0x for 4 windows, 2x from window 5; same stages",
            b.with_(latency_path=(1.0,) * 4 + (2.0,)), "pass at end <= 5 %, caught >= 95 %", caught,
            cfg=staged, crossing=5),
        Row("low traffic", "identical, 300 requests per window", b.with_(requests=300),
            "0 % pass (below the P99's minimum)", no_pass),
        Row("golden set", "accuracy -5.8 points, 360 golden rows", b.with_(golden_rows=360, accuracy_drop=0.058),
            "0 % pass (360 rows cannot separate)", no_pass),
        Row("gross", "error rate 10 %", b.with_(canary_error_rate=0.10), ">= 99 % fail", (Expect("fail", ">=", 99.0),)),
        Row("gross", "canary down", b.with_(canary_down=True), ">= 99 % fail", (Expect("fail", ">=", 99.0),)),
        Row("gross", "P99 3x", b.with_(latency_scale=3.0), ">= 99 % fail", (Expect("fail", ">=", 99.0),)),
    ]


def _kayenta_fails(series: dict) -> bool:
    """bench.gate_quality's Kayenta call: any metric but CTR (a constant per-minute series) High/Low."""
    return any(kayenta_judge({k: v for k, v in series.items() if k != "ctr"}).values())


def one(args) -> tuple[int | None, bool, bool, int | None, int | None]:
    """(gate's fail window, pass at end, pass ever, fixed threshold's fail window, Kayenta's), None: never.

    Windows are load windows, 1-based; 0 is a fail at the golden check."""
    sc, cfg, windows, seed = args
    rng = np.random.default_rng(seed)
    ro = Rollout(rng, sc)
    gate = Gate(cfg, golden_rows=sc.golden_rows)
    state = gate.new_state()
    ours = fixed = kay = None
    gate.update(state, ro.golden_window())
    ever = state.outcome == "pass"
    if state.outcome == "fail":
        ours = 0
    for k in range(1, windows + 1):
        w, series = ro.window()
        if ours is None:
            gate.update(state, w)
            if state.outcome == "fail":
                ours = k
            ever = ever or state.outcome == "pass"
        if fixed is None and _fixed(w):
            fixed = k
        if kay is None and _kayenta_fails(series):
            kay = k
        if ours is not None and fixed is not None and kay is not None:
            break
    return ours, state.outcome == "pass", ever, fixed, kay


def _pct(xs) -> float:
    return 100.0 * sum(1 for x in xs if x) / len(xs) if xs else 0.0


def summarize(res: list[tuple], crossing: int | None = None) -> RowResult:
    ours = [r[0] for r in res]
    failed = [x for x in ours if x is not None]
    return RowResult(
        n=len(res),
        fail=_pct([x is not None for x in ours]),
        pass_end=_pct([r[1] for r in res]),
        pass_ever=_pct([r[2] for r in res]),
        median=float(np.median(failed)) if failed else None,
        median_after=float(np.median(failed)) - crossing if failed and crossing is not None else None,
        fixed=_pct([r[3] is not None for r in res]),
        kayenta=_pct([r[4] is not None for r in res]),
        fail_windows=failed,
    )


def _met(row: Row, r: RowResult) -> str:
    if not row.checks:
        return "-"
    bad = [c for c in row.checks if not c.met(r)]
    # the gate's beta bounds "pass ever"; the caller who promotes at the end sees "pass at end"
    ever = [Expect("pass_ever", c.op, c.value) for c in row.checks if c.metric == "pass_end"]
    if bad:
        return "no (pass ever only)" if {c.metric for c in bad} == {"pass_ever"} else "no"
    if any(not c.met(r) for c in ever):
        return "yes (pass ever: no)"
    return "yes"


def _seed(base: int, row: Row) -> int:
    """Per row, stable when rows are added or removed."""
    return base * 1_000_003 + zlib.crc32(f"{row.group}|{row.name}".encode()) * 10_007


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rollouts", type=int, default=1000)
    ap.add_argument("--windows", type=int, default=WINDOWS, help="load windows per rollout (rows may set more)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--only", default=None, help="rows whose group or name contains this (case-insensitive)")
    args = ap.parse_args(argv)
    cfg = _config()
    golden = plan_rows(cfg)
    todo = [r for r in rows(golden, args.windows)
            if args.only is None or args.only.lower() in f"{r.group} {r.name}".lower()]
    if not todo:
        ap.error(f"no row matches {args.only!r}")
    print(f"alpha {cfg.alpha}, beta {cfg.beta}; {args.rollouts} rollouts per row, {args.windows} load windows "
          f"unless the row says otherwise; golden set {golden} rows (what `shadowgate plan` asks for) unless the "
          "row says otherwise. Median window: load windows, 0 = the golden check; (+k): k windows after the "
          "canary reached rollback.\n")
    print("| group | canary | expected | gate fail % | gate pass at end % | gate pass ever % | median windows to fail "
          "| fixed threshold fail % | Kayenta fail % | met? |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    t0 = time.monotonic()
    unmet = 0
    with mp.get_context("fork").Pool(args.processes) as pool:
        for row in todo:
            windows = row.windows or args.windows
            rcfg = row.cfg or cfg
            seed = _seed(args.seed, row)
            jobs = [(row.sc, rcfg, windows, seed + r) for r in range(args.rollouts)]
            r = summarize(pool.map(one, jobs, chunksize=max(1, min(25, args.rollouts // (4 * args.processes)))),
                          row.crossing)
            med = "-" if r.median is None else f"{r.median:.0f}"
            if r.median_after is not None:
                med += f" ({r.median_after:+.0f})"
            met = _met(row, r)
            unmet += met.startswith("no")
            print(f"| {row.group} | {row.name} | {row.expect} | {r.fail:.1f} | {r.pass_end:.1f} | {r.pass_ever:.1f} | "
                  f"{med} | {r.fixed:.1f} | {r.kayenta:.1f} | {met} |", flush=True)
    print(f"\n({time.monotonic() - t0:.0f} s wall, {args.processes} processes; {unmet} of {len(todo)} rows "
          "not as expected)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
