"""Identical canaries under Shadowgate's own overload: is anything of Shadowgate's blamed on them?

    .venv/bin/python -m bench.blame_many --analyses 150 200 [--duration 120]

One stand-in TF Serving (the demo model) and the webhook service (one
process) with N analyses whose canary is the very model stable serves
(version 1 = label stable), each at `--rate` req/s of load per version and
`--probe-rate` probe pairs/s: more live runs than the stand-in can serve
once N is large (the issue's 150 and 200 at 1 req/s, max_sessions raised,
max_target_rate left at its default). N Flagger-like canaries call their
hooks every `--period` seconds (confirm-rollout until admitted, pre-rollout,
then rollout and confirm-traffic-increase), as Flagger does.

Every canary is identical to its stable, so every failed check is a false
blame. Prints, per N: canaries with a failed check (pre-rollout or rollout
not 2xx, with the reasons), runs whose gate failed, and the windows: judged
(health ok or golden), said to be Shadowgate's overload (health overloaded,
or any window whose `unmeasured` says why), and neither. Goal: 0 canaries
failed; every window judged or said to be Shadowgate's overload.
"""

from __future__ import annotations

import argparse
import collections
import json
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


def _golden_subset(src: Path, rows: int, dst: Path) -> str:
    with np.load(src) as z:
        np.savez(dst, inputs=z["inputs"][:rows], labels=z["labels"][:rows])
    return str(dst)


def _config(n: int, server, golden: str, interval_s: float, rate: float, probe_rate: float, store: str) -> dict:
    def target(**which):
        return {"protocol": "tfserving-grpc", "address": server.grpc_target, "model": "digits", "timeout_s": 2,
                **which}

    analysis = {
        "stable": target(label="stable"),
        "canary": target(version=1),  # the model stable serves: an identical canary
        "golden": golden,
        "probe": {"rate": probe_rate, "timeout_s": 2},
        "load": {"rate": rate, "max_rate": max(rate, 1.0), "timeout_s": 2, "concurrency": 8},
        "checks": {"drift": {"inputs": False}},
        "interval_s": interval_s,
        "allow_undecidable": True,  # 1 req/s gives no P99 per window: latency cannot decide
    }
    return {"server": {"store": store, "interval_s": interval_s, "threads": 32,
                       "max_sessions": n + 10, "max_sessions_per_analysis": 10},
            "analyses": {f"a{i:03d}": analysis for i in range(n)}}


def _canary(url: str, name: str, period_s: float, offset_s: float, stop_at: float, out: dict) -> None:
    s = requests.Session()
    body = {"name": name, "namespace": "bench", "phase": "Progressing", "checksum": "rev1",
            "metadata": {"analysis": name}}
    rec = out[name] = {"failed": [], "admitted": False, "errors": []}

    def post(hook: str):
        try:
            return s.post(f"{url}/flagger/{hook}", json=body, timeout=15)
        except requests.RequestException as exc:
            rec["errors"].append(f"{hook}: {exc.__class__.__name__}")
            return None

    time.sleep(offset_s)
    t = time.monotonic()
    while time.monotonic() < stop_at:  # confirm-rollout until admitted (412: waits, not a failed check)
        r = post("confirm-rollout")
        if r is not None and r.status_code == 200:
            rec["admitted"] = True
            break
        time.sleep(period_s)
    hooks = ["pre-rollout"]
    while time.monotonic() < stop_at:
        t += period_s
        delay = t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for hook in hooks:
            r = post(hook)
            if r is None:
                continue
            if hook in ("pre-rollout", "rollout") and r.status_code > 202:
                try:
                    reason = json.loads(r.text).get("reason", r.text)
                except ValueError:
                    reason = r.text
                rec["failed"].append(f"{hook} {r.status_code}: {str(reason)[:300]}")
        hooks = ["rollout", "confirm-traffic-increase"]


def _windows(store_path: str) -> tuple[collections.Counter, collections.Counter, list[str], dict[str, str]]:
    from webhook.codec import decode_window
    from webhook.store import SQLiteStore

    store = SQLiteStore(store_path)
    kinds: collections.Counter = collections.Counter()
    why: collections.Counter = collections.Counter()
    examples: list[str] = []
    outcomes: dict[str, str] = {}
    try:
        for run in store.list_runs(limit=100_000):
            outcomes[run.analysis] = (run.verdict or {}).get("outcome", "none")
            for sw in store.windows(run.id, with_data=True):
                health = ((sw.verdict or {}).get("window") or {}).get("health", "?")
                unmeasured = decode_window(sw.data).unmeasured if sw.data else None
                if health in ("ok", "golden") and not unmeasured:
                    kinds["judged"] += 1
                elif health == "overloaded" or unmeasured:
                    kinds["Shadowgate's overload"] += 1
                    why[(unmeasured or "stable's sends late").split(":")[0][:70]] += 1
                else:
                    kinds[f"neither ({health})"] += 1
                    if len(examples) < 3:
                        examples.append(f"{run.analysis} window {sw.seq}: {health}")
    finally:
        store.close()
    return kinds, why, examples, outcomes


def bench(n: int, args, assets, d: Path) -> dict:
    server = start_modelserver(d, model_config=assets.model_config, name=f"modelserver-{n}")
    try:
        golden = _golden_subset(assets.golden, args.golden_rows, d / "golden.npz")
        store = str(d / f"runs-{n}.db")
        cfg = _config(n, server, golden, args.interval, args.rate, args.probe_rate, store)
        (d / f"analyses-{n}.yaml").write_text(yaml.safe_dump(cfg))
        svc = start_service(d / f"analyses-{n}.yaml", d, name=f"service-{n}")
        try:
            out: dict = {}
            stop_at = time.monotonic() + args.duration
            threads = [threading.Thread(target=_canary, args=(svc.url, f"a{i:03d}", args.period,
                                                              args.period * i / n, stop_at, out), daemon=True)
                       for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            svc.stop()
    finally:
        server.stop()
    kinds, why, examples, outcomes = _windows(store)
    failed = {k: v["failed"] for k, v in out.items() if v["failed"]}
    return {"n": n, "admitted": sum(v["admitted"] for v in out.values()), "failed": failed,
            "rolled_back": sum(1 for v in failed.values() if len(v) >= 2),
            "gate_failed": sorted(k for k, o in outcomes.items() if o == "fail"),
            "windows": kinds, "why": why, "examples": examples,
            "client_errors": sum(len(v["errors"]) for v in out.values())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--analyses", type=int, nargs="+", default=[150, 200])
    ap.add_argument("--duration", type=float, default=120.0, help="seconds the canaries call their hooks")
    ap.add_argument("--period", type=float, default=10.0, help="seconds between a canary's hook rounds")
    ap.add_argument("--interval", type=float, default=10.0, help="window length of the sessions, seconds")
    ap.add_argument("--rate", type=float, default=1.0, help="load requests/s per version per analysis")
    ap.add_argument("--probe-rate", type=float, default=1.0, help="probe pairs/s per analysis")
    ap.add_argument("--golden-rows", type=int, default=60, help="golden rows probed by each pre-rollout")
    args = ap.parse_args(argv)

    from demo.models import build_demo_assets

    assets = build_demo_assets(REPO / ".cache")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.analyses:
            results.append(bench(n, args, assets, Path(tmp)))
    bad = False
    for r in results:
        w = r["windows"]
        total = sum(w.values())
        print(f"{r['n']} analyses ({r['admitted']} admitted), {args.rate:g} req/s per version and "
              f"{args.probe_rate:g} probe pairs/s each, {args.duration:g} s:")
        print(f"  identical canaries with a failed check: {len(r['failed'])} (rolled back: {r['rolled_back']}); "
              f"gate outcome fail: {len(r['gate_failed'])}")
        for name, reasons in list(r["failed"].items())[:5]:
            print(f"    {name}: {reasons[0]}")
        print(f"  windows: {total}; " + ", ".join(f"{k} {v} ({100 * v / max(total, 1):.1f} %)"
                                                  for k, v in sorted(w.items())))
        for k, v in r["why"].most_common(4):
            print(f"    overload said as: {k!r}: {v}")
        for e in r["examples"]:
            print(f"    e.g. {e}")
        if r["client_errors"]:
            print(f"  hook calls without an answer within 15 s: {r['client_errors']}")
        bad |= bool(r["failed"] or r["gate_failed"] or any(k.startswith("neither") for k in w))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
