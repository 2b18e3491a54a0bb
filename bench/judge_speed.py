"""Judge time for one step, as the service calls it.

    .venv/bin/python -m bench.judge_speed

One window with 100,000 latency samples per version, 300 paired probes
with 10 class scores and 64 input features (the demo model's shape)
against a 1000-row reference set; every check enabled. Prints a Markdown
table of the median and 95th percentile time of `judge` and of
`judge_run` at the 10th look; the goal is under 50 ms for one step.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from tqdm import tqdm

from analyses.config import JudgeConfig
from analyses.judge import judge, judge_run

from .sim import Scenario, reference_set, simulate_step


def _time(fn, repeat: int, bar) -> tuple[float, float]:
    fn()  # warm caches and imports: the service judges many windows
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1000.0)
        bar.update(1)
    return float(np.median(ts)), float(np.percentile(ts, 95))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(1)
    cfg = JudgeConfig()
    rows, figures = [], {}
    cases = [
        ("one step, 100,000 latencies per version", Scenario(requests=100_000, features=64), 1),
        ("one step, 3,000 latencies per version", Scenario(requests=3000, features=64), 1),
        ("run of 10 windows of 10,000 latencies (judge_run)", Scenario(requests=10_000, features=64), 10),
    ]
    with tqdm(total=a.repeat * len(cases), desc="timing", unit="judge", mininterval=2.0) as bar:
        for name, sc, looks in cases:
            ref = reference_set(rng, sc)
            windows = [simulate_step(rng, sc, ref).window for _ in range(looks)]
            if looks == 1:
                med, p95 = _time(lambda: judge(windows[0], cfg), a.repeat, bar)
            else:
                med, p95 = _time(lambda: judge_run(windows, cfg), a.repeat, bar)
            figures[name] = med
            rows.append(f"| {name} | {med:.1f} | {p95:.1f} |")
    print("\n| judged | median ms | p95 ms |\n|---|---|---|")
    print("\n".join(rows))
    print(f"\n(12 checks, 300 probes x 64 features per window, {a.repeat} repeats, one core)")
    return figures


if __name__ == "__main__":
    main()
