"""Ours beside `hey` (what Flagger's load tester runs) at the same rate, with and without a stall.

Both tools load the stand-in TF Serving's REST predict endpoint (demo
SavedModel) at the same rate, first with a healthy server, then with a
1 s stall every 10 s. For each run the script prints:

- the true p99 the timetable implies: every request scheduled at time t
  during a stall waits until the stall ends, then for the backlog ahead of
  it, which the server works through at its measured drain rate; then it
  takes a healthy latency (the stall-alone figure, without the drain, is
  printed as a lower bound);
- our corrected p99 (from the intended send time) and service p99;
- hey's own p99 and achieved rate, parsed from its summary.

hey is closed-loop: each of its workers waits for an answer before it
sends again, so during a stall it simply stops sending, and the requests
it never sent are missing from its percentiles (coordinated omission).

It also writes one figure (--plot, PNG) for the stall case: our corrected
and service-time percentile curves, the percentiles hey printed, and the
true p99 as a horizontal line.

    python bench/load_vs_hey.py [--rps 100] [--duration 30] [--hey-workers 2]
        [--plot docs/img/load_vs_hey.png]

Needs the Debian package `hey` (/usr/bin/hey).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from loadtest.schedule import Schedule  # noqa: E402
from loadtest.wire import Target, build_payloads, rest_predict_url  # noqa: E402
from loadtest.workers import LoadSpec, run_spec  # noqa: E402

STALL_EVERY_S = 10.0
STALL_FOR_S = 1.0


def true_p99(rate: float, duration_s: float, healthy_s: np.ndarray, stall: bool,
             capacity_rps: float | None = None) -> float:
    """p99 latency (seconds) the timetable implies.

    Request k is due at k / rate. Without `capacity_rps`: a request due
    inside a stall waits for its end, then takes a healthy latency (a lower
    bound). With it, the server is a FIFO queue that works at most
    `capacity_rps` requests/s, so the backlog a stall leaves drains at that
    speed (Lindley's recursion), as a real server's does.
    """
    t = np.arange(int(rate * duration_s)) / rate
    rng = np.random.default_rng(0)
    base = rng.choice(healthy_s, t.size) if healthy_s.size else np.zeros(t.size)
    if not stall:
        return float(np.quantile(base, 0.99))
    # Stalls start when the faults are set, which is when each run starts.
    into = t % STALL_EVERY_S
    wait = np.where(into < STALL_FOR_S, STALL_FOR_S - into, 0.0)
    if capacity_rps is None:
        return float(np.quantile(wait + base, 0.99))
    s = 1.0 / capacity_rps
    free = 0.0
    queued = np.empty(t.size)
    for k, a in enumerate(t):
        start = max(a + wait[k], free)
        free = start + s
        queued[k] = free - a - s  # time spent waiting, beyond the healthy latency
    return float(np.quantile(queued + base, 0.99))


def drain_rate(target: Target, rows: np.ndarray) -> float:
    """Requests/s the server answers when a backlog arrives at once (600 requests in 0.2 s)."""
    spec = LoadSpec(target, tuple(build_payloads(target, rows, "x")), Schedule.constant(3000, 0.2),
                    concurrency=256, timeout_s=10.0)
    t0 = time.perf_counter()
    stats = asyncio.run(run_spec(spec))
    return stats.ok / (time.perf_counter() - t0)


def run_hey(url: str, body: Path, rps: float, duration_s: float, workers: int) -> dict:
    """Run hey at `rps` in total (`workers` x rps/workers each); parse its summary."""
    per_worker = rps / workers
    cmd = ["hey", "-z", f"{int(duration_s)}s", "-c", str(workers), "-q", f"{per_worker:g}",
           "-m", "POST", "-T", "application/json", "-D", str(body), "-t", "10", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60).stdout
    p99 = re.search(r"99%+ in ([\d.]+) secs", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"\[200\]\s+(\d+) responses", out)
    # hey's "Latency distribution" lines: "  10% in 0.0012 secs" (some builds print "%%").
    dist = {float(pct) / 100: float(secs)
            for pct, secs in re.findall(r"^\s*(\d+(?:\.\d+)?)%+ in ([\d.]+) secs", out, re.M)}
    return {"p99_s": float(p99.group(1)) if p99 else float("nan"),
            "rps": float(rate.group(1)) if rate else float("nan"),
            "ok": int(total.group(1)) if total else 0, "percentiles": dist, "raw": out}


def run_ours(target: Target, rows: np.ndarray, rps: float, duration_s: float):
    spec = LoadSpec(target, tuple(build_payloads(target, rows, "x")), Schedule.constant(rps, duration_s),
                    concurrency=256, warmup_s=0.0, timeout_s=10.0)
    return asyncio.run(run_spec(spec))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rps", type=float, default=100.0, help="requests per second, both tools")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per run")
    p.add_argument("--hey-workers", default="2,10",
                   help="hey -c values to try (Flagger's example uses -c 2)")
    p.add_argument("--plot", default=str(REPO / "docs" / "img" / "load_vs_hey.png"),
                   help="PNG comparing the stall case's percentiles ('' for none)")
    args = p.parse_args(argv)
    if shutil.which("hey") is None:
        print("hey is not installed (Debian package `hey`)", file=sys.stderr)
        return 2

    from demo.models import build_demo_assets
    from modelserver.process import start_process

    assets = build_demo_assets(REPO / ".cache")
    data = np.load(assets.golden)
    rows = data["inputs"][:16].astype(np.float32)
    hey_workers = [int(c) for c in args.hey_workers.split(",")]
    lines = []
    stall_stats = None
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.json"
        body.write_bytes(build_payloads(Target("h:1", "digits", "rest"), rows[:1], "x")[0])
        with start_process(["--model_config_file", str(assets.model_config)], log_dir=tmp) as ms:
            target = Target(ms.rest_url, "digits", "rest", label="stable")
            url = rest_predict_url(ms.rest_url, "digits", label="stable")
            healthy = None
            capacity = drain_rate(target, rows)
            print(f"server drains a backlog at {capacity:.0f} requests/s", flush=True)
            for stall in (False, True):
                ms.set_faults({"stall_every_s": STALL_EVERY_S, "stall_for_s": STALL_FOR_S} if stall else {})
                name = f"stall {STALL_FOR_S:g} s every {STALL_EVERY_S:g} s" if stall else "healthy"
                print(f"\n{name}: {args.rps:g} rps for {args.duration:g} s", flush=True)
                ours = run_ours(target, rows, args.rps, args.duration)
                if healthy is None:
                    healthy = ours.latency_sample_s
                bound = true_p99(args.rps, args.duration, healthy, stall)
                truth = true_p99(args.rps, args.duration, healthy, stall, capacity)
                print(f"  true p99 (timetable):       {truth * 1e3:9.1f} ms"
                      f"   (stall alone, no drain: {bound * 1e3:.1f} ms)")
                print(f"  shadowgate corrected p99:   {ours.corrected.quantile(0.99) * 1e3:9.1f} ms"
                      f"   (service p99 {ours.service.quantile(0.99) * 1e3:.1f} ms,"
                      f" achieved {ours.achieved_rps:.1f} rps, late {ours.late}, errors {ours.errors})",
                      flush=True)
                if stall:
                    stall_stats = ours
                row = {"case": name, "true": truth, "ours": ours.corrected.quantile(0.99),
                       "ours_service": ours.service.quantile(0.99), "hey": {}}
                for c in hey_workers:
                    # The stall phase restarts with the faults so both tools meet the same pauses.
                    if stall:
                        ms.set_faults({"stall_every_s": STALL_EVERY_S, "stall_for_s": STALL_FOR_S})
                    h = run_hey(url, body, args.rps, args.duration, c)
                    print(f"  hey -c {c:<3} -q {args.rps / c:<6g} p99:  {h['p99_s'] * 1e3:9.1f} ms"
                          f"   (achieved {h['rps']:.1f} rps, {h['ok']} OK)", flush=True)
                    row["hey"][c] = h
                lines.append(row)
            ms.set_faults({})

    print("\np99 in ms at", f"{args.rps:g} rps (true = what the timetable implies):")
    head = f"  {'case':<26}{'true':>8}{'ours':>8}{'ours svc':>10}" + "".join(f"{'hey -c ' + str(c):>12}"
                                                                        for c in hey_workers)
    print(head)
    for r in lines:
        cells = "".join(f"{r['hey'][c]['p99_s'] * 1e3:>12.1f}" for c in hey_workers)
        print(f"  {r['case']:<26}{r['true'] * 1e3:>8.1f}{r['ours'] * 1e3:>8.1f}{r['ours_service'] * 1e3:>10.1f}{cells}")
    if args.plot and stall_stats is not None:
        plot_stall(Path(args.plot), lines[-1], stall_stats, args.rps, args.duration)
    return 0


def plot_stall(path: Path, row: dict, ours, rps: float, duration_s: float) -> None:
    """One PNG: our curves for the stall case, hey's printed percentiles, the true p99 (seconds in)."""
    from loadtest.plot import plot_latency

    path.parent.mkdir(parents=True, exist_ok=True)
    hey = {f"hey -c {c} (closed loop)": h["percentiles"] for c, h in row["hey"].items()}
    title = (f"{row['case']}, {rps:g} rps for {duration_s:g} s: "
             f"shadowgate (open loop) beside hey (closed loop)")
    plot_latency({"shadowgate": ours}, path, title=title, points=hey,
                 reference={"true p99 (timetable + drain)": row["true"]})
    print(f"\nplot written to {path}")


if __name__ == "__main__":
    sys.exit(main())
