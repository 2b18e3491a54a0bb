"""`python -m bench [NAME ...]` (`make bench`): run the benchmarks, print their tables.

With no name, every benchmark runs in turn (about 20 minutes on 2 cores).
Each one is also a script of its own with options: `python -m bench.NAME --help`.
"""

from __future__ import annotations

import importlib
import sys
import time

BENCHMARKS = {
    "gate_quality": "fail rates at alert and rollback on heavy-tailed bursty rollouts, fixed-threshold and Kayenta",
    "gate_dependence": "the gate on dependent data: pod jitter, AR(1), stalls, error bursts, drift, stages, too little data",
    "aa_rollouts": "20 Flagger rollouts of identical models, the canary on 1-3 processes at one address: none rolled back",
    "hooks_stalled": "hook answer times with a stalled canary and a Prometheus that never answers",
    "gate_speed": "cost of one look at window 1, 100 and 1000; the run state's size",
    "load_capacity": "highest rate the load generator holds, client CPU per 1000 requests",
    "load_vs_hey": "our p99 and hey's next to the true p99, normal and with a 1 s stall every 10 s",
    "webhook_latency": "webhook answer time with 50 analyses running, each hook every 10 s",
    "prerollout_burst": "pre-rollout answer time, p50 and p99, with 20 analyses starting together",
    "replicas": "200 Flagger canaries on 1 and 3 replicas over one PostgreSQL: hook p99, admission, blame, load",
    "front_slow_clients": "/healthz and hook answer time with 200 connections held open that never finish",
    "report_render": "report page of a run at 10, 100 and 1000 windows: server-side time, page weight",
    "store_footprint": "run store bytes per window and per run before and after compaction; a year projected",
    "runtime_footprint": "runtime image without TensorFlow: installed size, idle RSS of shadowgate serve",
}


def main(argv: list[str] | None = None) -> int:
    names = list(sys.argv[1:] if argv is None else argv)
    if names in (["-h"], ["--help"]):
        print(__doc__)
        for name, text in BENCHMARKS.items():
            print(f"  {name:<16} {text}")
        return 0
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    status = 0
    for name in names or list(BENCHMARKS):
        print(f"\n## {name}: {BENCHMARKS[name]}\n", flush=True)
        start = time.monotonic()
        result = importlib.import_module(f"bench.{name}").main([])
        if isinstance(result, int) and result != 0:
            status = result
        print(f"\n({name} took {time.monotonic() - start:.0f} s)", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
