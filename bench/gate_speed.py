"""Cost of one look at a run, at window 1, 100 and 1000, and the run state's size.

    .venv/bin/python -m bench.gate_speed [--windows 1000]

A look is what the service does when a window closes: one gate update with
the window (3000 requests per version, 300 probe pairs) and reading the
decision. The run state holds sums and the golden rows seen, never earlier
windows, so a look at window 1000 costs what a look at window 1 costs and
the state's size stops growing once every golden row was seen.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc

import numpy as np

from analyses.config import JudgeConfig
from analyses.gate import Gate

from .gate_sim import Rollout, Scenario


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=1000)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(11)
    sc = Scenario()
    ro = Rollout(rng, sc)
    pool = [ro.window()[0] for _ in range(20)]  # the same windows again and again: the cost is the gate's
    gate = Gate(JudgeConfig(), golden_rows=sc.golden_rows)
    gate.update(gate.new_state(), pool[0])  # first-call imports and caches are not a look's cost
    state = gate.new_state()
    marks = {1, 10, 100, args.windows}
    costs: dict[int, list[float]] = {}
    for k in range(1, args.windows + 1):
        w = pool[k % len(pool)]
        t = time.perf_counter()
        gate.update(state, w)
        gate.verdict(state)
        dt = time.perf_counter() - t
        for m in marks:
            if m - 2 <= k <= m + 2:  # five looks around each mark
                costs.setdefault(m, []).append(dt)
        if k == 1:
            size_1 = len(json.dumps(state.to_dict()))
    size_n = len(json.dumps(state.to_dict()))
    # memory in a second pass: tracing slows every allocation, so not while timing
    tracemalloc.start()
    state = gate.new_state()
    for k in range(1, args.windows + 1):
        gate.update(state, pool[k % len(pool)])
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print("| look at window | median ms (5 looks) |")
    print("|---|---|")
    for m in sorted(costs):
        print(f"| {m} | {1000 * statistics.median(costs[m]):.2f} |")
    print(f"\nrun state: {size_1:,} bytes of JSON after window 1, {size_n:,} after window {args.windows} "
          f"(golden set of {sc.golden_rows} rows); Python heap allocated by the run and still held "
          f"after {args.windows} windows: {current / 1e6:.2f} MB (peak {peak / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
