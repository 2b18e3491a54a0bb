"""Webhook answer time with many analyses running at once.

Starts one stand-in TF Serving (the demo model) and the webhook service
(`shadowgate serve`, one process) with N analyses, each measuring
in the background (open-loop load on both versions and shadow probes).
Then N simulated Flagger canaries call their hooks every `--period`
seconds, staggered, exactly as Flagger does (rollback, rollout,
confirm-traffic-increase, confirm-promotion), and the answer time of each
call is measured by the client, from send to full response.

    python bench/webhook_latency.py --analyses 50 --period 10 --duration 90

Prints p50, p99 and max per hook type and overall, in milliseconds.
Target: p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import start_modelserver  # noqa: E402
from tests.webhook.service import start_service  # noqa: E402

HOOKS = ("rollback", "rollout", "confirm-traffic-increase", "confirm-promotion")


def _golden_subset(src: Path, rows: int, dst: Path) -> str:
    """The first `rows` golden rows: pre-rollout probes the whole set, and 50 of them at once
    would measure the stand-in's throughput, not the webhook."""
    with np.load(src) as z:
        np.savez(dst, inputs=z["inputs"][:rows], labels=z["labels"][:rows])
    return str(dst)


def _config(n: int, server, golden: str, interval_s: float, rate: float, probe_rate: float, store: str) -> dict:
    def target(**which):
        return {"protocol": "tfserving-grpc", "address": server.grpc_target, "model": "digits", **which}

    analysis = {
        "stable": target(label="stable"),
        "canary": target(version=1),
        "golden": golden,
        "probe": {"rate": probe_rate, "timeout_s": 2},
        "load": {"rate": rate, "max_rate": max(rate, 1.0), "timeout_s": 2, "concurrency": 8},
        "checks": {"drift": {"inputs": False}},
        "min_window_probes": 10_000,  # hooks read closed windows only: the interval closes them
        "allow_undecidable": True,  # hook answer times are measured here; low rates give no P99
    }
    return {"server": {"store": store, "interval_s": interval_s, "threads": 16},
            "analyses": {f"a{i:02d}": analysis for i in range(n)}}


def _canary(url: str, name: str, period_s: float, offset_s: float, measure_from: float, stop_at: float,
            out: list, errors: list, lock: threading.Lock) -> None:
    s = requests.Session()
    body = {"name": name, "namespace": "bench", "phase": "Progressing", "checksum": "rev1",
            "metadata": {"analysis": name}}
    time.sleep(offset_s)  # canaries start spread over one period, as independent rollouts would
    t = time.monotonic()
    try:
        s.post(f"{url}/flagger/confirm-rollout", json=body, timeout=10)
        s.post(f"{url}/flagger/pre-rollout", json=body, timeout=10)
        while t < stop_at:
            t += period_s
            delay = t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for hook in HOOKS:
                t0 = time.perf_counter()
                r = s.post(f"{url}/flagger/{hook}", json=body, timeout=10)
                dt = time.perf_counter() - t0
                if time.monotonic() >= measure_from:
                    with lock:
                        out.append((hook, r.status_code, dt, r.text if hook == "rollback" else ""))
        body["phase"] = "Succeeded"
        s.post(f"{url}/flagger/post-rollout", json=body, timeout=10)
    except requests.RequestException as exc:
        with lock:
            errors.append(f"{name} {hook if 'hook' in locals() else 'start'}: {exc.__class__.__name__}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--analyses", type=int, default=50)
    ap.add_argument("--period", type=float, default=10.0, help="seconds between a canary's hook rounds")
    ap.add_argument("--duration", type=float, default=90.0, help="seconds of measurement")
    ap.add_argument("--interval", type=float, default=10.0, help="window length of the sessions, seconds")
    ap.add_argument("--rate", type=float, default=1.0, help="load requests/s per version per analysis")
    ap.add_argument("--probe-rate", type=float, default=1.0, help="probe pairs/s per analysis")
    ap.add_argument("--golden-rows", type=int, default=60, help="golden rows probed by each pre-rollout")
    args = ap.parse_args(argv)

    from demo.models import build_demo_assets

    assets = build_demo_assets(REPO / ".cache")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        server = start_modelserver(d, model_config=assets.model_config)
        try:
            golden = _golden_subset(assets.golden, args.golden_rows, d / "golden.npz")
            cfg = _config(args.analyses, server, golden, args.interval, args.rate, args.probe_rate,
                          str(d / "runs.db"))
            (d / "analyses.yaml").write_text(yaml.safe_dump(cfg))
            svc = start_service(d / "analyses.yaml", d)
            try:
                samples: list = []
                lock = threading.Lock()
                errors: list = []
                now = time.monotonic()
                # Skip the first two periods: sessions start, and their first windows close.
                measure_from = now + 2 * args.period + args.interval
                stop_at = measure_from + args.duration
                threads = [threading.Thread(target=_canary, args=(
                    svc.url, f"a{i:02d}", args.period, args.period * i / args.analyses, measure_from, stop_at,
                    samples, errors, lock), daemon=True) for i in range(args.analyses)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                metrics = requests.get(svc.url + "/metrics", timeout=5).text
            finally:
                svc.stop()
        finally:
            server.stop()

    print(f"{args.analyses} analyses, hooks every {args.period:g} s, {args.duration:g} s, "
          f"load {args.rate:g} req/s per version and {args.probe_rate:g} probe pairs/s per analysis")
    print(f"{'hook':<26}{'calls':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  statuses")
    rows = [(h, [s for s in samples if s[0] == h]) for h in HOOKS] + [("all", samples)]
    for name, rs in rows:
        if not rs:
            continue
        ms = np.array([r[2] for r in rs]) * 1000
        codes = sorted({r[1] for r in rs})
        print(f"{name:<26}{len(rs):>7}{np.percentile(ms, 50):>9.1f}{np.percentile(ms, 99):>9.1f}{ms.max():>9.1f}"
              f"  {codes}")
    rollbacks = [r for r in samples if r[0] == "rollback" and r[1] == 200]
    if rollbacks:
        print(f"rollback answered 200 {len(rollbacks)} times, e.g.: {rollbacks[0][3][:300]}")
    if errors:
        print(f"client errors (no answer within 10 s): {len(errors)}: {', '.join(errors[:5])}")
    windows = sum(float(line.split()[-1]) for line in metrics.splitlines()
                  if line.startswith("shadowgate_windows_total"))
    print(f"windows closed and judged during the run: {windows:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
