"""Identical models on two separate stand-in processes, driven as Flagger drives the hooks.

    .venv/bin/python -m bench.aa_rollouts                  # 20 rollouts (about 5 minutes)
    .venv/bin/python -m bench.aa_rollouts --rollouts 5 --rate 150

Stable and canary serve the same SavedModel version from two `shadowgate
modelserver` processes; the service loads both at `--rate` requests/s each
(3 s windows, 40 probe pairs/s) with the golden check at pre-rollout, and
each rollout is driven in Flagger's order (confirm-rollout, pre-rollout,
then rollback / rollout / confirm-traffic-increase every interval,
confirm-promotion, post-rollout) with threshold 2. Any rollback is a false
fail of the gate: the count must be 0. Prints one line per rollout and the
windows each took to promotion.

Latency is judged on P90 by default (`--quantile 0.99` for P99): on two
shared cores the P99 ratio of identical versions over 660 requests swings
from 0.5x to 6x from one 3 s window to the next (host stalls), and a gate
that does not assume the windows' spread cannot tell 1x from 2x on that in
30 windows: it stays undecided (never rolled back, not promoted either).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers import start_modelserver  # noqa: E402
from tests.webhook.drivers import FlaggerDriver  # noqa: E402
from tests.webhook.service import start_service  # noqa: E402

INTERVAL_S = 3.0


def config(stable_server, canary_server, golden: str, store: str, rate: float, quantile: float = 0.9) -> dict:
    def target(server):
        return {"protocol": "tfserving-grpc", "address": server.grpc_target, "model": "digits", "version": 1,
                "timeout_s": 2}

    return {
        "server": {"store": store, "interval_s": INTERVAL_S, "threads": 8, "idle_timeout_s": 30},
        "analyses": {"aa": {
            "stable": target(stable_server), "canary": target(canary_server), "golden": golden,
            "probe": {"rate": 40, "timeout_s": 2},
            "load": {"rate": rate, "max_rate": rate, "timeout_s": 2, "concurrency": 64},
            "checks": {"drift": {"inputs": False},
                       "latency": {"quantile": quantile, "min_samples": 200 if quantile <= 0.9 else 600}},
        }},
    }


def run(rollouts: int, rate: float, work: Path, progress=print, quantile: float = 0.9) -> dict:
    """Drive `rollouts` Flagger rollouts of identical versions; returns counts and the runs' figures."""
    from demo.models import build_demo_assets

    assets = build_demo_assets(Path(__file__).resolve().parents[1] / ".cache")
    a = start_modelserver(work / "a", model_config=assets.model_config, name="stable-server")
    b = start_modelserver(work / "b", model_config=assets.model_config, name="canary-server")
    path = work / "analyses.yaml"
    path.write_text(yaml.safe_dump(config(a, b, str(assets.golden), str(work / "runs.db"), rate, quantile)))
    svc = start_service(path, work)
    out = {"promoted": 0, "rolled_back": 0, "timeout": 0, "rollback_reasons": [], "windows": []}
    try:
        for i in range(rollouts):
            t0 = time.monotonic()
            d = FlaggerDriver(svc.url, "aa", checksum=f"aa{i}", interval_s=INTERVAL_S, threshold=2,
                              max_weight=50, step_weight=25)
            try:
                res = d.run(max_ticks=30)
            except requests.RequestException as exc:  # a hook past the caller's 10 s: Flagger's check fails
                out["no_answer"] = out.get("no_answer", 0) + 1
                progress(f"rollout {i + 1}/{rollouts}: a hook did not answer within 10 s ({exc.__class__.__name__})")
                continue
            out[res.outcome] += 1
            run_id = None
            for hook, status, text in res.calls:
                if '"run"' in text:
                    run_id = requests.models.complexjson.loads(text).get("run")
                    break
            windows = None
            if run_id:
                windows = len(requests.get(f"{svc.url}/api/v1/runs/{run_id}", timeout=5).json()["windows"])
                out["windows"].append(windows)
            if res.outcome != "promoted":
                out["rollback_reasons"].append([c for c in res.calls if c[1] > 202][-3:])
            progress(f"rollout {i + 1}/{rollouts}: {res.outcome} after {res.ticks} ticks, {windows} windows, "
                     f"{time.monotonic() - t0:.0f} s")
    finally:
        svc.stop()
        a.stop()
        b.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rollouts", type=int, default=20)
    ap.add_argument("--rate", type=float, default=220.0, help="load per version, requests/s")
    ap.add_argument("--quantile", type=float, default=0.9, help="the latency check's quantile (0.99: P99)")
    args = ap.parse_args(argv)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: no server left behind
    with tempfile.TemporaryDirectory() as d:
        out = run(args.rollouts, args.rate, Path(d), quantile=args.quantile)
    print(f"\n{args.rollouts} rollouts of identical models on two processes at {args.rate:g} req/s per version, "
          f"P{100 * args.quantile:g}: "
          f"{out['promoted']} promoted, {out['rolled_back']} rolled back, {out['timeout']} undecided, "
          f"{out.get('no_answer', 0)} with a hook unanswered in 10 s; "
          f"windows per run (golden included) median {sorted(out['windows'])[len(out['windows']) // 2] if out['windows'] else '-'}")
    for r in out["rollback_reasons"]:
        print("  not promoted:", r)
    return 0 if out["rolled_back"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
