"""Report pages of long runs: server-side time and page weight at 10, 100 and 1000 windows.

    .venv/bin/python -m bench.report_render [--windows 1000] [--reps 15]

A run is made the way the service makes one: the app, a session closing
windows through the gate into a SQLite store, Flagger calling rollout and
confirm-traffic-increase after every window (so the timeline grows too).
Windows are simulated at a real step's size (bench/sim.py: 3000 requests
per version, 300 probe pairs with class scores and 16 input features, CTR
counts), about 85 kB of raw data each. When the run reaches 10, 100 and
1000 windows, GET /reports/<run> is timed through the app (Flask included):

- cold: the report's window cache empty (the first view after a restart);
- warm: the page reloaded (the windows read before come from the cache).

Target (issue 10): a run of 1000 windows renders in under 300 ms server
side, and the page weighs under 1 MB. Exit 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from .sim import Scenario, reference_set, simulate_step

TARGET_MS = 300.0
TARGET_BYTES = 1_000_000
GOLDEN_ROWS = 360


class _SimMeasurement:
    """Simulated windows in place of the load generator and prober (the rest of the service is real)."""

    def __init__(self, sc: Scenario, reference: np.ndarray) -> None:
        self.sc, self.reference = sc, reference
        self.rng = np.random.default_rng(3)
        # a pool of windows: generating each one would dominate the run's build time
        self.pool = [self._make() for _ in range(24)]
        self.i = 0

    def _make(self):
        w = simulate_step(self.rng, self.sc, self.reference).window
        w.stable.intended = w.canary.intended = self.sc.requests
        w.probes.rows = self.rng.integers(0, GOLDEN_ROWS, len(w.probes))
        return w

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def set_rate(self, rate: float) -> None: ...

    def pending_probes(self) -> int:
        return self.sc.probes

    def take_window(self):
        self.i += 1
        return self.pool[self.i % len(self.pool)]

    async def golden_check(self):
        return self.take_window()

    async def check_canary(self):
        return True, "canary is AVAILABLE", None


def _app(d: Path):
    from webhook.app import create_app
    from webhook.config import load_settings

    sc = Scenario()
    rng = np.random.default_rng(0)
    ref = reference_set(rng, sc)
    np.savez(d / "golden.npz", inputs=rng.normal(size=(GOLDEN_ROWS, sc.features)).astype(np.float32),
             labels=rng.integers(0, 10, GOLDEN_ROWS))
    np.savez(d / "reference.npz", inputs=ref)
    target = {"protocol": "tfserving-grpc", "address": "127.0.0.1:1", "model": "digits"}
    cfg = {"server": {"store": str(d / "runs.db"), "interval_s": 3600, "retention_days": None},
           "analyses": {"digits": {"stable": {**target, "label": "stable"}, "canary": {**target, "label": "canary"},
                                   "golden": "golden.npz", "reference": "reference.npz", "interval_s": 3600}}}
    settings = load_settings(cfg, d)
    return create_app(settings, registry=CollectorRegistry(), measurement_factory=lambda a: _SimMeasurement(sc, ref))


def _time(client, app, path: str, reps: int, cold: bool) -> tuple[list[float], list[float], int]:
    from webhook.reporting.model import DigestCache

    wall, cpu, size = [], [], 0
    for _ in range(reps):
        if cold:
            app.extensions["shadowgate.reports"].cache = DigestCache()
        t, c = time.perf_counter(), time.process_time()
        r = client.get(path)
        wall.append(1000 * (time.perf_counter() - t))
        cpu.append(1000 * (time.process_time() - c))
        assert r.status_code == 200, r.status_code
        size = len(r.data)
    return wall, cpu, size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args(argv)
    marks = sorted({m for m in (10, 100, args.windows) if m <= args.windows})
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        app = _app(Path(tmp))
        svc = app.extensions["shadowgate"]
        c = app.test_client()
        body = {"name": "digits", "namespace": "test", "phase": "Progressing", "checksum": "bench1"}
        c.post("/flagger/confirm-rollout", json=body)
        run_id = c.post("/flagger/pre-rollout", json=body).json["run"]
        s = svc.sessions.live(run_id)
        s.golden_done.result(timeout=60)
        built = time.perf_counter()
        for k in range(2, args.windows + 1):
            svc.sessions.call(s.close_window("interval"), 60)
            c.post("/flagger/rollback", json=body)
            c.post("/flagger/rollout", json=body)
            c.post("/flagger/confirm-traffic-increase", json=body)
            if k in marks:
                svc.sessions.flush_events()
                c.get(f"/reports/{run_id}")  # first use: imports, the read-only connection
                cold = _time(c, app, f"/reports/{run_id}", args.reps, cold=True)
                warm = _time(c, app, f"/reports/{run_id}", args.reps, cold=False)
                text = _time(c, app, f"/reports/{run_id}?format=text", 3, cold=True)
                rep = c.get(f"/reports/{run_id}?format=json").json
                rows.append((k, cold, warm, text, rep["windows"], len(rep["timeline"])))
                print(f"  window {k}: cold median {statistics.median(cold[0]):.0f} ms, page {cold[2] / 1e3:.0f} kB",
                      flush=True)
        build_s = time.perf_counter() - built
        db_mb = Path(tmp, "runs.db").stat().st_size / 1e6
        svc.close()

    def p95(xs: list[float]) -> float:
        return sorted(xs)[max(0, round(0.95 * len(xs)) - 1)]

    print(f"\nrun of {args.windows} windows built in {build_s:.0f} s; store {db_mb:.0f} MB; "
          f"{args.reps} requests per cell, server side (Flask test client), wall (CPU) ms\n")
    print("| windows | timeline entries | windows read (decisions / raw) | cold median | cold p95 | "
          "warm median | text form | page |")
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for k, cold, warm, text, w, n_events in rows:
        print(f"| {k} | {n_events:,} | {w['read']} / {w['raw_read']} | {statistics.median(cold[0]):.0f} "
              f"({statistics.median(cold[1]):.0f}) | {p95(cold[0]):.0f} | {statistics.median(warm[0]):.0f} "
              f"({statistics.median(warm[1]):.0f}) | {statistics.median(text[0]):.0f} | {cold[2] / 1e3:.0f} kB |")
        if k == args.windows:
            ok = statistics.median(cold[0]) < TARGET_MS and cold[2] < TARGET_BYTES
    print(f"\ntarget: under {TARGET_MS:.0f} ms (cold median) and {TARGET_BYTES / 1e6:.0f} MB at "
          f"{args.windows} windows: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
