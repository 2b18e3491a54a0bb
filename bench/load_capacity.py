"""How much open-loop load one client process (and all cores) can hold.

A rate is "held" when the run kept its timetable: at least 99 % of the
scheduled requests left, at most 1 % of them had to wait for the
concurrency cap, and at least 99 % of them succeeded. For each setup the
rate climbs until one is not held; the script prints the highest held
rate and the client's CPU time per 1000 requests there.

Setups:
- gRPC and REST against a minimal server answering a fixed PredictResponse
  (`loadtest.echo`, in its own process), so the figure is the client's own
  limit rather than a model's: one worker, then one worker per core;
- the stand-in TF Serving with the demo SavedModel (about 1 ms per call),
  for its capacity beside the client's.

On a 2-core machine the server shares the cores with the client, so the
"all cores" figure is bounded by the machine, not by the client alone.

    python bench/load_capacity.py [--step-s 4] [--rates 500,1000,...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from loadtest.echo import EchoProcess  # noqa: E402
from loadtest.schedule import Schedule  # noqa: E402
from loadtest.wire import Target, build_payloads  # noqa: E402
from loadtest.workers import LoadSpec, run_spec, run_workers  # noqa: E402


def held(stats) -> bool:
    """The timetable was kept: >= 99 % left, <= 1 % waited for the cap, >= 99 % OK."""
    n = stats.intended
    return n > 0 and stats.sent >= 0.99 * n and stats.late <= 0.01 * n and stats.ok >= 0.99 * n


def measure(spec: LoadSpec, workers: int) -> tuple[object, float]:
    """Run once; returns (stats, client CPU seconds per 1000 requests, from inside the load processes)."""
    stats = asyncio.run(run_spec(spec)) if workers == 1 else run_workers(spec, workers)
    return stats, stats.cpu_per_1000() or float("nan")


def climb(target: Target, rows: np.ndarray, rates: list[float], step_s: float, workers: int,
          label: str) -> dict:
    payloads = tuple(build_payloads(target, rows, "x"))
    best = None
    print(f"\n{label} ({workers} worker{'s' if workers > 1 else ''}):", flush=True)
    for rate in rates:
        spec = LoadSpec(target, payloads, Schedule.constant(rate, step_s), concurrency=256,
                        warmup_s=1.0, timeout_s=5.0, connections=2 if target.protocol == "grpc" else None)
        stats, cpu_per_k = measure(spec, workers)
        ok = held(stats)
        print(f"  {rate:>7.0f} rps: achieved {stats.achieved_rps:8.1f}, late {stats.late:6d}, "
              f"errors {stats.errors:5d}, p99 corrected {stats.corrected.quantile(0.99) * 1e3:8.2f} ms, "
              f"client CPU {cpu_per_k * 1e3:6.1f} ms / 1000 req  {'held' if ok else 'NOT held'}",
              flush=True)
        if not ok:
            break
        best = (rate, cpu_per_k, stats)
    if best is None:
        return {"setup": label, "workers": workers, "held_rps": 0.0, "cpu_ms_per_1000": None}
    return {"setup": label, "workers": workers, "held_rps": best[0], "cpu_ms_per_1000": best[1] * 1e3,
            "p99_corrected_ms": best[2].corrected.quantile(0.99) * 1e3}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--step-s", type=float, default=4.0, help="seconds per rate step")
    p.add_argument("--rates", default="500,1000,1500,2000,2500,3000,3500,4000,5000,6000",
                   help="rates to climb through, requests/s")
    p.add_argument("--model-rates", default="100,200,300,400,500,600,800,1000,1200,1500",
                   help="rates for the stand-in TF Serving, requests/s")
    p.add_argument("--skip-modelserver", action="store_true")
    args = p.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    cores = os.cpu_count() or 1
    rows = np.random.default_rng(0).random((16, 64)).astype(np.float32)
    results = []
    with EchoProcess() as echo:
        for proto, address in (("grpc", echo.grpc_target), ("rest", echo.rest_url)):
            target = Target(address, "digits", proto)
            results.append(climb(target, rows, rates, args.step_s, 1, f"client, {proto}, fixed-answer server"))
            if cores > 1:
                results.append(climb(target, rows, rates, args.step_s, cores,
                                     f"client, {proto}, fixed-answer server"))
    if not args.skip_modelserver:
        from demo.models import build_demo_assets
        from modelserver.process import start_process

        assets = build_demo_assets(REPO / ".cache")
        with tempfile.TemporaryDirectory() as tmp:
            with start_process(["--model_config_file", str(assets.model_config)], log_dir=tmp) as ms:
                model_rates = [float(r) for r in args.model_rates.split(",")]
                for proto, address in (("grpc", ms.grpc_target), ("rest", ms.rest_url)):
                    target = Target(address, "digits", proto, label="stable")
                    results.append(climb(target, rows, model_rates, args.step_s, 1,
                                         f"stand-in TF Serving (demo SavedModel), {proto}"))

    print("\nHighest rate held (>= 99 % of the timetable sent on time and OK):")
    for r in results:
        cpu = r["cpu_ms_per_1000"]
        text = "n/a" if cpu is None else (f"{cpu:.0f} ms CPU / 1000 req"
                                          f" (one full core: ~{1e6 / cpu:.0f} rps)")
        print(f"  {r['setup']:<48} workers={r['workers']}: {r['held_rps']:>7.0f} rps   {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
